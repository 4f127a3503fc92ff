"""CMA-ES (Katib's `cmaes`) on the `cmaes` library, rebuilt from the trial history on every call.

The service keeps no state of its own: a call replays the history into a CMA-ES
optimizer and samples from it. Replay rule (a pure function of the history):

* Only int and double parameters are searched by CMA-ES, each mapped to [0, 1]
  (on the log scale for logUniform/logNormal; an int or stepped double owns the
  slice of [0, 1] around each of its grid points, so the end points are as likely
  as the others). Categorical and discrete parameters are sampled independently at
  random, as Katib's optuna CMA-ES falls back to its independent sampler for them.
* The mean starts at the centre of the box (for normal/logNormal that is their
  mean); the step size (`sigma`, in this normalised space; goptuna's is in the
  parameters' units) defaults to 1/6 of the box, which makes the first generation
  the normal prior N((min+max)/2, (max-min)/6) Katib uses for `normal`. The
  population is the library's default, 4 + floor(3 ln d).
* Trials that carry a finite objective value (Succeeded or EarlyStopped) and whose
  int/double values are points of the space are told in history order, in
  generations of the population size. Trials of any origin count, including ones
  this service never suggested. Running, failed and value-less trials are pending:
  they only block their point from being suggested again.
* With `ipop` or `bipop`, a run that meets the library's stopping criteria is
  restarted from a random mean (IPOP: population doubled; BIPOP: Hansen's 2009
  alternation of large and small populations). With `none` (the default, as in
  goptuna) the run continues.
* A proposal that rounds onto a point some trial already has is redrawn, then
  replaced by a random free point; a finite space that is used up raises
  SearchSpaceExhaustedError.

Replaying a long history costs a few milliseconds, so a per-experiment cache
keeps the optimizer and snapshots of it at the last generation boundaries. A
call absorbs only the trials that are new; when a trial finishes out of order
(it belongs before trials already told) the state rolls back to the snapshot
before it. The cache is exact: the answer is the same as from a fresh process.
"""

from __future__ import annotations

import bisect
import math
import threading
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from cmaes import CMA

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    ObjectiveType,
    SettingParser,
    Suggestion,
    TrialRecord,
    non_negative_int,
)
from .experiment_cache import ExperimentCache, experiment_key
from .search_space import OFF_SPACE, Distribution, Key, NumericParameter, SearchSpace
from .trial_prefix import PrefixLog

RESTART_STRATEGIES = ("ipop", "bipop", "none")
#: Initial step size in the normalised space (optuna and goptuna use range / 6 too).
DEFAULT_SIGMA = 1.0 / 6.0
#: Population growth per IPOP restart and per large BIPOP run (Katib uses 2 for both).
INC_POPSIZE = 2
#: Snapshots are kept for generation boundaries this close to the end of the told trials.
SNAPSHOT_WINDOW = 128
#: Proposals drawn from CMA-ES before a duplicate point is replaced by a random free one.
_DRAWS_PER_POINT = 16

_TOO_FEW_DIMENSIONS = "CMA-ES only supports two or more dimensional continuous search space."


def _parse_restart_strategy(value: str) -> str:
    strategy = value.strip().lower()
    if strategy not in RESTART_STRATEGIES:
        raise InvalidArgumentError(
            f"invalid restart_strategy {value!r}: must be one of ipop, bipop, none"
        )
    return strategy


def _parse_sigma(value: str) -> float:
    try:
        sigma = float(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"failed to validate sigma({value}): {exc}") from None
    if not math.isfinite(sigma) or sigma <= 0:
        raise InvalidArgumentError("sigma should be a finite number greater than zero")
    return sigma


# --- the normalised space ------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """One int/double parameter as a coordinate in [0, 1]."""

    position: int  # index among the space's parameters
    param: NumericParameter
    lo: float  # bounds of the (log-)value; for a plain grid, of the grid index +- 0.5
    hi: float
    log: bool

    @classmethod
    def of(cls, position: int, p: NumericParameter) -> _Axis:
        log = p.distribution in (Distribution.LOG_UNIFORM, Distribution.LOG_NORMAL)
        if p.size is not None and not log:
            return cls(position, p, -0.5, p.size - 0.5, False)
        if log:
            return cls(position, p, math.log(p.min), math.log(p.max), True)
        return cls(position, p, p.min, p.max, False)

    def encode(self, entry: Hashable) -> float:
        """Key entry → coordinate (the centre of a grid point's slice)."""
        p = self.param
        if p.size is not None and not self.log:
            return (int(entry) + 0.5) / p.size  # type: ignore[call-overload]
        if self.hi <= self.lo:
            return 0.5
        value = float(p.value(entry))
        if self.log:
            value = math.log(value)
        return min(1.0, max(0.0, (value - self.lo) / (self.hi - self.lo)))

    def decode(self, u: float) -> Hashable:
        """Coordinate → key entry: clipped to the bounds, rounded onto the step."""
        p = self.param
        u = min(1.0, max(0.0, u))
        if p.size is not None and not self.log:
            return min(p.size - 1, int(u * p.size))
        value = self.lo + u * (self.hi - self.lo)
        if self.log:
            value = math.exp(value)
        value = min(p.max, max(p.min, value))
        if p.size is None:
            return p.key_of(repr(value))
        k = round((value - p.min) / (p.step or 1))
        return min(p.size - 1, max(0, k))


@dataclass(frozen=True)
class _Problem:
    """What a replay depends on: the axes, the settings and the objective's direction."""

    space: SearchSpace
    axes: tuple[_Axis, ...]
    others: tuple[int, ...]  # positions of categorical/discrete parameters
    seed: int
    seed_given: bool
    sigma0: float
    restart: str
    minimize: bool

    @property
    def dim(self) -> int:
        return len(self.axes)

    @property
    def popsize0(self) -> int:
        return 4 + math.floor(3 * math.log(self.dim))

    def encode(self, key: Key) -> np.ndarray | None:
        """Coordinates of a trial's int/double values; None if one is not a point of the space."""
        entries = [key[a.position] for a in self.axes]
        if any(e is OFF_SPACE for e in entries):
            return None
        return np.array([a.encode(e) for a, e in zip(self.axes, entries, strict=True)])

    def new_optimizer(self, mean: np.ndarray, sigma: float, popsize: int) -> CMA:
        bounds = np.tile([0.0, 1.0], (self.dim, 1))
        # The optimizer's own generator is reseeded before every ask (see CMAES.suggest).
        return CMA(mean=mean, sigma=sigma, bounds=bounds, seed=0, population_size=popsize)


# --- replay state --------------------------------------------------------------------------------


def _copy_optimizer(optimizer: CMA) -> CMA:
    """An exact, cheap copy of a CMA object.

    Not copy.deepcopy: the library's pickle hook rebuilds C from one triangle (not
    bit-exact) and pickling the generator is slow. Arrays are copied (tell updates
    some in place); the generator is shared, which is safe because it is reseeded
    before every ask and snapshots never ask.
    """
    clone = object.__new__(CMA)
    clone.__dict__.update(
        {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in optimizer.__dict__.items()}
    )
    return clone


@dataclass
class _Run:
    """The current CMA-ES run plus the restart bookkeeping (IPOP/BIPOP)."""

    optimizer: CMA
    restarts: int = 0
    large_runs: int = 0
    regime: str = "small"  # bipop: regime of the current run (the first run counts as small)
    small_evals: int = 0
    large_evals: int = 0

    def clone(self) -> _Run:
        return _Run(
            _copy_optimizer(self.optimizer),
            self.restarts,
            self.large_runs,
            self.regime,
            self.small_evals,
            self.large_evals,
        )

    @property
    def popsize(self) -> int:
        return int(self.optimizer.population_size)

    def restart(self, problem: _Problem) -> None:
        """Start a new run from a random mean (Hansen 2009 for BIPOP's small regime)."""
        done = self.optimizer
        evals = done.population_size * done.generation
        self.restarts += 1
        rng = np.random.default_rng([problem.seed, 1, self.restarts])
        mean = rng.uniform(0.0, 1.0, problem.dim)
        sigma = problem.sigma0
        popsize0 = problem.popsize0
        if problem.restart == "ipop":
            popsize = popsize0 * INC_POPSIZE**self.restarts
        else:
            if self.regime == "small":
                self.small_evals += evals
            else:
                self.large_evals += evals
            if self.small_evals < self.large_evals:
                self.regime = "small"
                large = popsize0 * INC_POPSIZE**self.large_runs
                u = float(rng.uniform())
                popsize = max(2, math.floor(popsize0 * (0.5 * large / popsize0) ** (u * u)))
                sigma = problem.sigma0 * 10 ** (-2 * float(rng.uniform()))
            else:
                self.regime = "large"
                self.large_runs += 1
                popsize = popsize0 * INC_POPSIZE**self.large_runs
        self.optimizer = problem.new_optimizer(mean, sigma, popsize)


@dataclass
class _Replay:
    """The optimizer after telling `told` (the last `len(buffer)` not yet told)."""

    problem: _Problem
    run: _Run
    told: list[TrialRecord] = field(default_factory=list)
    buffer: list[tuple[np.ndarray, float]] = field(default_factory=list)
    snapshots: list[tuple[int, _Run]] = field(default_factory=list)  # (len(told), run)

    @classmethod
    def fresh(cls, problem: _Problem) -> _Replay:
        mean = np.full(problem.dim, 0.5)
        run = _Run(problem.new_optimizer(mean, problem.sigma0, problem.popsize0))
        return cls(problem, run)

    def absorb(self, solutions: Sequence[tuple[TrialRecord, np.ndarray, float]], end: int) -> None:
        """Tell solutions in order; `end` is the final length of the told sequence."""
        problem = self.problem
        for record, x, value in solutions:
            self.told.append(record)
            self.buffer.append((x, value if problem.minimize else -value))
            if len(self.buffer) < self.run.popsize:
                continue
            self.run.optimizer.tell(self.buffer)
            self.buffer = []
            if problem.restart != "none" and self.run.optimizer.should_stop():
                self.run.restart(problem)
            if end - len(self.told) <= SNAPSHOT_WINDOW:
                self.snapshots.append((len(self.told), self.run.clone()))
        # Keep the snapshots of the last SNAPSHOT_WINDOW trials (and always the latest one).
        oldest = len(self.told) - SNAPSHOT_WINDOW
        while len(self.snapshots) > 1 and self.snapshots[0][0] < oldest:
            self.snapshots.pop(0)

    def rewind(self, length: int) -> bool:
        """Go back to the last snapshot at or before `length` told trials; False if none."""
        while self.snapshots and self.snapshots[-1][0] > length:
            self.snapshots.pop()
        if not self.snapshots:
            return False
        at, run = self.snapshots[-1]
        self.run = run.clone()
        del self.told[at:]
        self.buffer = []
        return True


@dataclass(frozen=True, slots=True)
class _Parsed:
    """One trial as the replay sees it."""

    key: Key
    x: np.ndarray | None  # coordinates; None if an int/double value is not a point
    value: float | None  # the value to tell; None unless observed, finite and x is set


@dataclass
class _State:
    """Per-experiment cache entry: parsed trials, used points and the replay (under `lock`)."""

    problem: _Problem
    replay: _Replay
    log: PrefixLog[_Parsed] = field(default_factory=PrefixLog)
    used: dict[Key, int] = field(default_factory=dict)  # key → trials that have it
    points_used: int = 0  # distinct keys of `used` that are points of the space
    solutions: list[tuple[TrialRecord, np.ndarray, float]] = field(default_factory=list)
    solution_at: list[int] = field(default_factory=list)  # history index of each solution
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _parse(self, t: TrialRecord) -> _Parsed:
        key = self.problem.space.key_of(t.assignments)
        x = self.problem.encode(key)
        value = t.objective_value
        tellable = x is not None and value is not None and t.observed and math.isfinite(value)
        return _Parsed(key, x, value if tellable else None)

    def _count(self, key: Key, delta: int) -> None:
        had = self.used.get(key, 0)
        now = had + delta
        if now:
            self.used[key] = now
        else:
            del self.used[key]
        if (had == 0) != (now == 0) and OFF_SPACE not in key:
            self.points_used += 1 if now else -1

    def sync(self, trials: Sequence[TrialRecord]) -> None:
        """Bring the used points and the replay up to date with `trials`."""
        start, dropped = self.log.update(trials, self._parse)
        for parsed in dropped:
            self._count(parsed.key, -1)
        kept = bisect.bisect_left(self.solution_at, start)
        del self.solutions[kept:]
        del self.solution_at[kept:]
        records = self.log.records
        for index in range(start, len(records)):
            parsed = self.log.results[index]
            self._count(parsed.key, 1)
            if parsed.value is not None:
                assert parsed.x is not None
                self.solutions.append((records[index], parsed.x, parsed.value))
                self.solution_at.append(index)
        replay = self.replay
        told = replay.told
        solutions = self.solutions
        common = min(kept, len(told))
        while (
            common < len(told)
            and common < len(solutions)
            and (told[common] is solutions[common][0] or told[common] == solutions[common][0])
        ):
            common += 1
        if common < len(told) and not replay.rewind(common):
            replay = self.replay = _Replay.fresh(self.problem)
        replay.absorb(solutions[len(replay.told) :], len(solutions))


# --- the algorithm ------------------------------------------------------------------------------


class CMAES(BaseAlgorithm):
    """Katib's `cmaes`: settings restart_strategy (ipop|bipop|none), sigma (> 0), random_state."""

    name: ClassVar[str] = "cmaes"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "restart_strategy": _parse_restart_strategy,
        "sigma": _parse_sigma,
        "random_state": non_negative_int("random_state"),
    }
    contract_exemptions: ClassVar[Mapping[str, str]] = {
        "finite_spaces": "needs two or more int/double parameters; the contract's small finite "
        "spaces have one (tests/unit/test_cmaes.py checks finite spaces of two ints)",
    }
    #: Shared by all instances: the server builds one instance per request.
    shared_cache: ClassVar[ExperimentCache[_State]] = ExperimentCache(max_entries=32)

    def __init__(self, cache: ExperimentCache[_State] | None = None) -> None:
        self._cache = cache if cache is not None else self.shared_cache

    def _problem(self, experiment: ExperimentInfo) -> _Problem:
        settings = self.parse_settings(experiment)
        space = experiment.search_space
        axes = tuple(
            _Axis.of(i, p)
            for i, p in enumerate(space.parameters)
            if isinstance(p, NumericParameter)
        )
        if len(axes) < 2:
            raise InvalidArgumentError(_TOO_FEW_DIMENSIONS)
        numeric = {a.position for a in axes}
        random_state = settings.get("random_state")
        seed_given = isinstance(random_state, int)
        seed = (
            random_state
            if isinstance(random_state, int)
            else zlib.crc32(experiment.name.encode())
        )
        sigma = settings.get("sigma", DEFAULT_SIGMA)
        return _Problem(
            space=space,
            axes=axes,
            others=tuple(i for i in range(len(space.parameters)) if i not in numeric),
            seed=seed,
            seed_given=seed_given,
            sigma0=float(sigma) if isinstance(sigma, float) else DEFAULT_SIGMA,
            restart=str(settings.get("restart_strategy", "none")),
            minimize=experiment.objective_type is ObjectiveType.MINIMIZE,
        )

    def validate_settings(self, experiment: ExperimentInfo) -> None:
        """Settings, plus Katib's rule: at least two int/double parameters."""
        self._problem(experiment)

    def replay_state(self, experiment: ExperimentInfo, trials: Sequence[TrialRecord]) -> _Run:
        """The CMA-ES run after replaying `trials` (a copy; for tests and diagnostics)."""
        state = self._state(experiment)
        with state.lock:
            state.sync(trials)
            return state.replay.run.clone()

    def _state(self, experiment: ExperimentInfo) -> _State:
        key = experiment_key(experiment)
        state = self._cache.get(key)
        if state is None:
            problem = self._problem(experiment)
            state = _State(problem, _Replay.fresh(problem))
            self._cache.put(key, state)
        return state

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """n points from the replayed distribution; never a point any trial already has."""
        state = self._state(experiment)
        problem = state.problem
        space = problem.space
        with state.lock:
            state.sync(trials)
            size = space.size
            if size is not None and state.points_used >= size:
                raise SearchSpaceExhaustedError(
                    f"cmaes search space exhausted: all {size} points have been suggested"
                )
            rng = np.random.default_rng(
                [problem.seed, len(trials), 0 if problem.seed_given else 1, 2]
            )
            optimizer = state.replay.run.optimizer
            optimizer.reseed_rng(int(rng.integers(2**32)))
            keys = self._sample(problem, optimizer, rng, n, state.used)
        return [Suggestion(space.format(k)) for k in keys]

    @staticmethod
    def _sample(
        problem: _Problem,
        optimizer: CMA,
        rng: np.random.Generator,
        n: int,
        used: Mapping[Key, int],
    ) -> list[Key]:
        """Ask CMA-ES; a point already used is redrawn, then replaced by a random free point."""
        space = problem.space
        chosen: list[Key] = []
        taken: set[Key] = set()
        width = len(space.parameters)
        for _ in range(n):
            key: Key | None = None
            for _ in range(_DRAWS_PER_POINT):
                x = optimizer.ask()
                entries: list[Any] = [None] * width
                for axis, u in zip(problem.axes, x.tolist(), strict=True):
                    entries[axis.position] = axis.decode(u)
                for i in problem.others:
                    entries[i] = space.parameters[i].sample(rng, 1)[0]
                candidate = tuple(entries)
                if candidate not in used and candidate not in taken:
                    key = candidate
                    break
            if key is None:
                free = space.sample_unique(rng, 1, used.keys() | taken)
                if not free:
                    break
                key = free[0]
            taken.add(key)
            chosen.append(key)
        return chosen
