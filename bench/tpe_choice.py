"""Which library behind `tpe` and `multivariate-tpe`: quality and per-call latency.

    .venv/bin/python bench/tpe_choice.py [--seeds 8] [--quick]

Candidates, each wrapped the way a stateless service would use it (every call
gets the whole history):

* hyperopt      hyperopt 0.3 `tpe.suggest` on a `Trials` rebuilt from the history
                (n_startup_jobs=10 to match optuna's default).
* optuna-study  optuna 5 `TPESampler` (independent, constant_liar) on an in-memory
                study rebuilt from the history, then `study.ask`.
* optuna-mv-study  the same with `multivariate=True`.
* tpe / multivariate-tpe  what ships: suggestion_services.tpe (optuna's Parzen
                estimators driven from cached arrays; see suggestion_services/parzen.py).
* random        baseline.

Quality: sequential runs (one suggestion per call) on Branin (2-d), Hartmann-6 and
a mixed space (log-uniform double, double, int, categorical); median over seeds
of the best value found. Latency: in-process ms per call at a history of 100 and
1,000 trials, the history growing by one trial per call; for the libraries both
"stateless" (rebuilt per call) and "kept" (state kept, only the new trial told).
"""

from __future__ import annotations

import abc
import argparse
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import optuna
from hyperopt import JOB_STATE_DONE, STATUS_OK, Domain, Trials, hp, tpe

from suggestion_services.base import ExperimentInfo, ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.registry import get_algorithm
from suggestion_services.search_space import ParameterSpec, SearchSpace

logging.getLogger("hyperopt").setLevel(logging.WARNING)
optuna.logging.set_verbosity(optuna.logging.WARNING)

Point = dict[str, str]


@dataclass(frozen=True)
class Problem:
    name: str
    specs: tuple[ParameterSpec, ...]
    objective: Callable[[Point], float]
    maximize: bool
    optimum: float
    budget: int


def branin(p: Point) -> float:
    x, y = float(p["x"]), float(p["y"])
    return ((y - 5.1 / (4 * math.pi**2) * x**2 + 5 / math.pi * x - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10)


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(p: Point) -> float:
    x = np.array([float(p[f"x{i}"]) for i in range(6)])
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def mixed(p: Point) -> float:
    """Accuracy-like (as bench/suggestion_latency.py, without noise): best 0.93."""
    score = 0.9 - 0.08 * (math.log10(float(p["lr"])) + 2.5) ** 2
    score -= 2.0 * (float(p["momentum"]) - 0.9) ** 2
    score -= 0.00005 * (int(p["layers"]) - 20) ** 2
    return score + {"adam": 0.03, "sgd": 0.0, "ftrl": -0.05}[p["optimizer"]]


PROBLEMS = (
    Problem("branin", (ParameterSpec("x", "double", "-5", "10"),
                       ParameterSpec("y", "double", "0", "15")), branin, False, 0.397887, 60),
    Problem("hartmann6", tuple(ParameterSpec(f"x{i}", "double", "0", "1") for i in range(6)),
            hartmann6, False, -3.32237, 100),
    Problem("mixed", (ParameterSpec("lr", "double", "0.0001", "0.1", distribution="logUniform"),
                      ParameterSpec("momentum", "double", "0.5", "0.99"),
                      ParameterSpec("layers", "int", "1", "100"),
                      ParameterSpec("optimizer", "categorical", list=("sgd", "adam", "ftrl"))),
            mixed, True, 0.93, 60),
)

History = list[tuple[Point, float]]


class Backend(abc.ABC):
    """suggest(history) -> one point; `kept` variants keep state between calls."""

    name = ""

    def __init__(self, problem: Problem, seed: int) -> None:
        self.problem = problem
        self.seed = seed

    @abc.abstractmethod
    def suggest(self, history: History) -> Point:
        """The next point to evaluate."""


class Ours(Backend):
    def __init__(self, problem: Problem, seed: int, algorithm: str, tag: str = "") -> None:
        super().__init__(problem, seed)
        self.name = algorithm
        self.experiment = ExperimentInfo(
            name=f"choice-{problem.name}-{seed}-{tag}", algorithm_name=algorithm,
            search_space=SearchSpace.from_specs(problem.specs),
            objective_type=ObjectiveType.MAXIMIZE if problem.maximize else ObjectiveType.MINIMIZE,
            objective_metric_name="y", settings={"random_state": str(seed)})
        self.records: list[TrialRecord] = []

    def suggest(self, history: History) -> Point:
        for i in range(len(self.records), len(history)):  # records are kept, as a server's
            point, value = history[i]
            self.records.append(TrialRecord(f"t{i}", point, TrialCondition.SUCCEEDED, value))
        algorithm = get_algorithm(self.name)()
        return algorithm.suggest(self.experiment, self.records, 1)[0].assignments


class Random(Ours):
    def __init__(self, problem: Problem, seed: int) -> None:
        super().__init__(problem, seed, "random")


def _to_text(spec: ParameterSpec, value: Any) -> str:
    if spec.parameter_type == "int":
        return str(round(float(value)))
    if spec.parameter_type == "categorical":
        return str(value)
    return repr(float(value))


class OptunaStudy(Backend):
    """optuna's TPESampler through a study: rebuilt per call, or kept (tell the new trial)."""

    def __init__(self, problem: Problem, seed: int, multivariate: bool, kept: bool = False
                 ) -> None:
        super().__init__(problem, seed)
        self.multivariate = multivariate
        self.kept = kept
        self.name = ("optuna-mv-study" if multivariate else "optuna-study") + ("-kept" * kept)
        self.dists: dict[str, Any] = {}
        for s in problem.specs:
            if s.parameter_type == "categorical":
                self.dists[s.name] = optuna.distributions.CategoricalDistribution(s.list)
            elif s.parameter_type == "int":
                self.dists[s.name] = optuna.distributions.IntDistribution(int(s.min), int(s.max))
            else:
                self.dists[s.name] = optuna.distributions.FloatDistribution(
                    float(s.min), float(s.max), log=s.distribution == "logUniform")
        self.study: optuna.Study | None = None
        self.told = 0

    def _new_study(self, seed: int) -> optuna.Study:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, multivariate=self.multivariate, constant_liar=True)
        return optuna.create_study(
            direction="maximize" if self.problem.maximize else "minimize", sampler=sampler)

    def _frozen(self, point: Point, value: float) -> optuna.trial.FrozenTrial:
        params: dict[str, Any] = {}
        for s in self.problem.specs:
            text = point[s.name]
            params[s.name] = (text if s.parameter_type == "categorical"
                              else int(text) if s.parameter_type == "int" else float(text))
        return optuna.trial.create_trial(params=params, distributions=self.dists, value=value)

    def suggest(self, history: History) -> Point:
        if self.study is None or not self.kept:
            self.study, self.told = self._new_study(self.seed * 100_003 + len(history)), 0
        study = self.study
        study.add_trials([self._frozen(p, v) for p, v in history[self.told:]])
        self.told = len(history)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = study.ask(self.dists)
        params = trial.params
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # keep it out of the model
        return {s.name: _to_text(s, params[s.name]) for s in self.problem.specs}


class Hyperopt(Backend):
    """hyperopt's tpe.suggest on Trials: rebuilt per call, or kept (insert the new trial)."""

    def __init__(self, problem: Problem, seed: int, kept: bool = False) -> None:
        super().__init__(problem, seed)
        self.kept = kept
        self.name = "hyperopt" + ("-kept" * kept)
        space: dict[str, Any] = {}
        for s in problem.specs:
            if s.parameter_type == "categorical":
                space[s.name] = hp.choice(s.name, list(s.list))
            elif s.parameter_type == "int":
                space[s.name] = hp.quniform(s.name, int(s.min), int(s.max), 1)
            elif s.distribution == "logUniform":
                space[s.name] = hp.loguniform(s.name, math.log(float(s.min)),
                                              math.log(float(s.max)))
            else:
                space[s.name] = hp.uniform(s.name, float(s.min), float(s.max))
        self.domain = Domain(lambda _: 0.0, space)
        self.algo = partial(tpe.suggest, n_startup_jobs=10)
        self.trials: Trials | None = None
        self.told = 0

    def _doc(self, trials: Trials, tid: int, point: Point, value: float) -> Any:
        vals: dict[str, list[float]] = {}
        for s in self.problem.specs:
            text = point[s.name]
            vals[s.name] = [s.list.index(text) if s.parameter_type == "categorical"
                            else float(text)]
        loss = -value if self.problem.maximize else value
        misc = {"tid": tid, "cmd": self.domain.cmd, "workdir": None,
                "idxs": {k: [tid] for k in vals}, "vals": vals}
        doc = trials.new_trial_docs([tid], [None], [{"loss": loss, "status": STATUS_OK}],
                                    [misc])[0]
        doc["state"] = JOB_STATE_DONE
        return doc

    def suggest(self, history: History) -> Point:
        if self.trials is None or not self.kept:
            self.trials, self.told = Trials(), 0
        trials = self.trials
        new = [self._doc(trials, i, p, v) for i, (p, v) in enumerate(history) if i >= self.told]
        if new:
            trials.insert_trial_docs(new)
            trials.refresh()
        self.told = len(history)
        seed = (self.seed * 100_003 + len(history)) % (2**31)
        doc = self.algo([len(history)], self.domain, trials, seed)[0]
        out: Point = {}
        for s in self.problem.specs:
            value = doc["misc"]["vals"][s.name][0]
            out[s.name] = s.list[int(value)] if s.parameter_type == "categorical" else (
                _to_text(s, value))
        return out


FACTORIES: dict[str, Callable[[Problem, int], Backend]] = {
    "random": Random,
    "hyperopt": Hyperopt,
    "optuna-study": partial(OptunaStudy, multivariate=False),
    "optuna-mv-study": partial(OptunaStudy, multivariate=True),
    "tpe": partial(Ours, algorithm="tpe"),
    "multivariate-tpe": partial(Ours, algorithm="multivariate-tpe"),
}
LATENCY: dict[str, Callable[[Problem, int], Backend]] = {
    "hyperopt": Hyperopt,
    "hyperopt-kept": partial(Hyperopt, kept=True),
    "optuna-study": partial(OptunaStudy, multivariate=False),
    "optuna-study-kept": partial(OptunaStudy, multivariate=False, kept=True),
    "optuna-mv-study-kept": partial(OptunaStudy, multivariate=True, kept=True),
    "tpe": partial(Ours, algorithm="tpe", tag="latency"),
    "multivariate-tpe": partial(Ours, algorithm="multivariate-tpe", tag="latency"),
}


@dataclass
class Run:
    best: list[float] = field(default_factory=list)
    seconds: float = 0.0


def run(problem: Problem, backend: str, seeds: int) -> Run:
    result = Run()
    start = time.perf_counter()
    for seed in range(seeds):
        b = FACTORIES[backend](problem, seed)
        history: History = []
        for _ in range(problem.budget):
            point = b.suggest(history)
            history.append((point, problem.objective(point)))
        values = [v for _, v in history]
        result.best.append(max(values) if problem.maximize else min(values))
    result.seconds = time.perf_counter() - start
    return result


def random_history(problem: Problem, size: int) -> History:
    space = SearchSpace.from_specs(problem.specs)
    rng = np.random.default_rng(12345)
    points = [space.format(k) for k in space.sample(rng, size)]
    return [(p, problem.objective(p)) for p in points]


def latency(problem: Problem, backend: str, size: int, calls: int) -> float:
    """Median ms per call at history `size`, growing by one trial per call."""
    history = random_history(problem, size + calls + 3)
    b = LATENCY[backend](problem, 7)
    b.suggest(history[: size - 3])  # warm-up (and a kept state's first build)
    samples = []
    for i in range(calls + 3):
        t = time.perf_counter()
        b.suggest(history[: size - 3 + i])
        if i >= 3:
            samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 seeds, fewer latency calls")
    args = parser.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    print(f"## Quality: best value after the budget, median over {seeds} seeds "
          "(lower is better except mixed)\n")
    names = list(FACTORIES)
    print("| problem (budget, optimum) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    for problem in PROBLEMS:
        cells = []
        for backend in names:
            r = run(problem, backend, seeds)
            seconds[backend] += r.seconds
            cells.append(f"{statistics.median(r.best):.4g}")
        print(f"| {problem.name} ({problem.budget}, {problem.optimum:g}) | "
              + " | ".join(cells) + " |", flush=True)
    print("| total seconds for these runs | "
          + " | ".join(f"{seconds[n]:.1f}" for n in names) + " |\n")
    calls = 5 if args.quick else 10
    print(f"## Latency: ms per call in process (mixed space, median of {calls} calls, "
          "history growing by one per call)\n")
    print("| backend | 100 | 1000 |")
    print("|---|---|---|")
    problem = PROBLEMS[2]
    for backend in LATENCY:
        cells = [f"{latency(problem, backend, size, calls):.2f}" for size in (100, 1000)]
        print(f"| {backend} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
