"""Suggestion services: Katib-compatible search algorithms behind the Suggestion gRPC API.

Algorithms (base.BaseAlgorithm subclasses, listed in registry.ALGORITHMS) work on
plain data; server.py is the only module that speaks gRPC.
"""

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    ObjectiveType,
    Suggestion,
    SuggestResult,
    TrialCondition,
    TrialRecord,
)
from .registry import ALGORITHMS, get_algorithm
from .search_space import Distribution, ParameterSpec, ParameterType, SearchSpace

__all__ = [
    "ALGORITHMS",
    "BaseAlgorithm",
    "Distribution",
    "ExperimentInfo",
    "ObjectiveType",
    "ParameterSpec",
    "ParameterType",
    "SearchSpace",
    "SuggestResult",
    "Suggestion",
    "TrialCondition",
    "TrialRecord",
    "get_algorithm",
]
