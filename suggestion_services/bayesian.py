"""Bayesian optimisation (Katib's `bayesianoptimization`) on scikit-optimize's parts.

Katib keeps one skopt ``Optimizer`` per experiment and tells it new trials. Here
every call rebuilds the answer from the request's whole history, with skopt's
own surrogates (``cook_estimator``: GP, RF, ET, GBRT), priors, acquisition
functions and L-BFGS step, so a restarted service answers as a warm one:

* Initial points: while fewer than ``n_initial_points`` trials are observed or
  pending (Created/Running), points are drawn at random from the *declared*
  distributions (normal/logNormal included, clipped to the bounds). Without a
  single observed trial every point is random, whatever n_initial_points says.
* Model: only observed trials (Succeeded/EarlyStopped with a finite value) feed
  it; maximize is handled by negating. Pending trials and the points already
  chosen for this batch are told to the model with a constant lie, the best value
  seen (skopt's ``cl_min``), so a batch spreads out and never repeats a point.
* Acquisition: optimised over 10,000 candidates drawn from skopt's priors (or the
  whole grid of a finite space with at most 10,000 points), refined with L-BFGS
  for a GP ("auto" or "lbfgs"), as skopt's Optimizer does. ``gp_hedge`` chooses
  between the EI, LCB and PI proposals with probabilities softmax(gains), where
  each call subtracts the current model's prediction at the previous call's three
  proposals from their gains, as skopt's Optimizer does on every tell. The gains
  and the proposals travel in the reply's settings (``gp_hedge_gains``,
  ``gp_hedge_proposals``), which the controller stores and sends back, the way
  hyperband keeps its position: a restarted service continues the same hedge. A
  history without them (the first model-based call) starts at zero gains.
* EIps/PIps: skopt divides by a model of each trial's run time, which requests
  do not carry here; every trial is taken to last 1.0, which makes them EI/PI.
* GP hyperparameters: skopt re-optimises the kernel on every tell (about 5 s at
  500 trials here, 15 s on a busy machine). Up to 40 observed trials they are
  re-optimised on every call; beyond that only when the count of observed trials
  reaches the next checkpoint c (40 * 1.2^j, rounded up), on at most 150 evenly
  spaced trials of the first c observed in request order. Every call then refits
  the GP with those hyperparameters on all observed trials (one Cholesky). The
  checkpoint's kernel is a pure function of the request, so caching it (per
  experiment, checked against the first c observed trials of the request) only
  saves time: a cold service computes the same kernel.
* An objective type other than maximize (minimize, or unset) is minimised, as in
  Katib's skopt service.

See bayesian_space.py for how each parameter is modelled (no log scale forced on
a double, unlike Katib).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import fmin_l_bfgs_b
from threadpoolctl import ThreadpoolController

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    ObjectiveType,
    SettingParser,
    Suggestion,
    SuggestResult,
    TrialCondition,
    TrialRecord,
    non_negative_int,
)
from .bayesian_gp import (
    acquisition,
    acquisition_and_gradient,
    fitted_kernel,
    gp_with_kernel,
    predict,
)
from .bayesian_space import ModelSpace, make_estimator
from .experiment_cache import ExperimentCache, experiment_key
from .history import make_rng
from .search_space import OFF_SPACE, Key

log = logging.getLogger(__name__)

ESTIMATORS = ("GP", "RF", "ET", "GBRT")
ACQ_FUNCS = ("gp_hedge", "LCB", "EI", "PI", "EIps", "PIps")
ACQ_OPTIMIZERS = ("auto", "sampling", "lbfgs")

# skopt's Optimizer defaults.
N_POINTS = 10_000
N_RESTARTS = 5
LBFGS_MAXITER = 20
ETA = 1.0
# GP hyperparameter schedule (see the module doc).
FULL_REFIT_UP_TO = 40
REFIT_GROWTH = 1.2
HYPER_MAX_POINTS = 150

_PENDING = (TrialCondition.CREATED, TrialCondition.RUNNING)


def _choice(setting: str, allowed: tuple[str, ...]) -> SettingParser:
    def parse(value: str) -> str:
        if value not in allowed:
            raise InvalidArgumentError(
                f"{setting} {value} is not supported in Bayesian optimization"
            )
        return value

    return parse


@dataclass(frozen=True)
class BOConfig:
    """Parsed settings with Katib's defaults."""

    base_estimator: str = "GP"
    n_initial_points: int = 10
    acq_func: str = "gp_hedge"
    acq_optimizer: str = "auto"
    random_state: int | None = None


HEDGE_ACQ_FUNCS = ("EI", "LCB", "PI")
GAINS_SETTING = "gp_hedge_gains"
PROPOSALS_SETTING = "gp_hedge_proposals"


def _parse_gains(value: str) -> tuple[float, ...]:
    try:
        gains = tuple(float(v) for v in value.split(","))
    except ValueError:
        gains = ()
    if len(gains) != len(HEDGE_ACQ_FUNCS) or not all(map(math.isfinite, gains)):
        raise InvalidArgumentError(
            f"{GAINS_SETTING} ({value}) must be {len(HEDGE_ACQ_FUNCS)} comma-separated finite "
            "numbers; it is state the service returns, leave it out of new experiments"
        )
    return gains


def _parse_proposals(value: str) -> tuple[tuple[float, ...], ...]:
    try:
        rows = json.loads(value)
        points = tuple(tuple(float(v) for v in row) for row in rows)
    except (ValueError, TypeError):
        points = ()
    if len(points) != len(HEDGE_ACQ_FUNCS) or len({len(p) for p in points}) != 1:
        raise InvalidArgumentError(
            f"{PROPOSALS_SETTING} must be a JSON list of {len(HEDGE_ACQ_FUNCS)} points of equal "
            "length; it is state the service returns, leave it out of new experiments"
        )
    return points


@dataclass
class HedgeState:
    """skopt's gp_hedge memory: gains per acquisition and the last call's proposals."""

    gains: np.ndarray
    proposals: np.ndarray | None = None  # rows in the model's transformed space

    @classmethod
    def from_settings(cls, parsed: dict[str, object]) -> HedgeState:
        gains = parsed.get(GAINS_SETTING)
        proposals = parsed.get(PROPOSALS_SETTING)
        return cls(
            gains=np.asarray(gains if gains is not None else [0.0] * len(HEDGE_ACQ_FUNCS),
                             dtype=float),
            proposals=None if proposals is None else np.asarray(proposals, dtype=float),
        )

    def to_settings(self) -> dict[str, str]:
        out = {GAINS_SETTING: ",".join(repr(float(g)) for g in self.gains)}
        if self.proposals is not None:
            out[PROPOSALS_SETTING] = json.dumps(
                [[round(float(v), 12) for v in row] for row in self.proposals]
            )
        return out


def hyper_checkpoint(n_observed: int) -> int:
    """How many observed trials the GP hyperparameters are optimised on."""
    if n_observed <= FULL_REFIT_UP_TO:
        return n_observed
    c = FULL_REFIT_UP_TO
    while (nxt := math.ceil(c * REFIT_GROWTH)) <= n_observed:
        c = nxt
    return c


def _seed(experiment: ExperimentInfo, random_state: int | None, *tags: int) -> int:
    """A 32-bit seed from (random_state or the experiment name, tags)."""
    base = random_state if random_state is not None else zlib.crc32(experiment.name.encode())
    flag = 0 if random_state is not None else 1
    return int(np.random.SeedSequence([base, flag, *tags]).generate_state(1)[0])


class _OneBlasThread:
    """Limits BLAS to one thread while any call of this module runs.

    The matrices are small, and on a busy 2-core machine OpenBLAS's thread hand-offs
    made L-BFGS and GP fits 5-20x slower. Reference counted, so that concurrent calls
    (the server is threaded) restore the original limit only when the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._controller: ThreadpoolController | None = None
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_ONE_BLAS_THREAD = _OneBlasThread()

# experiment_key → (signature of the first c observed trials, their kernel).
_KERNELS: ExperimentCache[tuple[tuple[Any, ...], Any]] = ExperimentCache(max_entries=16)


class BayesianOptimization(BaseAlgorithm):
    """Katib's `bayesianoptimization` (scikit-optimize); settings as in Katib."""

    name: ClassVar[str] = "bayesianoptimization"
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "base_estimator": _choice("base_estimator", ESTIMATORS),
        "n_initial_points": non_negative_int("n_initial_points"),
        "acq_func": _choice("acq_func", ACQ_FUNCS),
        "acq_optimizer": _choice("acq_optimizer", ACQ_OPTIMIZERS),
        "random_state": non_negative_int("random_state"),
        GAINS_SETTING: _parse_gains,
        PROPOSALS_SETTING: _parse_proposals,
    }

    def config(self, experiment: ExperimentInfo) -> BOConfig:
        """Settings with defaults; rejects L-BFGS on a tree model (no gradients)."""
        parsed = self.parse_settings(experiment)
        parsed.pop(GAINS_SETTING, None)
        parsed.pop(PROPOSALS_SETTING, None)
        config = BOConfig(**parsed)  # type: ignore[arg-type]
        if config.acq_optimizer == "lbfgs" and config.base_estimator != "GP":
            raise InvalidArgumentError(
                f"acq_optimizer lbfgs is not supported with base_estimator "
                f"{config.base_estimator} in Bayesian optimization (tree models have no "
                "gradients): use sampling or auto"
            )
        return config

    def validate_settings(self, experiment: ExperimentInfo) -> None:
        self.config(experiment)

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """n new points: random first, then the acquisition optimum under constant lies."""
        return self.suggest_with_settings(experiment, trials, n).suggestions

    def suggest_with_settings(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> SuggestResult:
        """Suggestions, and for gp_hedge the updated hedge state in the settings."""
        config = self.config(experiment)
        hedge = None
        if config.acq_func == "gp_hedge":
            hedge = HedgeState.from_settings(self.parse_settings(experiment))
        with _ONE_BLAS_THREAD:
            suggestions = self._suggest(experiment, config, trials, n, hedge)
        settings = dict(experiment.settings)
        if hedge is not None and hedge.proposals is not None:
            settings.update(hedge.to_settings())
        return SuggestResult(suggestions, settings)

    def _suggest(
        self,
        experiment: ExperimentInfo,
        config: BOConfig,
        trials: Sequence[TrialRecord],
        n: int,
        hedge: HedgeState | None,
    ) -> list[Suggestion]:
        space = experiment.search_space
        keys = [space.key_of(t.assignments) for t in trials]
        used: set[Key] = set(keys)
        want = n
        if space.size is not None:
            covered = sum(1 for k in used if OFF_SPACE not in k)
            if covered >= space.size:
                raise SearchSpaceExhaustedError(
                    "bayesianoptimization search space exhausted: all "
                    f"{space.size} points have been suggested"
                )
            want = min(n, space.size - covered)

        model_space = ModelSpace(space, normalize=config.base_estimator == "GP")
        sign = -1.0 if experiment.objective_type is ObjectiveType.MAXIMIZE else 1.0
        names: list[str] = []
        observed: list[Key] = []
        values: list[float] = []
        pending: list[Key] = []
        for t, k in zip(trials, keys, strict=True):
            if not model_space.accepts(k):
                continue
            if t.observed and t.objective_value is not None and math.isfinite(t.objective_value):
                names.append(t.name)
                observed.append(k)
                values.append(sign * t.objective_value)
            elif t.condition in _PENDING:
                pending.append(k)

        rng = make_rng(experiment, trials, config.random_state)
        n_random = want
        if observed and not model_space.empty:
            n_random = min(want, max(0, config.n_initial_points - len(observed) - len(pending)))
        chosen = space.sample_unique(rng, n_random, used)
        if len(chosen) < want and len(chosen) == n_random:
            excluded = used | set(chosen)
            try:
                proposer = _Proposer(
                    experiment, config, model_space, names, observed, values, rng, excluded, hedge
                )
                chosen += proposer.propose(want - len(chosen), pending + chosen)
            except np.linalg.LinAlgError as exc:
                # A numerically singular model (e.g. many identical points): random points
                # keep the experiment going; the next call tries the model again.
                log.warning("%s: surrogate model failed (%s); suggesting random points",
                            experiment.name, exc)
                chosen += space.sample_unique(rng, want - len(chosen), used | set(chosen))
        return [Suggestion(space.format(k)) for k in chosen]


class _Proposer:
    """One call's model-based proposals (the lies of a batch live only here)."""

    def __init__(
        self,
        experiment: ExperimentInfo,
        config: BOConfig,
        model_space: ModelSpace,
        names: list[str],
        observed: list[Key],
        values: list[float],
        rng: np.random.Generator,
        excluded: set[Key],
        hedge: HedgeState | None = None,
    ) -> None:
        self.experiment = experiment
        self.hedge = hedge
        self.config = config
        self.ms = model_space
        self.rng = rng
        self.excluded = excluded
        self.X = model_space.transform(observed)
        self.y = np.asarray(values, dtype=float)
        self.lie = float(self.y.min())  # cl_min
        self.is_gp = config.base_estimator == "GP"
        self.kernel = self._gp_kernel(names, observed) if self.is_gp else None
        if config.acq_func == "gp_hedge":
            self.acq_funcs = list(HEDGE_ACQ_FUNCS)
        else:
            self.acq_funcs = [config.acq_func.removesuffix("ps")]
        self.lbfgs = (
            self.is_gp and config.acq_optimizer != "sampling" and not model_space.is_categorical
        )
        space = model_space.search_space
        self._keys: dict[int, Key] = {}
        self._grid_index: dict[Key, int] | None = None
        if space.size is not None and space.size <= N_POINTS:
            # Small finite space: score every free point exactly, no L-BFGS needed.
            grid = [k for k in space.iter_grid() if k not in excluded]
            self._keys = dict(enumerate(grid))
            self._grid_index = {k: i for i, k in enumerate(grid)}
            self.Xc = model_space.transform(grid) if grid else self.X[:0]
            self.lbfgs = False
        else:
            rs = np.random.RandomState(int(rng.integers(2**31 - 1)))
            self._values = model_space.sample_values(rs, N_POINTS)
            self.Xc = model_space.transform_values(self._values)
        self.free = np.ones(len(self.Xc), dtype=bool)

    # -- model -------------------------------------------------------------

    def _gp_kernel(self, names: list[str], observed: list[Key]) -> Any:
        """Kernel hyperparameters fitted on the checkpoint prefix (cached, recomputable)."""
        c = hyper_checkpoint(len(observed))
        signature = tuple(zip(names[:c], observed[:c], self.y[:c].tolist(), strict=True))
        cache_key = experiment_key(self.experiment)
        cached = _KERNELS.get(cache_key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        gp = make_estimator("GP", self.ms, _seed(self.experiment, self.config.random_state, 1, c))
        rows = np.unique(np.linspace(0, c - 1, min(c, HYPER_MAX_POINTS)).round().astype(int))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit(self.X[rows], self.y[rows])
        kernel = fitted_kernel(gp)
        _KERNELS.put(cache_key, (signature, kernel))
        return kernel

    def _fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.is_gp:
                return gp_with_kernel(self.kernel, X, y)
            seed = _seed(self.experiment, self.config.random_state, 2, len(self.y))
            return make_estimator(self.config.base_estimator, self.ms, seed).fit(X, y)

    def _predict(self, model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.is_gp:
            return predict(model, X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu, std = model.predict(X, return_std=True)
        return np.asarray(mu, dtype=float), np.asarray(std, dtype=float)

    # -- candidates ------------------------------------------------------------

    def _key(self, i: int) -> Key:
        key = self._keys.get(i)
        if key is None:
            key = self._keys[i] = self.ms.keys_from_values([self._values[i]])[0]
        return key

    def _best_free(self, values: np.ndarray) -> list[int]:
        """Up to N_RESTARTS free candidates, best first (used points found on the way
        are marked taken)."""
        masked = np.where(self.free, values, np.inf)
        best: list[int] = []
        for i in np.argsort(masked, kind="stable").tolist():
            if masked[i] == np.inf or len(best) == N_RESTARTS:
                break
            if self._key(i) in self.excluded:
                self.free[i] = False
                continue
            best.append(i)
        return best

    def _take(self, key: Key) -> None:
        self.excluded.add(key)
        if self._grid_index is not None and key in self._grid_index:
            self.free[self._grid_index[key]] = False

    # -- proposals -----------------------------------------------------------

    def propose(self, count: int, pending: list[Key]) -> list[Key]:
        """`count` new keys, each chosen after lying about the pending ones."""
        lies = self.ms.transform(pending) if pending else self.X[:0]
        out: list[Key] = []
        for i in range(count):
            X = np.vstack([self.X, lies])
            y = np.concatenate([self.y, np.full(len(lies), self.lie)])
            model = self._fit(X, y)
            if i == 0:
                self._update_gains(model)
            key = self._next(model, float(y.min()), record=i == 0)
            if key is None:
                fallback = self.ms.search_space.sample_unique(self.rng, 1, self.excluded)
                if not fallback:
                    break
                key = fallback[0]
            out.append(key)
            self._take(key)
            lies = np.vstack([lies, self.ms.transform([key])])
        return out

    def _update_gains(self, model: Any) -> None:
        """skopt's tell: gains -= the new model's prediction at the last proposals."""
        hedge = self.hedge
        if hedge is None or hedge.proposals is None:
            return
        if hedge.proposals.shape[1] != self.X.shape[1]:
            hedge.gains = np.zeros(len(HEDGE_ACQ_FUNCS))  # another space: start afresh
            return
        predicted, _ = self._predict(model, hedge.proposals)
        hedge.gains = hedge.gains - predicted

    def _next(self, model: Any, y_opt: float, record: bool = False) -> Key | None:
        mu, std = self._predict(model, self.Xc)
        proposals: list[Key] = []
        for acq in self.acq_funcs:
            best = self._best_free(acquisition(acq, mu, std, y_opt))
            if not best:
                return None
            key = self._lbfgs(model, acq, y_opt, best) if self.lbfgs else None
            proposals.append(key if key is not None else self._key(best[0]))
        if len(proposals) == 1:
            return proposals[0]
        if self.hedge is None:
            gains = np.zeros(len(proposals))
        else:
            gains = self.hedge.gains
            if record:
                self.hedge.proposals = self.ms.transform(proposals)
        logits = gains - np.max(gains)
        probs = np.exp(ETA * logits)
        return proposals[int(self.rng.choice(len(proposals), p=probs / probs.sum()))]

    def _lbfgs(self, model: Any, acq: str, y_opt: float, starts: list[int]) -> Key | None:
        """skopt's refinement: L-BFGS from the best free candidates; None if it lands on a
        used point."""
        bounds = np.asarray(self.ms.bounds, dtype=float)
        best: tuple[float, np.ndarray] | None = None
        for i in starts:
            x, f, _ = fmin_l_bfgs_b(
                acquisition_and_gradient, self.Xc[i], args=(model, y_opt, acq),
                bounds=bounds, approx_grad=False, maxiter=LBFGS_MAXITER,
            )
            if best is None or float(f) < best[0]:
                best = (float(f), x)
        if best is None:
            return None
        x = np.clip(best[1], bounds[:, 0], bounds[:, 1])
        key = self.ms.keys_from_transformed(x)[0]
        return None if key in self.excluded else key
