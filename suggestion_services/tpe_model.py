"""TPE's model phase: optuna's split and Parzen estimators driven from the history.

Kept apart from suggestion_services.tpe so that a service answers settings checks
and the first n_startup_trials (random) suggestions without importing it (about
20 ms; it needs numpy only, not optuna or scipy, whose imports took a quarter of a
second): tpe imports this module on the first model-based suggestion, or earlier
from `TPE.warm_up`, which the service starts in the background once it listens.
Everything here runs with the experiment's `History.lock` held; see `TPE` for the
behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from katib.errors import SearchSpaceExhaustedError

from .base import ExperimentInfo, ObjectiveType, TrialRecord
from .experiment_cache import ExperimentCache, experiment_key
from .history import make_rng
from .model_space import Dim, ModelSpace
from .observations import History, Snapshot, UsedKeys
from .parzen import Parzen
from .parzen_types import ParzenParameters, default_weights
from .search_space import Key

if TYPE_CHECKING:
    from .tpe import TPEConfig

#: Rounds of fresh candidates tried before a point already taken falls back to random.
_PICK_ROUNDS = 4

_Fits = list[tuple[Parzen, list[int]]]


class _BelowFits:
    """The last "good" densities fitted for one experiment, by the rows they fit.

    Once the good trials are the best 25 (optuna's cap), a new trial rarely joins
    them, so consecutive calls mostly fit the same rows: reusing that fit (and the
    constants its sampling and densities compute lazily) gives the same numbers.
    """

    def __init__(self) -> None:
        self._rows: bytes | None = None
        self._fits: _Fits = []

    def get(self, rows: np.ndarray, fit: Callable[[np.ndarray], _Fits]) -> _Fits:
        """fit(rows), or the previous result when the rows are the previous rows."""
        key = rows.shape[0].to_bytes(4, "little") + rows.tobytes()
        if key != self._rows:
            self._fits = fit(rows)
            self._rows = key
        return self._fits


@dataclass
class State:
    """What TPE keeps per experiment (under `history.lock`): the parsed history and
    the last good-trial fit; both are accelerators checked against each request."""

    history: History
    below: _BelowFits = field(default_factory=_BelowFits)


def model_keys(
    cache: ExperimentCache[State],
    name: str,
    experiment: ExperimentInfo,
    trials: Sequence[TrialRecord],
    n: int,
    config: TPEConfig,
    multivariate: bool,
) -> list[Key]:
    """`TPE.suggest`'s keys once the history may hold n_startup_trials observed trials
    (it re-checks that on the parsed history, and samples at random below it)."""
    state = _state(cache, experiment)
    history = state.history
    with history.lock:
        snapshot = history.update(trials)
        space = experiment.search_space
        size = space.size
        if size is not None and snapshot.covered >= size:
            raise SearchSpaceExhaustedError(
                f"{name} search space exhausted: all {size} points have been suggested"
            )
        rng = make_rng(experiment, trials, config.random_state)
        if len(snapshot.losses) < config.n_startup_trials or history.model.width == 0:
            return space.sample_unique(rng, n, snapshot.used)
        sampler = _Sampler(history.model, snapshot, config, multivariate, state.below)
        return sampler.run(rng, n)


def _state(cache: ExperimentCache[State], experiment: ExperimentInfo) -> State:
    key = experiment_key(experiment)
    state = cache.get(key)
    if state is None:
        maximize = experiment.objective_type is ObjectiveType.MAXIMIZE
        state = State(History(ModelSpace(experiment.search_space), maximize))
        cache.put(key, state)
    return state
class _Sampler:
    """One call's model phase: split, fit the densities, pick n points one by one."""

    def __init__(
        self,
        model: ModelSpace,
        snapshot: Snapshot,
        config: TPEConfig,
        multivariate: bool,
        below: _BelowFits | None = None,
    ) -> None:
        """`below`: the experiment's memo of good-trial fits (fresh when None)."""
        self.model = model
        self.config = config
        self.used: UsedKeys = snapshot.used
        self.parameters = ParzenParameters(
            prior_weight=config.prior_weight,
            consider_magic_clip=True,
            consider_endpoints=False,
            weights=default_weights,
            multivariate=True,
        )
        losses = snapshot.losses
        n_below = config.n_below(len(losses))
        # The best n_below trials (ties: the earlier trial first), in trial order.
        good = np.zeros(len(losses), dtype=bool)
        good[np.argsort(losses, kind="stable")[:n_below]] = True
        self.groups: list[tuple[Dim, ...]] = (
            [model.dims] if multivariate else [(d,) for d in model.dims]
        )
        self.below = (below or _BelowFits()).get(snapshot.coords[good], self._fit)
        self.above = [snapshot.coords[~good], snapshot.pending]

    def _fit(self, rows: np.ndarray) -> _Fits:
        """A density per group, as (estimator, positions of the group's dims in it).

        Rows with NaN in a group's dims are left out of that group's fit, as optuna
        leaves out trials without the parameter. Without NaN, one joint fit gives every
        group (its marginals equal separate 1-D fits), which saves time.
        """
        missing = np.isnan(rows)
        if len(self.groups) == 1 or not missing.any():
            joint = Parzen(self.model.dims, rows[~missing.any(axis=1)], self.parameters)
            return [(joint, [d.column for d in g]) for g in self.groups]
        fits = []
        for group in self.groups:
            columns = [d.column for d in group]
            sub = rows[:, columns]
            fits.append((Parzen(group, sub[~np.isnan(sub).any(axis=1)], self.parameters),
                         list(range(len(group)))))
        return fits

    def run(self, rng: np.random.Generator, n: int) -> list[Key]:
        chosen: list[Key] = []
        for _ in range(n):
            key = self._pick(rng, self._fit(np.concatenate(self.above)))
            if key is None:
                free = self.model.space.sample_unique(rng, 1, self.used)
                if not free:
                    break
                key = free[0]
            chosen.append(key)
            self.used.batch.add(key)
            self.above.append(self.model.coords_of_key(key)[None, :])
        return chosen

    def _pick(self, rng: np.random.Generator, above: _Fits) -> Key | None:
        """The best candidate whose point is free, or None after a few rounds."""
        m = self.config.n_ei_candidates
        joint = len(self.groups) == 1
        for _ in range(_PICK_ROUNDS):
            point = np.empty(self.model.width)
            for group, (below, b_cols), (above_fit, a_cols) in zip(
                self.groups, self.below, above, strict=True
            ):
                candidates = self.model.snap(group, below.sample(rng, m, b_cols))
                score = below.log_pdf(candidates, b_cols) - above_fit.log_pdf(candidates, a_cols)
                if joint:  # whole points: the best free one
                    for row in candidates[np.argsort(-score, kind="stable")]:
                        key = self.model.key(row)
                        if key not in self.used:
                            return key
                    break
                point[[d.column for d in group]] = candidates[_best(score)]
            else:
                key = self.model.key(point)
                if key not in self.used:
                    return key
        return None


def _best(score: np.ndarray) -> int:
    """The first highest score: argsort(-score, kind="stable")[0], NaN ranking last."""
    best = int(np.argmax(score))
    if math.isnan(score[best]):  # argmax stops at the first NaN
        return int(np.argsort(-score, kind="stable")[0])
    return best
