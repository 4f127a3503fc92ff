"""Grid search: the cartesian product of all parameter values, in parameter order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    SettingParser,
    Suggestion,
    TrialRecord,
    non_negative_int,
)
from .experiment_cache import ExperimentCache
from .history import UsedKeyLog, used_points
from .search_space import NumericParameter, SearchSpace

# Used keys per experiment, brought up to date with each request's history.
_USED: ExperimentCache[UsedKeyLog] = ExperimentCache(max_entries=32)


class GridSearch(BaseAlgorithm):
    """Katib's `grid`: walks the grid lazily, skipping points any trial already has."""

    name: ClassVar[str] = "grid"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        # Accepted for compatibility and validated; the grid order does not use it.
        "random_state": non_negative_int("random_state"),
    }
    requires_finite_space: ClassVar[bool] = True

    def validate_settings(self, experiment: ExperimentInfo) -> None:
        """Settings and steps on doubles.

        Unlike Katib, a maxTrialCount larger than the grid is accepted: the grid runs
        out and the experiment ends with reason ExperimentSuggestionEndReached.
        """
        self.parse_settings(experiment)
        _grid_size(experiment.search_space)

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """The next n unused grid points; fewer only when fewer remain."""
        self.parse_settings(experiment)
        space = experiment.search_space
        size = _grid_size(space)
        chosen = []
        if n > 0:
            with used_points(_USED, experiment, trials) as used:
                keys = used.keys
                for key in space.iter_grid():
                    if key not in keys:
                        chosen.append(key)
                        if len(chosen) == n:
                            break
        if not chosen and n > 0:
            raise SearchSpaceExhaustedError(
                f"grid search space exhausted: all {size} points have been suggested"
            )
        return [Suggestion(space.format(k)) for k in chosen]


def _grid_size(space: SearchSpace) -> int:
    """Grid size; a double without step has no grid (Katib's message)."""
    for p in space.parameters:
        if isinstance(p, NumericParameter) and p.size is None:
            raise InvalidArgumentError(
                f"Param {p.name} step is nil; For discrete search space, all parameters "
                "must include step"
            )
    size = space.size
    assert size is not None
    return size
