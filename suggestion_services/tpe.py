"""Tree-structured Parzen Estimator: Katib's `tpe` and `multivariate-tpe`.

Both run optuna's TPE model (kernels from optuna's Parzen estimator, optuna's
split of the history into good and bad trials, its constant liar) driven
statelessly from the request's history; see bench/tpe_choice.py for why optuna
and not hyperopt, and `TPE` for the behaviour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
import optuna
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import default_gamma, default_weights

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    ObjectiveType,
    SettingParser,
    Suggestion,
    TrialRecord,
)
from .experiment_cache import ExperimentCache, experiment_key
from .history import make_rng
from .model_space import Dim, ModelSpace
from .observations import History, Snapshot, UsedKeys
from .parzen import Parzen
from .search_space import Key

optuna.logging.set_verbosity(logging.WARNING)

#: Rounds of fresh candidates tried before a point already taken falls back to random.
_PICK_ROUNDS = 4
#: hyperopt caps the number of "good" trials at 25 (its linear_forgetting), as optuna does.
_GAMMA_CAP = 25
#: Upper bound on n_ei_candidates (Katib has none): memory grows with candidates x trials.
_MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class TPEConfig:
    """Parsed settings with optuna's defaults (n_startup_trials 10, 24 candidates)."""

    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    gamma: float | None = None  # hyperopt's gamma; None: optuna's min(ceil(0.1 n), 25)
    prior_weight: float = 1.0
    random_state: int | None = None

    def n_below(self, n_observed: int) -> int:
        """How many of the best trials form the "good" density l(x)."""
        if self.gamma is None:
            return int(default_gamma(n_observed))
        return min(math.ceil(self.gamma * math.sqrt(n_observed)), _GAMMA_CAP)


def _conversion(name: str, value: str, convert: Callable[[str], float]) -> float:
    try:
        return convert(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"failed to validate {name}({value}): {exc}") from None


def _gamma(value: str) -> float:
    gamma = _conversion("gamma", value, float)
    if not 0 < gamma < 1:
        raise InvalidArgumentError("gamma should be in the range of (0, 1)")
    return gamma


def _prior_weight(value: str) -> float:
    weight = _conversion("prior_weight", value, float)
    if not weight > 0:
        raise InvalidArgumentError("prior_weight should be great than zero")
    if not math.isfinite(weight):
        raise InvalidArgumentError(f"prior_weight should be a finite number, got {value}")
    return weight


def _candidates_bound(name: str, number: int) -> int:
    """A rule Katib lacks: the candidates x kernels matrix must fit in memory."""
    if number > _MAX_CANDIDATES:
        raise InvalidArgumentError(f"{name} should be at most {_MAX_CANDIDATES}, got {number}")
    return number


def _n_ei_candidates_hyperopt(value: str) -> int:
    number = int(_conversion("n_EI_candidates", value, int))
    if not number > 0:
        raise InvalidArgumentError("n_EI_candidates should be great than zero")
    return _candidates_bound("n_EI_candidates", number)


def _at_least_zero(name: str, spelling: str, value: str) -> int:
    number = int(_conversion(name, value, int))
    if number < 0:
        raise InvalidArgumentError(f"{name} should be {spelling} or equal than zero")
    return number


def _int_at_least_zero(name: str, spelling: str) -> SettingParser:
    """An int >= 0 with the message of the Katib service the setting comes from."""
    return partial(_at_least_zero, name, spelling)


def _n_ei_candidates_optuna(value: str) -> int:
    """Katib's optuna service accepts 0 and then fails at the first model-based
    suggestion; here 0 is rejected up front."""
    number = _at_least_zero("n_ei_candidates", "greate", value)
    if number == 0:
        raise InvalidArgumentError("n_ei_candidates should be greater than zero")
    return _candidates_bound("n_ei_candidates", number)


class TPE(BaseAlgorithm):
    """Katib's `tpe`: independent TPE (one density per parameter), optuna's model.

    Settings: the union of Katib's hyperopt service (gamma in (0, 1), prior_weight
    > 0, n_EI_candidates > 0, random_state >= 0; hyperopt's messages) and its optuna
    service (n_startup_trials, n_ei_candidates, random_state: ints >= 0, optuna's
    "greate" messages). gamma keeps hyperopt's meaning: the best
    min(ceil(gamma * sqrt(n)), 25) trials are "good"; without it optuna's
    min(ceil(0.1 n), 25) applies. random_state uses the spelling of the service
    Katib routes the algorithm to (hyperopt for tpe, optuna for multivariate-tpe).

    Behaviour:
    * Only Succeeded/EarlyStopped trials with a (non-NaN) value feed the model; the
      first n_startup_trials suggestions are random draws from the declared
      distributions. Values outside the space are ignored per parameter.
    * Constant liar (as optuna's): Created/Running trials of the history and the
      points already chosen in the same batch join the "bad" density, so a batch
      spreads out instead of repeating the best candidate.
    * Distributions: uniform/logUniform set the scale the kernels work on (linear
      or log). normal/logNormal are priors: random draws follow them (clipped to
      [min, max]) and the prior kernel of the model is N((min+max)/2, (max-min)/6)
      on the linear/log scale, so with little data suggestions stay near the
      centre, while observed trials can pull them anywhere in [min, max]. Every
      kernel is truncated to [min, max]; steps and ints are modelled as grids
      (see model_space.ModelSpace), categorical and discrete as categories.
    * No point of the history or of the batch is suggested again: a taken
      candidate gives way to the next best one, then to a random free point;
      an exhausted finite space raises SearchSpaceExhaustedError.
    * Deterministic: the random stream depends only on random_state (or the
      experiment name) and the history length. The parsed history is cached per
      experiment (observations.History) and checked against every request, as is
      the last fit of the good trials (reused only for the very same rows), so a
      warm and a fresh process answer the same request identically.
    """

    name: ClassVar[str] = "tpe"
    multivariate: ClassVar[bool] = False
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        "gamma": _gamma,
        "prior_weight": _prior_weight,
        "n_EI_candidates": _n_ei_candidates_hyperopt,
        "random_state": _int_at_least_zero("random_state", "great"),
        "n_startup_trials": _int_at_least_zero("n_startup_trials", "greate"),
        "n_ei_candidates": _n_ei_candidates_optuna,
    }

    _cache: ClassVar[ExperimentCache[_State]] = ExperimentCache(max_entries=32)

    def config(self, experiment: ExperimentInfo) -> TPEConfig:
        """Validate the settings and build the configuration."""
        settings = self.parse_settings(experiment)
        hyperopt_n = settings.get("n_EI_candidates")
        optuna_n = settings.get("n_ei_candidates")
        if hyperopt_n is not None and optuna_n is not None and hyperopt_n != optuna_n:
            raise InvalidArgumentError(
                f"n_EI_candidates ({hyperopt_n}) and n_ei_candidates ({optuna_n}) disagree; "
                "set only one of them"
            )
        n_candidates = optuna_n if optuna_n is not None else hyperopt_n
        random_state = settings.get("random_state")
        startup = settings.get("n_startup_trials")
        gamma = settings.get("gamma")
        prior_weight = settings.get("prior_weight")
        return TPEConfig(
            n_startup_trials=startup if isinstance(startup, int) else 10,
            n_ei_candidates=n_candidates if isinstance(n_candidates, int) else 24,
            gamma=gamma if isinstance(gamma, float) else None,
            prior_weight=prior_weight if isinstance(prior_weight, float) else 1.0,
            random_state=random_state if isinstance(random_state, int) else None,
        )

    def validate_settings(self, experiment: ExperimentInfo) -> None:
        self.config(experiment)

    def suggest(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int
    ) -> list[Suggestion]:
        """n new points: random during start-up, then the best of the TPE candidates."""
        config = self.config(experiment)
        if n <= 0:
            return []
        state = self._state(experiment)
        history = state.history
        with history.lock:
            snapshot = history.update(trials)
            space = experiment.search_space
            size = space.size
            if size is not None and snapshot.covered >= size:
                raise SearchSpaceExhaustedError(
                    f"{self.name} search space exhausted: all {size} points have been suggested"
                )
            rng = make_rng(experiment, trials, config.random_state)
            if len(snapshot.losses) < config.n_startup_trials or history.model.width == 0:
                keys = space.sample_unique(rng, n, snapshot.used)
            else:
                sampler = _Sampler(history.model, snapshot, config, self.multivariate, state.below)
                keys = sampler.run(rng, n)
        return [Suggestion(space.format(k)) for k in keys]

    def _state(self, experiment: ExperimentInfo) -> _State:
        key = experiment_key(experiment)
        state = self._cache.get(key)
        if state is None:
            maximize = experiment.objective_type is ObjectiveType.MAXIMIZE
            state = _State(History(ModelSpace(experiment.search_space), maximize))
            self._cache.put(key, state)
        return state


class MultivariateTPE(TPE):
    """Katib's `multivariate-tpe`: one joint density over all parameters (optuna's
    multivariate TPE), otherwise exactly as `TPE` (settings, priors, constant liar).

    Only trials with a usable value for every parameter feed the joint model.
    """

    name: ClassVar[str] = "multivariate-tpe"
    multivariate: ClassVar[bool] = True
    settings_schema: ClassVar[dict[str, SettingParser]] = {
        **TPE.settings_schema,
        "random_state": _int_at_least_zero("random_state", "greate"),
    }


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
class _State:
    """What TPE keeps per experiment (under `history.lock`): the parsed history and
    the last good-trial fit; both are accelerators checked against each request."""

    history: History
    below: _BelowFits = field(default_factory=_BelowFits)


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
        self.parameters = _ParzenEstimatorParameters(
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

    def _fit(self, rows: np.ndarray) -> list[tuple[Parzen, list[int]]]:
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
