"""Persistence: the SQL tables and the store that reads and writes them."""
