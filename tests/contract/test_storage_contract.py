"""SQLStorage against the storage contract, on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from katib.testing.storage import StorageContract


class TestSQLStorageContract(StorageContract):
    """Every contract test, once per backend (the `storage` fixture is parametrised)."""
