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

import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from katib.errors import SearchSpaceExhaustedError

from . import after_reply
from .base import ExperimentInfo, ObjectiveType, TrialRecord
from .experiment_cache import ExperimentCache, experiment_key
from .history import make_rng, rng_for_count
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


@dataclass(frozen=True)
class _Guess:
    """The answer computed ahead for the request expected next, with every input it
    was computed from: it is the answer only to a request whose inputs are equal.

    That request is the history the guess was made on plus one trial, observed, at
    the suggested point (`key`), and with a loss that keeps it out of the good trials.
    """

    count: int  # trials in the request, which asks for one point
    config: TPEConfig
    coords: bytes  # the observed trials' coordinates, the new trial's last
    losses: bytes  # the losses of the observed trials before the new one
    threshold: float  # the new trial is not among the good ones at this loss or above
    # The used keys: the history's at `revision`, then `key` added.
    revision: int
    key: Key
    shadowed: frozenset[Key]
    keys: list[Key]

    def answers(
        self, count: int, n: int, config: TPEConfig, history: History, snapshot: Snapshot
    ) -> bool:
        losses = snapshot.losses
        return (
            count == self.count
            and n == 1
            and config == self.config
            and history.revision == self.revision + 1
            and history.last_key == self.key
            and snapshot.used.shadowed == self.shadowed
            and snapshot.pending.shape[0] == 0
            and len(losses) > 0
            and bool(losses[-1] >= self.threshold)
            and losses[:-1].tobytes() == self.losses
            and snapshot.coords.tobytes() == self.coords
        )


@dataclass
class State:
    """What TPE keeps per experiment (under `history.lock`): the parsed history, the
    last good-trial fit and the guessed next answer; all are accelerators checked
    against each request."""

    history: History
    below: _BelowFits = field(default_factory=_BelowFits)
    guess: _Guess | None = None
    calls: int = 0  # model-phase requests answered, so a stale guess is not started


#: Computes guesses (see `_start_guess`) off the request's thread, one at a time.
_GUESSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tpe-guess")


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
        if len(snapshot.losses) < config.n_startup_trials or history.model.width == 0:
            rng = make_rng(experiment, trials, config.random_state)
            return space.sample_unique(rng, n, snapshot.used)
        guess, state.guess = state.guess, None
        state.calls += 1
        if guess is not None and guess.answers(len(trials), n, config, history, snapshot):
            keys = guess.keys
            snapshot.used.batch.update(keys)
        else:
            rng = make_rng(experiment, trials, config.random_state)
            sampler = _Sampler(history.model, snapshot, config, multivariate, state.below)
            keys = sampler.run(rng, n)
        if n == 1 and len(keys) == 1 and snapshot.pending.shape[0] == 0:
            _start_guess(state, experiment, len(trials), snapshot, keys[0], config, multivariate)
        return keys


def _start_guess(
    state: State,
    experiment: ExperimentInfo,
    count: int,
    snapshot: Snapshot,
    key: Key,
    config: TPEConfig,
    multivariate: bool,
) -> None:
    """Compute, on another thread, the answer to the request a sequential experiment
    sends next: this history plus `key`, observed and not among the good trials.

    A sequential controller asks again once the suggested trial has ended, and the
    service is idle meanwhile; most new trials do not join the best 25, so the next
    request then finds its answer ready (`_Guess.answers` checks every input). It
    starts once the reply has gone out (`after_reply`) and runs under `history.lock`:
    a request that arrives before it ends waits for it, one that arrives before it
    starts makes it moot.
    """
    calls = state.calls

    def guess() -> None:
        with state.history.lock:
            if state.calls != calls:
                return  # a request came first: `snapshot` is no longer the history
            history = state.history
            losses = snapshot.losses
            n_below = config.n_below(len(losses) + 1)
            if n_below > len(losses):
                return  # the new trial is among the good ones whatever its loss
            hypothesis = Snapshot(
                np.concatenate([snapshot.coords, history.model.coords_of_key(key)[None, :]]),
                np.append(losses, math.inf),
                snapshot.pending,
                snapshot.used.detached(),
                snapshot.covered + 1,
            )
            rng = rng_for_count(experiment, count + 1, config.random_state)
            sampler = _Sampler(history.model, hypothesis, config, multivariate, state.below)
            state.guess = _Guess(
                count=count + 1,
                config=config,
                coords=hypothesis.coords.tobytes(),
                losses=losses.tobytes(),
                # Ties go to the earlier trial: a loss equal to the n_below-th best
                # old one leaves the new trial out, as an infinite one does.
                threshold=float(np.partition(losses, n_below - 1)[n_below - 1]),
                revision=history.revision,
                key=key,
                shadowed=frozenset(snapshot.used.shadowed),
                keys=sampler.run(rng, 1),
            )

    def submit() -> None:
        with contextlib.suppress(RuntimeError):  # the executor is shutting down
            _GUESSER.submit(guess)

    after_reply.defer(submit)


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
