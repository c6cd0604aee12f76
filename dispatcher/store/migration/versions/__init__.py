"""Migration scripts, one per schema change, named ``NNNN_slug.py`` with revision id ``NNNN``.

A package so the scripts ship with the installed dispatcher; Alembic skips this file.
"""
