"""Alembic migrations for the storage schema, run in code by katib.storage.migration.migrate."""
