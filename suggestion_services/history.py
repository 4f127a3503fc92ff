"""Helpers that read the trial history once per call: used points, seeded generators."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from .base import ExperimentInfo, TrialRecord
from .search_space import Key, SearchSpace


def used_keys(space: SearchSpace, trials: Sequence[TrialRecord]) -> tuple[set[Key], int]:
    """Keys of every trial of the history (any condition), and how many are space points.

    Foreign values become OFF_SPACE entries, so such keys never collide with a
    point the space produces and are not counted.
    """
    return space.used_keys(t.assignments for t in trials)


def make_rng(
    experiment: ExperimentInfo, trials: Sequence[TrialRecord], random_state: int | None
) -> np.random.Generator:
    """A generator that depends only on (random_state, history length).

    Without random_state the experiment name stands in, so a retried request (same
    history) gets the same answer and distinct experiments get distinct streams.
    """
    seed = random_state if random_state is not None else zlib.crc32(experiment.name.encode())
    return np.random.default_rng([seed, len(trials), 0 if random_state is not None else 1])
