"""Tree-structured Parzen Estimator: Katib's `tpe` and `multivariate-tpe`.

Both run optuna's TPE model (kernels from optuna's Parzen estimator, optuna's
split of the history into good and bad trials, its constant liar) driven
statelessly from the request's history; see bench/tpe_choice.py for why optuna
and not hyperopt, and `TPE` for the behaviour. The model phase lives in
suggestion_services.tpe_model, imported on first use (or by `TPE.warm_up`): this
module, settings checks and the random start-up draws do without it. Neither phase
imports optuna or scipy (see suggestion_services.parzen_types and .normal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError

from .base import (
    BaseAlgorithm,
    ExperimentInfo,
    SettingParser,
    Suggestion,
    TrialRecord,
)
from .experiment_cache import ExperimentCache
from .history import UsedKeyLog, make_rng, used_points
from .search_space import Key

if TYPE_CHECKING:  # the model phase: imported at run time on first use only
    from .tpe_model import State, _Sampler  # noqa: F401  (_Sampler: see __getattr__)

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
            # Called by the model phase only: parzen_types stays out of the service's start.
            from .parzen_types import default_gamma

            return default_gamma(n_observed)
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

    #: Per experiment: the parsed history and last fit of the model phase (tpe_model).
    _cache: ClassVar[ExperimentCache[State]] = ExperimentCache(max_entries=32)
    #: Per experiment: the history's used points, for the random start-up draws.
    _startup: ClassVar[ExperimentCache[UsedKeyLog]] = ExperimentCache(max_entries=32)

    @classmethod
    def warm_up(cls) -> None:
        """Import the model phase, which the start-up draws do without."""
        from . import tpe_model  # noqa: F401

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
        if _observed_fewer_than(trials, config.n_startup_trials):
            keys = self._startup_keys(experiment, trials, n, config)
        else:
            # Imported on first use; while the warm-up thread imports it, this waits.
            from . import tpe_model

            keys = tpe_model.model_keys(
                self._cache, self.name, experiment, trials, n, config, self.multivariate
            )
        space = experiment.search_space
        return [Suggestion(space.format(k)) for k in keys]

    def _startup_keys(
        self, experiment: ExperimentInfo, trials: Sequence[TrialRecord], n: int, config: TPEConfig
    ) -> list[Key]:
        """Random draws avoiding the history: what the model phase gives below
        n_startup_trials observed trials (same used points, same stream), without it."""
        space = experiment.search_space
        with used_points(self._startup, experiment, trials) as used:
            size = space.size
            if size is not None and used.covered >= size:
                raise SearchSpaceExhaustedError(
                    f"{self.name} search space exhausted: all {size} points have been suggested"
                )
            rng = make_rng(experiment, trials, config.random_state)
            return space.sample_unique(rng, n, used.keys)


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


def _observed_fewer_than(trials: Sequence[TrialRecord], count: int) -> bool:
    """Whether fewer than `count` trials could feed the model (observed, value not NaN),
    as the model phase counts them; stops at the count-th, so long histories stay cheap."""
    if count <= 0:
        return False
    seen = 0
    for t in trials:
        if t.observed and t.objective_value is not None and not math.isnan(t.objective_value):
            seen += 1
            if seen >= count:
                return False
    return True


def __getattr__(name: str) -> object:
    """The model phase's `_Sampler`, for code that imports it from here (tests);
    importing it imports the model phase."""
    if name == "_Sampler":
        from . import tpe_model

        return tpe_model._Sampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
