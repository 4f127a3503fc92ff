"""The one table of algorithm names; add new algorithms here (tests pick them up).

Entries are "module:Class" strings imported on first use, so a service that
runs `random` never pays for importing optuna or scikit-optimize.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from katib.errors import InvalidArgumentError

from .base import BaseAlgorithm

#: algorithmName (as in Experiment YAML) → implementing class.
_TABLE: dict[str, str] = {
    "random": "suggestion_services.random_search:RandomSearch",
    "grid": "suggestion_services.grid:GridSearch",
    "tpe": "suggestion_services.tpe:TPE",
    "multivariate-tpe": "suggestion_services.tpe:MultivariateTPE",
    "bayesianoptimization": "suggestion_services.bayesian:BayesianOptimization",
    "cmaes": "suggestion_services.cmaes_search:CMAES",
    "sobol": "suggestion_services.sobol:Sobol",
    "hyperband": "suggestion_services.hyperband:Hyperband",
}


class _LazyTable(Mapping[str, type[BaseAlgorithm]]):
    """name → class, importing each implementation module on first lookup."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)
        self._loaded: dict[str, type[BaseAlgorithm]] = {}

    def __getitem__(self, name: str) -> type[BaseAlgorithm]:
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


ALGORITHMS: Mapping[str, type[BaseAlgorithm]] = _LazyTable(_TABLE)


def get_algorithm(name: str) -> type[BaseAlgorithm]:
    """The class registered under `name` (Katib's message when there is none)."""
    if name not in _TABLE:
        raise InvalidArgumentError(f"unknown algorithm name {name}")
    return ALGORITHMS[name]
