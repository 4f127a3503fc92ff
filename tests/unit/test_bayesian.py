"""Bayesian optimisation: settings, scales per distribution, lies, estimators, caching."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from skopt.acquisition import gaussian_acquisition_1D
from skopt.space import Real
from threadpoolctl import threadpool_info

from katib.errors import InvalidArgumentError, SearchSpaceExhaustedError
from katib.testing.algorithm_histories import distribution_specs
from katib.testing.algorithms import check_point, make_experiment, tiny_specs
from suggestion_services import bayesian
from suggestion_services.base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.bayesian import BayesianOptimization, hyper_checkpoint
from suggestion_services.bayesian_gp import (
    acquisition,
    acquisition_and_gradient,
    fitted_kernel,
    gp_with_kernel,
    predict,
)
from suggestion_services.bayesian_space import ModelSpace, ShimmedGBRT, make_estimator
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.random_search import RandomSearch
from suggestion_services.search_space import ParameterSpec, SearchSpace

BO = "bayesianoptimization"
SQUARE = [ParameterSpec("x", "double", "-1", "1"), ParameterSpec("y", "double", "-1", "1")]


def quadratic(point: dict[str, str]) -> float:
    """Minimum 0 at (0.3, -0.2)."""
    return (float(point["x"]) - 0.3) ** 2 + (float(point["y"]) + 0.2) ** 2


def suggest(exp: ExperimentInfo, history: list[TrialRecord], n: int) -> list[dict[str, str]]:
    return [s.assignments for s in BayesianOptimization().suggest(exp, history, n)]


def scored(points: list[dict[str, str]], start: int, sign: float = -1.0) -> list[TrialRecord]:
    """Succeeded trials whose value is sign * quadratic (maximised by default)."""
    return [TrialRecord(f"t{start + i}", p, TrialCondition.SUCCEEDED, sign * quadratic(p))
            for i, p in enumerate(points)]


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_estimator": "SVR"}, "base_estimator SVR is not supported in Bayesian optimization"),
        ({"acq_func": "MES"}, "acq_func MES is not supported in Bayesian optimization"),
        ({"acq_optimizer": "adam"}, "acq_optimizer adam is not supported in Bayesian optimization"),
        ({"n_initial_points": "-1"}, "n_initial_points should be great or equal than zero"),
        ({"n_initial_points": "x"}, "failed to validate n_initial_points(x)"),
        ({"random_state": "-3"}, "random_state should be great or equal than zero"),
        ({"kappa": "1"}, "unknown setting kappa for algorithm bayesianoptimization"),
        ({"base_estimator": "RF", "acq_optimizer": "lbfgs"},
         "acq_optimizer lbfgs is not supported with base_estimator RF"),
        ({"gp_hedge_gains": "1,2"}, "gp_hedge_gains (1,2) must be 3 comma-separated finite"),
        ({"gp_hedge_gains": "1,nan,2"}, "gp_hedge_gains (1,nan,2) must be 3"),
        ({"gp_hedge_proposals": "[[0.1], [0.2, 0.3], [0.4]]"},
         "gp_hedge_proposals must be a JSON list of 3 points of equal length"),
        ({"gp_hedge_proposals": "{"}, "gp_hedge_proposals must be a JSON list"),
    ],
)
def test_settings_messages(settings: dict[str, str], message: str) -> None:
    exp = make_experiment(BO, SQUARE, settings)
    with pytest.raises(InvalidArgumentError) as info:
        BayesianOptimization().validate_settings(exp)
    assert message in str(info.value)
    with pytest.raises(InvalidArgumentError):
        BayesianOptimization().suggest(exp, [], 1)


def test_every_katib_value_is_accepted() -> None:
    values = {
        "base_estimator": ["GP", "RF", "ET", "GBRT"],
        "acq_func": ["gp_hedge", "LCB", "EI", "PI", "EIps", "PIps"],
        "acq_optimizer": ["auto", "sampling", "lbfgs"],
        "n_initial_points": ["0", "10"],
    }
    for key, options in values.items():
        for value in options:
            BayesianOptimization().validate_settings(make_experiment(BO, SQUARE, {key: value}))


# -- scales ---------------------------------------------------------------------------


def test_model_scale_follows_the_declared_distribution() -> None:
    """Katib forces log-uniform on every double; here only log distributions get it."""
    space = SearchSpace.from_specs([
        ParameterSpec("neg", "double", "-5", "5"),
        ParameterSpec("normal", "double", "-2", "3", distribution="normal"),
        ParameterSpec("lu", "double", "0.0001", "1", distribution="logUniform"),
        ParameterSpec("ln", "double", "0.001", "10", distribution="logNormal"),
        ParameterSpec("lustep", "int", "1", "1024", distribution="logUniform"),
        ParameterSpec("k", "int", "-5", "20", "5"),
        ParameterSpec("fixed", "double", "0.5", "0.5"),
        ParameterSpec("c", "categorical", list=("a", "b", "c")),
    ])
    ms = ModelSpace(space, normalize=True)
    assert [d.parameter.name for d in ms.dims] == ["neg", "normal", "lu", "ln", "lustep", "k", "c"]
    assert ms.space is not None
    dims = ms.space.dimensions
    priors = [d.prior if isinstance(d, Real) else None for d in dims]
    assert priors == ["uniform", "uniform", "log-uniform", "log-uniform", "log-uniform", None, None]
    assert [d.kind for d in ms.dims] == ["real", "real", "real", "real", "snap", "index",
                                        "category"]
    # Round trip: a key survives transform → inverse transform.
    key = space.key_of({"neg": "-4.5", "normal": "2.5", "lu": "0.001", "ln": "7", "lustep": "64",
                        "k": "10", "fixed": "0.5", "c": "b"})
    assert ms.keys_from_transformed(ms.transform([key])[0]) == [key]


def test_negative_range_double_is_optimised_on_a_linear_scale() -> None:
    """A uniform double over [-5, 5] (NaN in Katib's skopt) is modelled and explored."""
    specs = [ParameterSpec("shift", "double", "-5", "5")]
    exp = make_experiment(BO, specs, {"random_state": "3", "n_initial_points": "4"})
    history: list[TrialRecord] = []
    for _ in range(3):
        points = suggest(exp, history, 3)
        for p in points:
            check_point(specs, p)
        history += [TrialRecord(f"t{len(history) + i}", p, TrialCondition.SUCCEEDED,
                                -(float(p["shift"]) + 3.0) ** 2)
                    for i, p in enumerate(points)]
    values = [float(t.assignments["shift"]) for t in history]
    assert min(values) < 0 < max(values)
    assert max(t.objective_value or -99 for t in history) > -0.5  # found the optimum near -3


def test_initial_points_follow_the_declared_distribution() -> None:
    specs = [ParameterSpec("lu", "double", "0.0001", "1", distribution="logUniform"),
             ParameterSpec("nm", "double", "0", "12", distribution="normal")]
    exp = make_experiment(BO, specs, {"random_state": "1", "n_initial_points": "400"})
    points = suggest(exp, [], 400)
    lu = np.array([float(p["lu"]) for p in points])
    nm = np.array([float(p["nm"]) for p in points])
    assert 1e-3 < np.median(lu) < 1e-1  # log scale: median near 1e-2, not 0.5
    assert 1.5 < nm.std() < 2.5  # sigma (max-min)/6 = 2, not uniform's 3.46
    assert lu.min() >= 0.0001 and lu.max() <= 1 and nm.min() >= 0 and nm.max() <= 12


@pytest.mark.parametrize("finite", [False, True])
def test_every_distribution_in_bounds_after_the_model_takes_over(finite: bool) -> None:
    specs = distribution_specs(finite)
    exp = make_experiment(BO, specs, {"random_state": "5", "n_initial_points": "3"})
    history: list[TrialRecord] = []
    for _ in range(3):
        points = suggest(exp, history, 4)
        assert len(points) == 4
        for p in points:
            check_point(specs, p)
        history += [TrialRecord(f"t{len(history) + i}", p, TrialCondition.SUCCEEDED,
                                float(i % 3)) for i, p in enumerate(points)]


# -- search ---------------------------------------------------------------------------


def best_after(points_per_round: list[int], exp: ExperimentInfo, random: bool) -> float:
    history: list[TrialRecord] = []
    for n in points_per_round:
        algorithm = RandomSearch() if random else BayesianOptimization()
        points = [s.assignments for s in algorithm.suggest(exp, history, n)]
        history += scored(points, len(history))
    return min(quadratic(dict(t.assignments)) for t in history)


def test_beats_random_search_on_a_quadratic() -> None:
    rounds = [5, 3, 3, 3, 3, 3]  # 20 trials: 5 random, then batches of 3
    bo = best_after(rounds, make_experiment(BO, SQUARE, {"random_state": "0",
                                                         "n_initial_points": "5"}), False)
    randoms = [best_after(rounds, make_experiment("random", SQUARE, {"random_state": str(s)}),
                          True) for s in range(3)]
    assert bo < 0.01, bo
    assert bo < min(randoms) / 3, (bo, randoms)


def test_minimize_is_not_negated() -> None:
    exp = replace(make_experiment(BO, SQUARE, {"random_state": "2", "n_initial_points": "5"}),
                  objective_type=ObjectiveType.MINIMIZE)
    history: list[TrialRecord] = []
    for n in [5, 3, 3, 3]:
        history += scored(suggest(exp, history, n), len(history), sign=1.0)
    assert min(quadratic(dict(t.assignments)) for t in history[5:]) < 0.05


@pytest.mark.parametrize(
    "settings",
    [
        {"base_estimator": "RF"},
        {"base_estimator": "ET"},
        {"base_estimator": "GBRT"},
        {"acq_func": "EI", "acq_optimizer": "sampling"},
        {"acq_func": "LCB"},
        {"acq_func": "PI", "acq_optimizer": "lbfgs"},
        {"acq_func": "PIps", "base_estimator": "ET"},
    ],
)
def test_estimators_and_acquisitions_give_distinct_valid_batches(settings: dict[str, str]
                                                                 ) -> None:
    exp = make_experiment(BO, SQUARE, {"random_state": "4", "n_initial_points": "4", **settings})
    history = scored(suggest(exp, [], 6), 0)
    batch = suggest(exp, history, 3)
    assert len({tuple(p.values()) for p in batch}) == 3
    assert not {tuple(p.values()) for p in batch} & {tuple(t.assignments.values())
                                                     for t in history}
    for p in batch:
        check_point(SQUARE, p)


def test_eips_is_ei_with_unit_times() -> None:
    base = {"random_state": "6", "n_initial_points": "3"}
    ei = make_experiment(BO, SQUARE, {**base, "acq_func": "EI"})
    eips = replace(ei, settings={**base, "acq_func": "EIps"})
    history = scored(suggest(ei, [], 5), 0)
    assert suggest(ei, history, 2) == suggest(eips, history, 2)


def test_gbrt_shim_predicts_std_without_np_in1d() -> None:
    model = ShimmedGBRT(random_state=0).fit(np.linspace(0, 1, 30)[:, None],
                                            np.linspace(0, 1, 30) ** 2)
    mean, std = model.predict(np.array([[0.5]]), return_std=True)
    assert abs(mean[0] - 0.25) < 0.1 and std[0] >= 0
    assert model.__sklearn_tags__().estimator_type == "regressor"


def test_pending_trials_are_lied_about_not_repeated() -> None:
    exp = make_experiment(BO, SQUARE, {"random_state": "8", "n_initial_points": "3"})
    history = scored(suggest(exp, [], 4), 0)
    first = suggest(exp, history, 1)[0]
    running = [*history, TrialRecord("running", first, TrialCondition.RUNNING)]
    second = suggest(exp, running, 1)[0]
    assert second != first
    assert math.dist([float(v) for v in first.values()], [float(v) for v in second.values()]) > 0


def test_failed_and_nan_trials_do_not_feed_the_model() -> None:
    exp = make_experiment(BO, SQUARE, {"random_state": "9", "n_initial_points": "2"})
    history = scored(suggest(exp, [], 4), 0)
    noisy = [*history,
             TrialRecord("nan", {"x": "0.1", "y": "0.1"}, TrialCondition.SUCCEEDED, math.nan),
             TrialRecord("failed", {"x": "0.2", "y": "0.2"}, TrialCondition.FAILED, 5.0)]
    points = suggest(exp, noisy, 2)
    for p in points:
        check_point(SQUARE, p)
    # The extra trials only move the random stream (history length), not the model.
    assert len(points) == 2


def test_finite_space_never_repeats_and_exhausts() -> None:
    specs = tiny_specs()
    exp = make_experiment(BO, specs, {"random_state": "1", "n_initial_points": "2"})
    history: list[TrialRecord] = []
    while len(history) < 6:
        points = suggest(exp, history, 4)
        assert len(points) == min(4, 6 - len(history))
        history += [TrialRecord(f"t{len(history) + i}", p, TrialCondition.SUCCEEDED, float(i))
                    for i, p in enumerate(points)]
    assert len({tuple(t.assignments.values()) for t in history}) == 6
    with pytest.raises(SearchSpaceExhaustedError, match="all 6 points"):
        suggest(exp, history, 1)


# -- GP arithmetic and the kernel cache ------------------------------------------------


def test_hyper_checkpoints() -> None:
    assert [hyper_checkpoint(n) for n in (0, 1, 40, 47, 48, 57, 58, 500)] == [
        0, 1, 40, 40, 48, 48, 58, 444]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fast_gp_formulas_match_skopt() -> None:
    space = SearchSpace.from_specs(SQUARE)
    ms = ModelSpace(space, normalize=True)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (25, 2))
    y = ((X - 0.4) ** 2).sum(axis=1) + rng.normal(0, 0.05, 25)  # noise: a well-posed K
    gp = make_estimator("GP", ms, 1).set_params(n_restarts_optimizer=0).fit(X, y)
    model = gp_with_kernel(fitted_kernel(gp), X, y)
    np.testing.assert_allclose(model.kernel_.k1.theta, gp.kernel_.k1.theta)
    assert model.noise_ == gp.noise_
    grid = rng.uniform(0, 1, (50, 2))
    mu, std = predict(model, grid)
    mu_ref, std_ref = model.predict(grid, return_std=True)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, std_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(mu, gp.predict(grid), rtol=1e-6, atol=1e-8)
    y_opt = float(y.min())
    for acq in ("EI", "PI", "LCB"):
        for x in grid[:5]:
            value, grad = acquisition_and_gradient(x, model, y_opt, acq)
            ref_value, ref_grad = gaussian_acquisition_1D(x, model, y_opt, acq)
            np.testing.assert_allclose(value, ref_value, rtol=1e-6, atol=1e-10)
            np.testing.assert_allclose(grad, np.ravel(ref_grad), rtol=1e-5, atol=1e-8)
        ref = [float(np.ravel(gaussian_acquisition_1D(x, model, y_opt, acq,
                                                      return_grad=False))[0]) for x in grid]
        np.testing.assert_allclose(acquisition(acq, mu, std, y_opt), ref, rtol=1e-6, atol=1e-10)


def test_kernel_checkpoint_cache_gives_the_cold_answer() -> None:
    """Past 40 observed trials the kernel is cached; warm, edited and cold calls agree."""
    exp = make_experiment(BO, SQUARE, {"random_state": "11"})
    rng = np.random.default_rng(1)
    points = [{"x": repr(round(a, 6)), "y": repr(round(b, 6))}
              for a, b in rng.uniform(-1, 1, (44, 2)).tolist()]
    history = scored(points, 0)
    warm = suggest(exp, history, 2)
    assert suggest(exp, history, 2) == warm
    clear_all_caches()
    assert suggest(exp, history, 2) == warm
    edited = [replace(history[0], objective_value=5.0), *history[1:]]
    warm_edited = suggest(exp, edited, 2)
    clear_all_caches()
    assert suggest(exp, edited, 2) == warm_edited
    assert warm_edited != warm


def test_singular_model_falls_back_to_random_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def singular(*args: object) -> None:
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(bayesian, "gp_with_kernel", singular)
    exp = make_experiment(BO, SQUARE, {"random_state": "12", "n_initial_points": "2"})
    history = scored(suggest(exp, [], 3), 0)
    points = suggest(exp, history, 3)
    assert len({tuple(p.values()) for p in points}) == 3
    for p in points:
        check_point(SQUARE, p)


def test_blas_limit_is_restored_after_overlapping_calls() -> None:
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    limit = bayesian._ONE_BLAS_THREAD
    with limit:
        with limit:  # a second request in another thread
            pass
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


# -- gp_hedge state ----------------------------------------------------------------------


def _hedge_run(calls: int, restart_at: int | None = None) -> tuple[list[dict[str, str]],
                                                                   list[dict[str, str]]]:
    """Sequential calls feeding the echoed settings back, as the controller does."""
    exp = make_experiment(BO, SQUARE, {"random_state": "4", "n_initial_points": "4"})
    history: list[TrialRecord] = []
    points, settings_seen = [], []
    for i in range(calls):
        if i == restart_at:
            clear_all_caches()  # a freshly started service: only the request counts
        result = BayesianOptimization().suggest_with_settings(exp, history, 1)
        (point,) = [s.assignments for s in result.suggestions]
        points.append(point)
        settings_seen.append(result.settings)
        exp = replace(exp, settings={**exp.settings, **result.settings})
        history += scored([point], i)
    return points, settings_seen


def test_hedge_gains_accumulate_in_the_echoed_settings() -> None:
    points, settings = _hedge_run(8)
    # Random phase: the settings are echoed unchanged.
    assert all("gp_hedge_gains" not in s for s in settings[:4])
    first, *rest = settings[4:]
    assert first["gp_hedge_gains"] == "0.0,0.0,0.0"  # nothing to learn from yet
    assert len(bayesian._parse_proposals(first["gp_hedge_proposals"])) == 3
    gains = [bayesian._parse_gains(s["gp_hedge_gains"]) for s in rest]
    # Each call subtracts the model's prediction (of a maximised objective, negated: the
    # quadratic >= 0) at the three proposals: every gain moves, calls differ.
    assert all(g != (0.0, 0.0, 0.0) for g in gains)
    assert len(set(gains)) == len(gains)
    assert all(check_point(SQUARE, p) is None for p in points)


def test_hedge_state_survives_a_service_restart() -> None:
    assert _hedge_run(8) == _hedge_run(8, restart_at=6)


def test_hedge_prefers_the_acquisition_with_the_largest_gains() -> None:
    exp = make_experiment(BO, SQUARE, {"random_state": "1", "n_initial_points": "3"})
    history = scored([{"x": "0.9", "y": "0.9"}, {"x": "-0.5", "y": "0.1"},
                      {"x": "0.2", "y": "-0.6"}, {"x": "0.6", "y": "-0.3"}], 0)
    picks = []
    for gains in ("1000,0,0", "0,1000,0", "0,0,1000"):
        settings = {**exp.settings, "gp_hedge_gains": gains}
        result = BayesianOptimization().suggest_with_settings(
            replace(exp, settings=settings), history, 1)
        picks.append(result.suggestions[0].assignments)
        state = bayesian._parse_proposals(result.settings["gp_hedge_proposals"])
        chosen = bayesian._parse_gains(gains).index(1000.0)
        ms = bayesian.ModelSpace(exp.search_space, normalize=True)
        key = exp.search_space.key_of(picks[-1])
        assert np.allclose(ms.transform([key])[0], state[chosen], atol=1e-9)
    assert picks[0] != picks[1] or picks[1] != picks[2]
