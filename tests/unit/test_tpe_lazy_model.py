"""TPE's model phase is imported only when needed (or by the warm-up hook).

The service prints its listening line once `suggestion_services.tpe` is imported;
the model phase, `suggestion_services.tpe_model`, needs numpy only (neither optuna nor
scipy: their imports would stall a new service's first model-based suggestion), and
the random start-up draws and the settings checks do without it. The start-up draws skip the
parsed History, so they are checked here against the model phase's own random
branch (the code they replace) on the same requests.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from katib.testing.algorithm_histories import (
    distribution_specs,
    finished,
    sampled_points,
    small_finite_specs,
)
from katib.testing.algorithms import make_experiment, realistic_specs
from suggestion_services.base import BaseAlgorithm, TrialCondition, TrialRecord
from suggestion_services.experiment_cache import ExperimentCache, clear_all_caches
from suggestion_services.registry import ALGORITHMS
from suggestion_services.search_space import ParameterSpec
from suggestion_services.tpe import TPE, MultivariateTPE

SPECS = [ParameterSpec("x", "double", "0", "1"), ParameterSpec("n", "int", "1", "6")]


def _run_fresh(code: str) -> dict[str, object]:
    """Run `code` in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_settings_and_start_up_draws_import_neither_optuna_nor_scipy() -> None:
    result = _run_fresh("""
        import json, sys
        import suggestion_services.server
        from katib.errors import InvalidArgumentError
        from katib.testing.algorithms import make_experiment
        from suggestion_services.base import TrialCondition, TrialRecord
        from suggestion_services.registry import get_algorithm
        from suggestion_services.search_space import ParameterSpec

        specs = [ParameterSpec("x", "double", "0", "1"), ParameterSpec("n", "int", "1", "6")]
        heavy = lambda: sorted(m for m in ("optuna", "scipy", "suggestion_services.tpe_model")
                               if m in sys.modules)
        out = {}
        histories = {}
        for name in ("tpe", "multivariate-tpe"):
            tpe = get_algorithm(name)()
            exp = make_experiment(name, specs, {"random_state": "1", "n_startup_trials": "3"})
            tpe.validate_settings(exp)
            try:
                tpe.validate_settings(make_experiment(name, specs, {"gamma": "2"}))
            except InvalidArgumentError as exc:
                out[name + " error"] = str(exc)
            history = histories[name] = []
            for i in range(3):  # start-up: fewer than 3 observed trials
                (s,) = tpe.suggest(exp, history, 1)
                history.append(TrialRecord(f"t{i}", s.assignments, TrialCondition.SUCCEEDED, i))
        out["start-up"] = heavy()
        for name, history in histories.items():  # 3 observed trials: the model phase
            exp = make_experiment(name, specs, {"random_state": "1", "n_startup_trials": "3"})
            out[name + " model"] = len(get_algorithm(name)().suggest(exp, history, 2))
        out["after model"] = heavy()
        print(json.dumps(out))
    """)
    assert result["start-up"] == []
    assert result["tpe error"] == result["multivariate-tpe error"] == (
        "gamma should be in the range of (0, 1)")
    assert result["tpe model"] == result["multivariate-tpe model"] == 2
    # The model phase is numpy only (suggestion_services.parzen_types, .normal).
    assert result["after model"] == ["suggestion_services.tpe_model"]


def test_warm_up_imports_the_model_phase_and_defaults_to_nothing() -> None:
    result = _run_fresh("""
        import json, sys
        from suggestion_services.registry import get_algorithm
        from suggestion_services.base import BaseAlgorithm
        before = "optuna" in sys.modules
        assert BaseAlgorithm.warm_up() is None
        get_algorithm("multivariate-tpe").warm_up()
        print(json.dumps({"before": before, "model": "suggestion_services.tpe_model" in sys.modules,
                          "scipy": "scipy.special" in sys.modules}))
    """)
    assert result == {"before": False, "model": True, "scipy": False}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_answers_the_same_after_its_warm_up(name: str) -> None:
    """warm_up exists everywhere (a no-op by default) and changes no answer."""
    cls: type[BaseAlgorithm] = ALGORITHMS[name]
    specs = realistic_specs(cls.requires_finite_space)
    settings = {"random_state": "3"} if "random_state" in cls.settings_schema else {}
    if name == "hyperband":  # it needs a resource parameter; its brackets start empty
        specs = [*specs, ParameterSpec("epochs", "int", "1", "9")]
        settings = {**settings, "r_l": "9", "resource_name": "epochs"}
    exp = make_experiment(name, specs, settings, name="warm-up")
    space = exp.search_space
    history = [] if name == "hyperband" else [
        finished(TrialRecord(f"h{i}", p, TrialCondition.RUNNING), i, space.specs, True)
        for i, p in enumerate(sampled_points(space, 12, seed=5))
    ]
    clear_all_caches()
    before = cls().suggest(exp, history, 2)
    assert cls.warm_up() is None
    clear_all_caches()
    assert cls().suggest(exp, history, 2) == before


def _histories(specs: list[ParameterSpec]) -> list[list[TrialRecord]]:
    """Start-up histories: growing, with pending, failed, NaN, foreign, duplicate names."""
    space = make_experiment("tpe", specs).search_space
    points = sampled_points(space, 14, seed=3)
    base: list[TrialRecord] = []
    for i, p in enumerate(points):
        condition = [TrialCondition.SUCCEEDED, TrialCondition.RUNNING, TrialCondition.FAILED,
                     TrialCondition.EARLY_STOPPED, TrialCondition.CREATED][i % 5]
        value = None if condition in (TrialCondition.RUNNING, TrialCondition.CREATED) else i / 7
        base.append(TrialRecord(f"t{i}", p, condition, value))
    nan = [replace(t, objective_value=math.nan) if t.objective_value is not None else t
           for t in base]
    foreign = [*base[:5], TrialRecord("user", {"x": "7", "n": "zz"}, TrialCondition.SUCCEEDED, 1.0)]
    duplicate = [*base[:6], replace(base[0], objective_value=0.5)]
    return [base[:k] for k in range(len(base) + 1)] + [nan, foreign, duplicate, base[::-1]]


@pytest.mark.parametrize("cls", [TPE, MultivariateTPE])
@pytest.mark.parametrize("specs", [SPECS, distribution_specs(True), small_finite_specs()],
                         ids=["continuous", "distributions", "small-finite"])
def test_start_up_draws_equal_the_model_phase_random_branch(
    cls: type[TPE], specs: list[ParameterSpec]
) -> None:
    """Below n_startup_trials, `suggest` (no History) == tpe_model.model_keys (History)."""
    from suggestion_services import tpe_model

    exp = make_experiment(cls.name, specs, {"random_state": "8", "n_startup_trials": "20"})
    config = cls().config(exp)
    cache: ExperimentCache[tpe_model.State] = ExperimentCache()
    compared = 0
    for history in _histories(specs):
        for n in (1, 3):
            try:
                ours = [s.assignments for s in cls().suggest(exp, history, n)]
            except Exception as exc:  # e.g. an exhausted finite space: the same error
                with pytest.raises(type(exc), match=str(exc)):
                    tpe_model.model_keys(cache, cls.name, exp, history, n, config,
                                         cls.multivariate)
                continue
            keys = tpe_model.model_keys(cache, cls.name, exp, history, n, config, cls.multivariate)
            assert ours == [exp.search_space.format(k) for k in keys]
            compared += 1
    assert compared >= 30
