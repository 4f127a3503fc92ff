"""Optimisation quality: our algorithms next to the libraries they stand for, called directly.

    python bench/quality.py                                   # full run (~30 min on 2 cores)
    python bench/quality.py --seeds 3 --budget 50 --algorithms tpe,random

Problems (all minimised; regret = best value found - known optimum):

* branin   2-d, x1 in [-5, 10], x2 in [0, 15]; optimum 0.397887 (three minimisers).
* hartmann6  6-d in [0, 1]^6; optimum -3.322368.
* mixed    defined here, one parameter of each kind Katib has:
           x double in [-3, 3], n int in [1, 20], lr double logUniform in [1e-4, 1],
           c categorical in {a, b, c, d};
           f = (x - 1)^2 + 0.05 (n - 13)^2 + 0.5 (log10(lr) + 2)^2 + offset[c]
           with offset a=0.5, b=0, c=1, d=2; optimum 0 at x=1, n=13, lr=0.01, c=b.

Each run is sequential: one suggestion per call, the whole history passed each
time, one run of `--budget` evaluations giving the best value after budget/2 and
after budget. "ours" runs the suggestion_services algorithm class in-process (the
same code the gRPC service runs, without the transport) with random_state=seed.
Baselines call the library directly with the same seed and its own defaults:

* random   numpy Generator.uniform / integers / choice
* sobol    scipy.stats.qmc.Sobol(d, scramble=True, seed), point i for trial i
* tpe      optuna TPESampler(seed) and hyperopt tpe.suggest (fmin, rstate)
* multivariate-tpe  optuna TPESampler(seed, multivariate=True)
* bayesianoptimization  skopt Optimizer(GP, gp_hedge, n_initial_points=10), ask/tell
* cmaes    cmaes.CMA on [0, 1]^d (sigma 1/6, mean at the centre), ask/tell per
           generation; the categorical is drawn at random, as ours does

grid and hyperband are left out: grid needs steps on every double, hyperband a
resource parameter. Runs are spread over `--jobs` processes.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

# One BLAS thread per worker: the runs themselves are spread over the cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread limits above)

Point = dict[str, Any]  # typed values: float, int or str

# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One dimension: kind is double, int or categorical; log for logUniform."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()
    log: bool = False


@dataclass(frozen=True)
class Problem:
    name: str
    params: tuple[Param, ...]
    optimum: float
    f: Callable[[Point], float]


def branin(p: Point) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return float((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6(p: Point) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


_OFFSETS = {"a": 0.5, "b": 0.0, "c": 1.0, "d": 2.0}


def mixed(p: Point) -> float:
    return float((p["x"] - 1) ** 2 + 0.05 * (p["n"] - 13) ** 2
                 + 0.5 * (math.log10(p["lr"]) + 2) ** 2 + _OFFSETS[p["c"]])


PROBLEMS = {
    "branin": Problem("branin", (Param("x1", "double", -5, 10), Param("x2", "double", 0, 15)),
                      0.397887357729738, branin),
    "hartmann6": Problem("hartmann6", tuple(Param(f"x{i}", "double") for i in range(6)),
                         -3.32236801141551, hartmann6),
    "mixed": Problem("mixed", (Param("x", "double", -3, 3), Param("n", "int", 1, 20),
                               Param("lr", "double", 1e-4, 1, log=True),
                               Param("c", "categorical", choices=("a", "b", "c", "d"))),
                     0.0, mixed),
}


def from_unit(param: Param, u: float) -> float | int:
    """[0, 1] → the parameter's range (log scale for log; ints own equal slices)."""
    u = min(max(u, 0.0), 1.0)
    if param.kind == "int":
        return min(int(param.low + u * (param.high - param.low + 1)), int(param.high))
    if param.log:
        lo, hi = math.log(param.low), math.log(param.high)
        return float(math.exp(lo + u * (hi - lo)))
    return float(param.low + u * (param.high - param.low))


# --- runners: each returns the objective values in evaluation order ---------------------------

Runner = Callable[[Problem, int, int], list[float]]


def run_ours(algorithm: str) -> Runner:
    def run(problem: Problem, seed: int, budget: int) -> list[float]:
        from suggestion_services.base import (
            ExperimentInfo,
            ObjectiveType,
            TrialCondition,
            TrialRecord,
        )
        from suggestion_services.registry import get_algorithm
        from suggestion_services.search_space import ParameterSpec, SearchSpace

        def bound(p: Param, v: float) -> str:
            return repr(v) if p.kind == "double" else str(int(v))

        specs = [
            ParameterSpec(p.name, "categorical", list=p.choices) if p.kind == "categorical"
            else ParameterSpec(p.name, p.kind, bound(p, p.low), bound(p, p.high),
                               distribution="logUniform" if p.log else "uniform")
            for p in problem.params
        ]
        experiment = ExperimentInfo(
            name=f"quality-{problem.name}", algorithm_name=algorithm,
            search_space=SearchSpace.from_specs(specs), objective_type=ObjectiveType.MINIMIZE,
            objective_metric_name="loss", settings={"random_state": str(seed)},
            parallel_trial_count=1, max_trial_count=budget,
        )
        space = experiment.search_space
        algo = get_algorithm(algorithm)()
        history: list[TrialRecord] = []
        values = []
        for i in range(budget):
            # As the controller does: the settings a reply returns go with the next request.
            result = algo.suggest_with_settings(experiment, history, 1)
            (s,) = result.suggestions
            experiment = replace(experiment, settings={**experiment.settings, **result.settings})
            value = problem.f(space.values(space.key_of(s.assignments)))
            values.append(value)
            history.append(TrialRecord(f"t{i}", s.assignments, TrialCondition.SUCCEEDED, value))
        return values

    return run


def run_numpy_random(problem: Problem, seed: int, budget: int) -> list[float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(budget):
        point: Point = {}
        for p in problem.params:
            if p.kind == "categorical":
                point[p.name] = p.choices[int(rng.integers(len(p.choices)))]
            elif p.kind == "int":
                point[p.name] = int(rng.integers(int(p.low), int(p.high) + 1))
            else:
                point[p.name] = from_unit(p, float(rng.uniform()))
        values.append(problem.f(point))
    return values


def run_scipy_sobol(problem: Problem, seed: int, budget: int) -> list[float]:
    from scipy.stats import qmc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "balance properties" for a budget not a power of 2
        cube = qmc.Sobol(len(problem.params), scramble=True, seed=seed).random(budget)
    values = []
    for row in cube:
        point: Point = {}
        for p, u in zip(problem.params, row, strict=True):
            if p.kind == "categorical":
                point[p.name] = p.choices[min(int(u * len(p.choices)), len(p.choices) - 1)]
            else:
                point[p.name] = from_unit(p, float(u))
        values.append(problem.f(point))
    return values


def run_optuna(multivariate: bool) -> Runner:
    def run(problem: Problem, seed: int, budget: int) -> list[float]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate is experimental
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=multivariate)
        study = optuna.create_study(direction="minimize", sampler=sampler)

        def objective(trial: optuna.Trial) -> float:
            point: Point = {}
            for p in problem.params:
                if p.kind == "categorical":
                    point[p.name] = trial.suggest_categorical(p.name, p.choices)
                elif p.kind == "int":
                    point[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
                else:
                    point[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
            return problem.f(point)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(objective, n_trials=budget)
        return [float(t.value) for t in study.trials if t.value is not None]

    return run


def run_hyperopt(problem: Problem, seed: int, budget: int) -> list[float]:
    from hyperopt import Trials, fmin, hp, tpe

    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    space: dict[str, Any] = {}
    for p in problem.params:
        if p.kind == "categorical":
            space[p.name] = hp.choice(p.name, list(p.choices))
        elif p.kind == "int":
            space[p.name] = hp.uniformint(p.name, p.low, p.high)
        elif p.log:
            space[p.name] = hp.loguniform(p.name, math.log(p.low), math.log(p.high))
        else:
            space[p.name] = hp.uniform(p.name, p.low, p.high)
    trials = Trials()

    ints = {p.name for p in problem.params if p.kind == "int"}

    def objective(point: Point) -> float:
        return problem.f({k: int(v) if k in ints else v for k, v in point.items()})

    fmin(objective, space, algo=tpe.suggest, max_evals=budget, trials=trials,
         rstate=np.random.default_rng(seed), show_progressbar=False)
    return [float(v) for v in trials.losses()]


def run_skopt(problem: Problem, seed: int, budget: int) -> list[float]:
    from skopt import Optimizer
    from skopt.space import Categorical, Integer, Real

    dims: list[Any] = []
    for p in problem.params:
        if p.kind == "categorical":
            dims.append(Categorical(list(p.choices), name=p.name))
        elif p.kind == "int":
            dims.append(Integer(int(p.low), int(p.high), name=p.name))
        else:
            dims.append(Real(p.low, p.high, prior="log-uniform" if p.log else "uniform",
                             name=p.name))
    opt = Optimizer(dims, base_estimator="GP", acq_func="gp_hedge", acq_optimizer="auto",
                    n_initial_points=10, random_state=seed)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The objective has been evaluated at this point before."
        for _ in range(budget):
            x = opt.ask()
            point = {p.name: v.item() if hasattr(v, "item") else v
                     for p, v in zip(problem.params, x, strict=True)}
            value = problem.f(point)
            values.append(value)
            opt.tell(x, value)
    return values


def run_cmaes(problem: Problem, seed: int, budget: int) -> list[float]:
    from cmaes import CMA

    numeric = [p for p in problem.params if p.kind != "categorical"]
    rng = np.random.default_rng(seed)
    cma = CMA(mean=np.full(len(numeric), 0.5), sigma=1 / 6,
              bounds=np.array([[0.0, 1.0]] * len(numeric)), seed=seed)
    values: list[float] = []
    while len(values) < budget:
        told = []
        for _ in range(cma.population_size):
            if len(values) == budget:
                break
            u = cma.ask()
            point: Point = {p.name: from_unit(p, float(x)) for p, x in zip(numeric, u, strict=True)}
            for p in problem.params:
                if p.kind == "categorical":
                    point[p.name] = p.choices[int(rng.integers(len(p.choices)))]
            value = problem.f(point)
            values.append(value)
            told.append((u, value))
        if len(told) == cma.population_size:
            cma.tell(told)
    return values


#: algorithm → [(implementation label, runner)], ours first.
IMPLEMENTATIONS: dict[str, list[tuple[str, Runner]]] = {
    "random": [("ours: random", run_ours("random")), ("numpy random", run_numpy_random)],
    "sobol": [("ours: sobol", run_ours("sobol")), ("scipy qmc Sobol", run_scipy_sobol)],
    "tpe": [("ours: tpe", run_ours("tpe")), ("optuna TPESampler", run_optuna(False)),
            ("hyperopt tpe", run_hyperopt)],
    "multivariate-tpe": [("ours: multivariate-tpe", run_ours("multivariate-tpe")),
                         ("optuna TPESampler(multivariate)", run_optuna(True))],
    "cmaes": [("ours: cmaes", run_ours("cmaes")), ("cmaes CMA", run_cmaes)],
    "bayesianoptimization": [("ours: bayesianoptimization", run_ours("bayesianoptimization")),
                             ("skopt Optimizer(GP)", run_skopt)],
}
_RUNNERS: dict[str, Runner] = {label: r for impls in IMPLEMENTATIONS.values() for label, r in impls}


def one_run(label: str, problem_name: str, seed: int, budget: int) -> tuple[list[float], float]:
    """(best-so-far after each evaluation, seconds)."""
    start = time.perf_counter()
    values = _RUNNERS[label](PROBLEMS[problem_name], seed, budget)
    elapsed = time.perf_counter() - start
    best = list(np.minimum.accumulate(np.array(values, dtype=float)))
    return [float(b) for b in best], elapsed


def summarise(regrets: list[float]) -> str:
    mean = statistics.fmean(regrets)
    std = statistics.stdev(regrets) if len(regrets) > 1 else 0.0
    return f"{mean:.4g} ± {std:.2g}"


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=100, help="also reports budget/2")
    parser.add_argument("--algorithms", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    algorithms = args.algorithms.split(",")
    problems = args.problems.split(",")
    for name, known in ((a, IMPLEMENTATIONS) for a in algorithms):
        if name not in known:
            parser.error(f"unknown algorithm {name!r}; choose from {', '.join(known)}")
    for name in problems:
        if name not in PROBLEMS:
            parser.error(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}")
    tasks = [(label, prob, seed) for algo in algorithms for label, _ in IMPLEMENTATIONS[algo]
             for prob in problems for seed in range(args.seeds)]
    # GP runs first, so the slowest tasks do not end up alone at the end.
    tasks.sort(key=lambda t: ("bayes" not in t[0] and "skopt" not in t[0]))
    start = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[list[float], float]]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one_run, label, prob, seed, args.budget): (label, prob)
                   for label, prob, seed in tasks}
        for future, key in futures.items():
            results.setdefault(key, []).append(future.result())
    wall = time.perf_counter() - start
    half = args.budget // 2
    lines = [f"Regret (best found - optimum), mean ± std over {args.seeds} seeds; "
             f"sequential, one suggestion per call; {wall / 60:.1f} min wall on {args.jobs} "
             "processes.", ""]
    for prob in problems:
        optimum = PROBLEMS[prob].optimum
        lines += [f"**{prob}**", "",
                  f"| implementation | regret @{half} | regret @{args.budget} | s/run |",
                  "|---|---|---|---|"]
        for algo in algorithms:
            for label, _ in IMPLEMENTATIONS[algo]:
                runs = results[(label, prob)]
                at_half = [best[half - 1] - optimum for best, _ in runs]
                at_full = [best[-1] - optimum for best, _ in runs]
                seconds = statistics.fmean(t for _, t in runs)
                lines.append(f"| {label} | {summarise(at_half)} | {summarise(at_full)} | "
                             f"{seconds:.2f} |")
        lines.append("")
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
