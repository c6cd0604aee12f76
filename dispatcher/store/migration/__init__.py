"""Alembic migration environment, shipped inside the package so an installed dispatcher can
migrate its own database: ``dispatcher.store.schema`` builds the Alembic config in code."""
