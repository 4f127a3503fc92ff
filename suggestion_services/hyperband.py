"""Hyperband (Li et al., JMLR 2018) with Katib's schedule, derived from the trial history alone.

Schedule (Katib's `pkg/suggestion/v1beta1/hyperband`): s_max = floor(log(r_l) / log(eta));
brackets s = s_max..0; bracket s starts n = ceil((s_max + 1) * eta^s / (s + 1)) random
configurations with resource r = r_l * eta^-s, and each later rung keeps the best
ceil(n_i / eta) of the rung before it with eta times the resource. For r_l=9, eta=3:
9@1 → 3@3 → 1@9, then 5@3 → 2@9, then 3@9 (Katib rounds the survivors up where the
paper rounds down: the paper's middle bracket promotes 1, not 2).

Katib's service keeps its position (current bracket and rung) in the settings it
returns. Here nothing is kept, and nothing depends on when calls happen:

* The random configurations of every bracket are drawn up front from the seed
  (random_state, or the experiment name), distinct from each other, so each
  configuration names its bracket. A trial is matched to a job (bracket, rung,
  configuration) by its non-resource values and its resource value; other trials
  (a user's runs, foreign values) are ignored.
* A rung is known once the rung before it has finished: its jobs are the best
  configurations by objective value. Failed, killed, value-less trials rank last
  and are not promoted (Katib raises when a trial of the rung is not Succeeded).
* A call hands out the jobs not yet tried, earlier brackets and lower rungs first.
  Rung 0 of every bracket needs no results, so while one bracket waits for its
  rung, the next bracket's first rung fills the free slots. When every job is
  waiting for running trials the reply is empty; when every job of every bracket
  has been handed out, SearchSpaceExhaustedError ends the experiment (Katib
  returns an empty reply forever).

A job is pending while one of its trials is Created or Running; any other
condition without a value (Failed, Killed, MetricsUnavailable, Unknown) counts as
finished, so a rung never waits forever. A per-experiment cache keeps the plan and
the matches of the trials seen so far (only the trials that changed are read); it
is exact, so a fresh process answers the same.

The resource parameter's value is always hyperband's (as Katib: its declared range
is not applied; an int resource is truncated, a discrete one takes the nearest
listed value). Settings: Katib's r_l, resource_name, eta and its rule
parallelTrialCount >= ceil(eta^s_max) (checked at validation only; unset counts as
Katib's default, 3), plus random_state (an extension; without it the experiment
name seeds the configurations). Katib's derived settings (s_max, b_l, r, n,
current_s, current_i, evaluating_trials) are accepted and ignored, so an
experiment moved from Katib with its returned settings still validates.
"""

from __future__ import annotations

import bisect
import math
import threading
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    ObjectiveType,
    SettingParser,
    Suggestion,
    TrialCondition,
    TrialRecord,
    non_negative_int,
)
from .experiment_cache import ExperimentCache, experiment_key
from .search_space import (
    ListParameter,
    NumericParameter,
    Parameter,
    SearchSpace,
    format_double,
)
from .trial_prefix import PrefixLog

DEFAULT_ETA = 3.0
#: Katib's default parallelTrialCount, used when the request leaves it unset (0).
DEFAULT_PARALLEL = 3
#: Random configurations a schedule may need (r_l = 3^10 with eta 3 needs ~88,000).
MAX_CONFIGURATIONS = 100_000
#: Derived state Katib's service returns in its settings; accepted and ignored here.
KATIB_STATE_KEYS = ("s_max", "b_l", "r", "n", "current_s", "current_i", "evaluating_trials")
#: Labels on each suggested trial, for people reading `katib get trials`.
BRACKET_LABEL = "hyperband/bracket"
RUNG_LABEL = "hyperband/rung"

#: A configuration: the key entries of every parameter but the resource, in space order.
Config = tuple[Hashable, ...]

_PENDING = (TrialCondition.CREATED, TrialCondition.RUNNING)
_EPS = 1e-9


def _parse_r_l(value: str) -> float:
    try:
        r_l = float(value)
    except ValueError:
        raise InvalidArgumentError("r_l must be a positive float number.") from None
    if not math.isfinite(r_l) or r_l <= 0:
        raise InvalidArgumentError("r_l must be a positive float number.")
    return r_l


def _parse_eta(value: str) -> float:
    """Katib: default 3, and a value <= 0 means 3. Between 0 and 1 it has no schedule."""
    try:
        eta = float(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"failed to validate eta({value}): {exc}") from None
    if not math.isfinite(eta):
        raise InvalidArgumentError(f"eta must be a finite number, got {value}")
    if eta <= 0:
        return DEFAULT_ETA
    if eta <= 1:
        raise InvalidArgumentError(f"eta must be greater than 1 (or <= 0 for 3), got {value}")
    return eta


def _ceil(x: float) -> int:
    """ceil that ignores float noise above an integer (9.000000000000002 → 9)."""
    return math.ceil(x * (1 - _EPS))


def _floor(x: float) -> int:
    """floor that ignores float noise below an integer (1.9999999999999998 → 2)."""
    return math.floor(x * (1 + _EPS) + _EPS)


@dataclass(frozen=True)
class Schedule:
    """Katib's bracket schedule for (r_l, eta): nominal rung sizes and resources."""

    r_l: float
    eta: float
    s_max: int
    #: rungs[s][i] = nominal number of configurations in rung i of bracket s.
    rungs: Mapping[int, tuple[int, ...]]

    @classmethod
    def of(cls, r_l: float, eta: float) -> Schedule:
        s_max = max(0, _floor(math.log(r_l) / math.log(eta))) if r_l >= 1 else 0
        rungs: dict[int, tuple[int, ...]] = {}
        for s in range(s_max, -1, -1):
            sizes = [_ceil((s_max + 1) * eta**s / (s + 1))]
            for _ in range(s):
                sizes.append(_ceil(sizes[-1] / eta))
            rungs[s] = tuple(sizes)
        return cls(r_l, eta, s_max, rungs)

    @property
    def brackets(self) -> range:
        """Bracket indexes in the order they run (s_max first)."""
        return range(self.s_max, -1, -1)

    def resource(self, s: int, i: int) -> float:
        """Resource of rung i in bracket s: r_l * eta^(i - s)."""
        return self.r_l * self.eta ** (i - s)

    @property
    def min_parallel(self) -> int:
        """Katib's validation: the first bracket's rung must fit in parallel."""
        return math.ceil(self.eta**self.s_max - _EPS)

    @property
    def configurations(self) -> int:
        return sum(sizes[0] for sizes in self.rungs.values())

    @property
    def trials(self) -> int:
        return sum(sum(sizes) for sizes in self.rungs.values())


def resource_text(param: Parameter, value: float) -> str:
    """How hyperband writes a resource value for the parameter's type (Katib truncates ints)."""
    if isinstance(param, NumericParameter):
        return str(_floor(value)) if param.is_int else format_double(value)
    assert isinstance(param, ListParameter) and param.discrete
    numbers = [(abs(float(v) - value), i) for i, v in enumerate(param.values)]
    return param.values[min(numbers)[1]]


@dataclass(frozen=True)
class _Plan:
    """Everything a call needs that the history does not change."""

    schedule: Schedule
    space: SearchSpace
    resource: int  # position of the resource parameter
    levels: Mapping[int, str]  # i - s → resource text
    level_of: Mapping[float, int]  # resource value → i - s
    configs: Mapping[int, tuple[Config, ...]]  # bracket → configurations
    index: Mapping[Config, tuple[int, int]]  # configuration → (bracket, slot)
    minimize: bool


@dataclass
class _Job:
    value: float | None = None
    pending: bool = False


@dataclass(frozen=True, slots=True)
class _Hit:
    """A trial matched to a job: (bracket, rung, slot), and what it says."""

    job: tuple[int, int, int]
    value: float | None
    pending: bool


@dataclass
class _State:
    """Per-experiment cache entry: the plan and the history's matches so far (under `lock`)."""

    plan: _Plan
    log: PrefixLog[_Hit | None] = field(default_factory=PrefixLog)
    hit_at: list[int] = field(default_factory=list)  # history indexes whose result is a _Hit
    lock: threading.Lock = field(default_factory=threading.Lock)

    def jobs(self, trials: Sequence[TrialRecord]) -> dict[tuple[int, int, int], _Job]:
        """(bracket, rung, slot) → what the history says about that job."""
        start, _ = self.log.update(trials, partial(_hit, self.plan))
        del self.hit_at[bisect.bisect_left(self.hit_at, start) :]
        results = self.log.results
        self.hit_at.extend(k for k in range(start, len(results)) if results[k] is not None)
        jobs: dict[tuple[int, int, int], _Job] = {}
        for k in self.hit_at:
            hit = results[k]
            assert hit is not None
            job = jobs.setdefault(hit.job, _Job())
            if job.value is None:
                job.value = hit.value
            job.pending = job.pending or hit.pending
        for job in jobs.values():
            if job.value is not None:
                job.pending = False
        return jobs


class Hyperband(BaseAlgorithm):
    """Katib's `hyperband`: r_l and resource_name required; eta (3) and random_state optional."""

    name: ClassVar[str] = "hyperband"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "r_l": _parse_r_l,
        "resource_name": str,
        "eta": _parse_eta,
        "random_state": non_negative_int("random_state"),
        **{key: str for key in KATIB_STATE_KEYS},
    }
    contract_exemptions: ClassVar[Mapping[str, str]] = {
        "exact_count": "a rung holds as many configurations as the schedule says; while every "
        "remaining job waits for running trials the reply is short or empty",
        "finite_spaces": "the points are configurations x resource levels of the schedule, "
        "not every point of the space; the contract's small spaces lack the resource parameter",
    }
    _states: ClassVar[ExperimentCache[_State]] = ExperimentCache(max_entries=32)

    # --- settings --------------------------------------------------------------------------
    def validate_settings(self, experiment: ExperimentInfo) -> None:
        """Katib's checks (including parallelTrialCount), plus a usable resource parameter.

        An unset parallelTrialCount (0) counts as Katib's default, 3. Only validation
        checks it: a parallelism lowered mid-experiment does not fail the experiment.
        """
        schedule = self._state(experiment).plan.schedule
        if (experiment.parallel_trial_count or DEFAULT_PARALLEL) < schedule.min_parallel:
            raise InvalidArgumentError(
                f"parallelTrialCount must be not less than {schedule.min_parallel}."
            )

    def _state(self, experiment: ExperimentInfo) -> _State:
        key = experiment_key(experiment)
        state = self._states.get(key)
        if state is None:
            state = _State(self._build_plan(experiment))
            self._states.put(key, state)
        return state

    def _build_plan(self, experiment: ExperimentInfo) -> _Plan:
        raw = experiment.settings
        if "r_l" not in raw or "resource_name" not in raw:
            raise InvalidArgumentError("r_l and resource_name must be set.")
        settings = self.parse_settings(experiment)
        r_l = _as_float(settings["r_l"])
        eta = _as_float(settings.get("eta", DEFAULT_ETA))
        space = experiment.search_space
        names = space.names
        if settings["resource_name"] not in names:
            raise InvalidArgumentError("value of resource_name setting must be in parameters.")
        position = names.index(str(settings["resource_name"]))
        param = space.parameters[position]
        if isinstance(param, ListParameter) and not _numeric_list(param):
            raise InvalidArgumentError(
                f"resource_name {param.name} must name an int, double or discrete parameter "
                "with numeric values"
            )
        schedule = Schedule.of(r_l, eta)
        if schedule.configurations > MAX_CONFIGURATIONS:
            raise InvalidArgumentError(
                f"hyperband with r_l={raw['r_l']} and eta={raw.get('eta', '3')} needs "
                f"{schedule.configurations} random configurations; at most "
                f"{MAX_CONFIGURATIONS} are supported"
            )
        levels: dict[int, str] = {}
        level_of: dict[float, int] = {}
        for level in range(-schedule.s_max, 1):
            text = resource_text(param, schedule.resource(0, level))
            if float(text) in level_of:
                raise InvalidArgumentError(
                    f"r_l={raw['r_l']} and eta={raw.get('eta', '3')} give two rungs the same "
                    f"{param.name} value {text}; use a larger r_l or eta"
                )
            levels[level] = text
            level_of[float(text)] = level
        random_state = settings.get("random_state")
        seed = (
            random_state
            if isinstance(random_state, int)
            else zlib.crc32(experiment.name.encode())
        )
        configs, index = _draw_configurations(space, position, schedule, seed)
        return _Plan(
            schedule=schedule,
            space=space,
            resource=position,
            levels=levels,
            level_of=level_of,
            configs=configs,
            index=index,
            minimize=experiment.objective_type is ObjectiveType.MINIMIZE,
        )

    # --- suggestions -------------------------------------------------------------------------
    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """Up to n jobs that are ready; [] while all wait; exhausted once all are handed out."""
        state = self._state(experiment)
        plan = state.plan
        with state.lock:
            jobs = state.jobs(trials)
        out: list[Suggestion] = []
        more = False  # will a later call have jobs to hand out?
        for s in plan.schedule.brackets:
            rung = list(range(len(plan.configs[s])))
            for i in range(s + 1):
                states = [jobs.get((s, i, slot)) for slot in rung]
                fresh = [slot for slot, job in zip(rung, states, strict=True) if job is None]
                for slot in fresh[: max(0, n - len(out))]:
                    out.append(self._suggestion(plan, s, i, slot))
                if fresh:
                    more = True
                    break
                if i == s:
                    break
                if any(job is not None and job.pending for job in states):
                    more = True
                    break
                valued = [
                    (job.value if plan.minimize else -job.value, slot)
                    for slot, job in zip(rung, states, strict=True)
                    if job is not None and job.value is not None
                ]
                rung = [slot for _, slot in sorted(valued)[: plan.schedule.rungs[s][i + 1]]]
                if not rung:
                    break
        if not out and not more and n > 0:
            raise SearchSpaceExhaustedError(
                f"hyperband has finished: all {len(plan.configs)} brackets have been run "
                f"(r_l={plan.schedule.r_l:g}, eta={plan.schedule.eta:g})"
            )
        return out

    @staticmethod
    def _suggestion(plan: _Plan, s: int, i: int, slot: int) -> Suggestion:
        config = iter(plan.configs[s][slot])
        assignments: dict[str, str] = {}
        for position, param in enumerate(plan.space.parameters):
            if position == plan.resource:
                assignments[param.name] = plan.levels[i - s]
            else:
                assignments[param.name] = param.format(next(config))
        return Suggestion(assignments, labels={BRACKET_LABEL: str(s), RUNG_LABEL: str(i)})


def _as_float(value: object) -> float:
    assert isinstance(value, float)
    return value


def _numeric_list(param: ListParameter) -> bool:
    if not param.discrete:
        return False
    try:
        return all(math.isfinite(float(v)) for v in param.values)
    except ValueError:
        return False


def _draw_configurations(
    space: SearchSpace, resource: int, schedule: Schedule, seed: int
) -> tuple[dict[int, tuple[Config, ...]], dict[Config, tuple[int, int]]]:
    """Distinct random configurations (non-resource values) for every bracket's first rung.

    A finite space with fewer configurations than the schedule needs fills the
    brackets in order; later brackets get fewer (possibly none).
    """
    keep = [p for j, p in enumerate(space.parameters) if j != resource]
    specs = tuple(s for j, s in enumerate(space.specs) if j != resource)
    total = schedule.configurations
    if keep:
        rng = np.random.default_rng([seed, 0x4859])
        drawn = SearchSpace(specs, tuple(keep)).sample_unique(rng, total)
    else:
        drawn = [()]
    configs: dict[int, tuple[Config, ...]] = {}
    index: dict[Config, tuple[int, int]] = {}
    start = 0
    for s in schedule.brackets:
        chunk = tuple(drawn[start : start + schedule.rungs[s][0]])
        start += len(chunk)
        configs[s] = chunk
        for slot, config in enumerate(chunk):
            index[config] = (s, slot)
    return configs, index


def _hit(plan: _Plan, t: TrialRecord) -> _Hit | None:
    """The job a trial ran, or None for a trial of no job (a user's run, foreign values)."""
    params = plan.space.parameters
    try:
        level = plan.level_of.get(float(t.assignments.get(params[plan.resource].name, "")))
    except ValueError:
        return None
    if level is None:
        return None
    config = tuple(
        p.key_of(t.assignments.get(p.name)) for j, p in enumerate(params) if j != plan.resource
    )
    where = plan.index.get(config)
    if where is None:
        return None
    s, slot = where
    i = level + s
    if not 0 <= i <= s:
        return None
    value = t.objective_value
    if t.observed and value is not None and math.isfinite(value):
        return _Hit((s, i, slot), value, False)
    return _Hit((s, i, slot), None, t.condition in _PENDING)
