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
from .history import make_rng, used_keys
from .search_space import Key


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
        used: set[Key] = set()
        if size is not None:
            # Only a finite space can collide with the history; a continuous one is
            # not read at all, which keeps long histories cheap.
            used, covered = used_keys(space, trials)
            if covered >= size:
                raise SearchSpaceExhaustedError(
                    f"random search space exhausted: all {size} points have been suggested"
                )
        keys = space.sample_unique(rng, n, used)
        return [Suggestion(space.format(k)) for k in keys]
