"""The name → class tables behind algorithm names, importing each class on first use.

A service that runs `random` then never pays for importing optuna or scikit-optimize.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyTable(Mapping[str, type[T]], Generic[T]):
    """name → class from a table of "module:Class" strings, imported on first lookup."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)
        self._loaded: dict[str, type[T]] = {}

    def __getitem__(self, name: str) -> type[T]:
        cls = self._loaded.get(name)
        if cls is None:
            module_name, _, attr = self._table[name].partition(":")
            cls = getattr(importlib.import_module(module_name), attr)
            self._loaded[name] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
