"""The one table of algorithm names; add new algorithms here (tests pick them up)."""

from __future__ import annotations

from katib.errors import InvalidArgumentError

from .base import BaseAlgorithm
from .grid import GridSearch
from .random_search import RandomSearch

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "random": RandomSearch,
    "grid": GridSearch,
}


def get_algorithm(name: str) -> type[BaseAlgorithm]:
    """The class registered under `name` (Katib's message when there is none)."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise InvalidArgumentError(f"unknown algorithm name {name}") from None
