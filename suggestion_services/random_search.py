"""Random search: independent draws per parameter, honouring each distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from katib.errors import SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    SettingParser,
    Suggestion,
    TrialRecord,
    non_negative_int,
)
from .experiment_cache import ExperimentCache
from .history import UsedKeyLog, make_rng, used_points

# Used keys per experiment (finite spaces only), brought up to date with each request.
_USED: ExperimentCache[UsedKeyLog] = ExperimentCache(max_entries=32)


class RandomSearch(BaseAlgorithm):
    """Katib's `random`; only setting: random_state (int >= 0)."""

    name: ClassVar[str] = "random"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "random_state": non_negative_int("random_state"),
    }

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """n random points, avoiding the history when the space is finite."""
        settings = self.parse_settings(experiment)
        random_state = settings.get("random_state")
        space = experiment.search_space
        rng = make_rng(experiment, trials, random_state if isinstance(random_state, int) else None)
        size = space.size
        if size is None:
            # Only a finite space can collide with the history; a continuous one is
            # not read at all, which keeps long histories cheap.
            keys = space.sample_unique(rng, n)
        else:
            with used_points(_USED, experiment, trials) as used:
                if used.covered >= size:
                    raise SearchSpaceExhaustedError(
                        f"random search space exhausted: all {size} points have been suggested"
                    )
                keys = space.sample_unique(rng, n, used.keys)
        return [Suggestion(space.format(k)) for k in keys]
