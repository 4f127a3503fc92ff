"""Storage of experiments, trials and observation logs (contract in katib.storage.base).

`open_storage(url)` is the one way in: it resolves the URL (None → $KATIB_DB → a
SQLite file under $KATIB_DATA_DIR or ~/.katib) and migrates the schema.
"""

from __future__ import annotations

from pathlib import Path

from katib.storage.base import BaseStorage, MetricLogEntry, Ownership
from katib.storage.engine import create_engine_for, default_data_dir, resolve_url
from katib.storage.sql import SQLStorage


def open_storage(url: str | None = None, data_dir: Path | None = None) -> SQLStorage:
    """A ready storage for `url` (see resolve_url), schema at the newest revision."""
    return SQLStorage(url, data_dir=data_dir)


__all__ = [
    "BaseStorage",
    "MetricLogEntry",
    "Ownership",
    "SQLStorage",
    "create_engine_for",
    "default_data_dir",
    "open_storage",
    "resolve_url",
]
