"""The one table of algorithm names; add new algorithms here (tests pick them up).

Entries are "module:Class" strings imported on first use, so a service that
runs `random` never pays for importing optuna or scikit-optimize.
"""

from __future__ import annotations

from collections.abc import Mapping

from katib.errors import InvalidArgumentError

from .base import BaseAlgorithm
from .lazy_table import LazyTable

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


ALGORITHMS: Mapping[str, type[BaseAlgorithm]] = LazyTable[BaseAlgorithm](_TABLE)


def get_algorithm(name: str) -> type[BaseAlgorithm]:
    """The class registered under `name` (Katib's message when there is none)."""
    if name not in _TABLE:
        raise InvalidArgumentError(f"unknown algorithm name {name}")
    return ALGORITHMS[name]
