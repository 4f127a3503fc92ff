"""GetSuggestions latency over gRPC, closed loop, as the history grows.

    python bench/suggestion_latency.py                      # every algorithm, continuous space
    python bench/suggestion_latency.py --algorithms tpe,random --history 0,1000 --space finite

For each algorithm a real `python -m suggestion_services --algorithm NAME` process
is started on 127.0.0.1:0. Each request carries the whole history, as the
controller sends it, and asks for one assignment. The history looks like a real
experiment's: objective values spread over a smooth function plus noise, one
trial in 20 failed, one in 50 early-stopped, and the latest 3 trials still
Running (parallelism 4). As the controller does, every call adds one trial and
the oldest Running trial finishes, so per-experiment caches are exercised the way
they are in production. For history size N the loop starts at N - 5 (5 warm-up
calls) and measures the next calls, at N, N+1, ... ("steady state").

The cold figures: the first request of a fresh process at 1,000 trials (includes
importing the algorithm's library), and the first request for an experiment the
process has not seen, once the library is loaded (median of 3 experiments).

Spaces: `continuous` (default): two doubles without step (one logUniform), an int
and a categorical. `finite`: a double with step, an int and a categorical (grid
always uses it, since it needs a finite space).
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import grpc

from katib.apis.v1beta1 import api_pb2
from katib.controller.conversion import frame_trial
from katib.controller.suggestion_client import GET_SUGGESTIONS_METHOD, suggestions_request_bytes

ALL_ALGORITHMS = (
    "random", "grid", "sobol", "tpe", "multivariate-tpe", "cmaes", "bayesianoptimization",
    "hyperband",
)
DEFAULT_SIZES = (0, 100, 1000, 10000)
#: GP fits grow cubically with the history: the issue asks for 0, 100 and 500 only.
SLOW_SIZES = {"bayesianoptimization": (0, 100, 500)}
#: Issue targets: (algorithm, history) → median ms.
TARGETS = {
    ("random", 1000): 2.0, ("grid", 1000): 2.0, ("sobol", 1000): 2.0,
    ("tpe", 1000): 10.0, ("multivariate-tpe", 1000): 10.0, ("cmaes", 1000): 5.0,
    ("random", 10000): 5.0, ("tpe", 10000): 100.0,
}
#: Settings an algorithm needs to run at all (hyperband's resource parameter).
EXTRA_SETTINGS = {"hyperband": {"r_l": "9", "resource_name": "epochs", "eta": "3"}}
RUNNING = 3  # trials in flight at any call (parallelism 4)
WARMUP = 5


def _double(
    name: str, lo: str, hi: str, step: str = "", dist: api_pb2.Distribution = api_pb2.UNIFORM
) -> api_pb2.ParameterSpec:
    return api_pb2.ParameterSpec(
        name=name, parameter_type=api_pb2.DOUBLE,
        feasible_space=api_pb2.FeasibleSpace(min=lo, max=hi, step=step, distribution=dist),
    )


def parameters(space: str, algorithm: str) -> list[api_pb2.ParameterSpec]:
    """The search space; hyperband also gets its resource parameter."""
    finite = space == "finite" or algorithm == "grid"
    params = [
        _double("lr", "0.0001", "0.1", "0.0001" if finite else "",
                api_pb2.UNIFORM if finite else api_pb2.LOG_UNIFORM),
        api_pb2.ParameterSpec(name="layers", parameter_type=api_pb2.INT,
                              feasible_space=api_pb2.FeasibleSpace(min="1", max="100")),
        api_pb2.ParameterSpec(name="optimizer", parameter_type=api_pb2.CATEGORICAL,
                              feasible_space=api_pb2.FeasibleSpace(list=["sgd", "adam", "ftrl"])),
    ]
    if not finite:
        params.insert(1, _double("momentum", "0.5", "0.99"))
    if algorithm == "hyperband":
        params.append(api_pb2.ParameterSpec(
            name="epochs", parameter_type=api_pb2.INT,
            feasible_space=api_pb2.FeasibleSpace(min="1", max="9")))
    return params


def _value(name: str, rng: random.Random, finite: bool) -> str:
    if name == "lr":
        if finite:
            return f"{rng.randint(1, 1000) * 0.0001:.4f}"
        return repr(round(10 ** rng.uniform(-4, -1), 12))
    if name == "momentum":
        return repr(round(rng.uniform(0.5, 0.99), 12))
    if name == "layers":
        return str(rng.randint(1, 100))
    if name == "epochs":
        return str(rng.choice([1, 3, 9]))
    return rng.choice(["sgd", "adam", "ftrl"])


def _objective(values: dict[str, str], rng: random.Random) -> float:
    """Accuracy-like: best near lr=3e-3, momentum 0.9, 20 layers, adam; plus noise."""
    score = 0.9 - 0.08 * (math.log10(float(values["lr"])) + 2.5) ** 2
    score -= 2.0 * (float(values.get("momentum", "0.9")) - 0.9) ** 2
    score -= 0.00005 * (int(values["layers"]) - 20) ** 2
    score += {"adam": 0.03, "sgd": 0.0, "ftrl": -0.05}[values["optimizer"]]
    return score + rng.gauss(0, 0.01)


@dataclass
class TrialPair:
    """A trial as it is sent while running, and once it has ended (serialized once, as the
    controller's TrialBytesCache keeps them)."""

    running: bytes  # framed `trials` records (frame_trial)
    final: bytes


def make_trials(n: int, params: Sequence[api_pb2.ParameterSpec], seed: int = 0) -> list[TrialPair]:
    rng = random.Random(seed)
    names = [p.name for p in params]
    finite = any(p.feasible_space.step for p in params)
    out = []
    for i in range(n):
        values = {name: _value(name, rng, finite) for name in names}
        spec = api_pb2.TrialSpec(parameter_assignments=api_pb2.TrialSpec.ParameterAssignments(
            assignments=[api_pb2.ParameterAssignment(name=k, value=v) for k, v in values.items()]))
        running = api_pb2.Trial(name=f"bench-{i}", spec=spec, status=api_pb2.TrialStatus(
            condition=api_pb2.TrialStatus.RUNNING))
        if i % 20 == 7:
            final = api_pb2.Trial(name=f"bench-{i}", spec=spec, status=api_pb2.TrialStatus(
                condition=api_pb2.TrialStatus.FAILED))
        else:
            condition = (api_pb2.TrialStatus.EARLYSTOPPED if i % 50 == 11
                         else api_pb2.TrialStatus.SUCCEEDED)
            metric = api_pb2.Metric(name="accuracy", value=f"{_objective(values, rng):.6f}")
            final = api_pb2.Trial(name=f"bench-{i}", spec=spec, status=api_pb2.TrialStatus(
                condition=condition, observation=api_pb2.Observation(metrics=[metric])))
        out.append(TrialPair(frame_trial(running.SerializeToString()),
                             frame_trial(final.SerializeToString())))
    return out


def experiment(
    algorithm: str, name: str, params: Sequence[api_pb2.ParameterSpec]
) -> api_pb2.Experiment:
    settings = {"random_state": "1", **EXTRA_SETTINGS.get(algorithm, {})}
    if algorithm == "hyperband":
        del settings["random_state"]
    return api_pb2.Experiment(name=name, spec=api_pb2.ExperimentSpec(
        parameter_specs=api_pb2.ExperimentSpec.ParameterSpecs(parameters=params),
        objective=api_pb2.ObjectiveSpec(type=api_pb2.MAXIMIZE, objective_metric_name="accuracy"),
        algorithm=api_pb2.AlgorithmSpec(algorithm_name=algorithm, algorithm_settings=[
            api_pb2.AlgorithmSetting(name=k, value=v) for k, v in settings.items()]),
        parallel_trial_count=RUNNING + 1 if algorithm != "hyperband" else 9,
        max_trial_count=0,
    ))


class History:
    """The history as serialized trials, grown by one trial per call."""

    def __init__(self, exp: api_pb2.Experiment, trials: list[TrialPair], start: int) -> None:
        self.experiment = exp
        self.trials = trials
        self.size = start
        self.raw = [p.final if i < start - RUNNING else p.running
                    for i, p in enumerate(trials[:start])]

    def request(self) -> bytes:
        """What the controller sends: the same function builds its request bytes."""
        return suggestions_request_bytes(self.experiment, self.raw, 1, self.size + 1)

    def grow(self) -> None:
        """The oldest Running trial ends; a new one starts."""
        ending = self.size - RUNNING
        if ending >= 0:
            self.raw[ending] = self.trials[ending].final
        self.raw.append(self.trials[self.size].running)
        self.size += 1


def start_service(algorithm: str) -> tuple[subprocess.Popen[bytes], grpc.Channel]:
    process = subprocess.Popen(
        [sys.executable, "-m", "suggestion_services", "--algorithm", algorithm, "--port", "0"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"listening on (\S+):(\d+)", line)
    if not match:
        process.kill()
        process.wait()
        raise SystemExit(f"service for {algorithm} did not start: {line!r}")
    channel = grpc.insecure_channel(f"{match[1]}:{match[2]}", options=[
        ("grpc.max_send_message_length", 512 << 20),
        ("grpc.max_receive_message_length", 512 << 20),
    ])
    grpc.channel_ready_future(channel).result(timeout=30)
    return process, channel


def stop_service(process: subprocess.Popen[bytes], channel: grpc.Channel) -> None:
    channel.close()
    process.terminate()
    process.wait()
    if process.stdout:
        process.stdout.close()


Call: TypeAlias = grpc.UnaryUnaryMultiCallable


def get_suggestions(channel: grpc.Channel) -> Call:
    """GetSuggestions taking request bytes, as the controller's SuggestionClient calls it."""
    return channel.unary_unary(GET_SUGGESTIONS_METHOD, request_serializer=lambda b: b,
                               response_deserializer=api_pb2.GetSuggestionsReply.FromString)


def timed_call(call: Call, history: History) -> float:
    """ms for building the request (the experiment is serialized each call) and the call."""
    start = time.perf_counter()
    call(history.request(), timeout=600)
    return (time.perf_counter() - start) * 1000


def steady(
    stub: Call, algorithm: str, params: Sequence[api_pb2.ParameterSpec],
    trials: list[TrialPair], size: int, calls: int,
) -> list[float]:
    """Per-call ms at history size, size+1, ... after warming the way the controller does."""
    exp = experiment(algorithm, f"bench-{algorithm}-{size}", params)
    if size == 0:  # an empty history cannot grow and stay empty: repeat the same request
        history = History(exp, trials, 0)
        for _ in range(3):
            timed_call(stub, history)
        return [timed_call(stub, history) for _ in range(calls)]
    history = History(exp, trials, max(0, size - WARMUP))
    while history.size < size:
        timed_call(stub, history)
        history.grow()
    samples = []
    for _ in range(calls):
        samples.append(timed_call(stub, history))
        history.grow()
    return samples


def cold(algorithm: str, params: Sequence[api_pb2.ParameterSpec], trials: list[TrialPair],
         size: int) -> tuple[float, float]:
    """(first request of a fresh process, median first request of an unseen experiment)."""
    process, channel = start_service(algorithm)
    try:
        stub = get_suggestions(channel)
        first = timed_call(stub, History(experiment(algorithm, "cold-0", params), trials, size))
        unseen = [timed_call(stub, History(experiment(algorithm, f"cold-{i}", params), trials,
                                           size)) for i in range(1, 4)]
    finally:
        stop_service(process, channel)
    return first, statistics.median(unseen)


def p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default=",".join(ALL_ALGORITHMS))
    parser.add_argument("--history", default=None,
                        help="sizes, e.g. 0,1000 (default 0,100,1000,10000; GP 0,100,500)")
    parser.add_argument("--space", choices=("continuous", "finite"), default="continuous")
    parser.add_argument("--calls", type=int, default=30, help="measured calls per size")
    parser.add_argument("--cold-size", type=int, default=1000, help="0 skips the cold figures")
    args = parser.parse_args(argv)
    lines = ["| algorithm | space | history | median ms | p95 ms | target |",
             "|---|---|---|---|---|---|"]
    growth: dict[str, dict[int, float]] = {}
    colds: list[str] = []
    print("\n".join(lines), flush=True)
    for algorithm in args.algorithms.split(","):
        sizes = ([int(s) for s in args.history.split(",")] if args.history
                 else list(SLOW_SIZES.get(algorithm, DEFAULT_SIZES)))
        params = parameters(args.space, algorithm)
        space = "finite" if args.space == "finite" or algorithm == "grid" else "continuous"
        trials = make_trials(max([*sizes, args.cold_size]) + args.calls + WARMUP, params)
        process, channel = start_service(algorithm)
        try:
            stub = get_suggestions(channel)
            for size in sizes:
                calls = args.calls if size <= 1000 else max(10, args.calls * 2 // 3)
                samples = steady(stub, algorithm, params, trials, size, calls)
                median = statistics.median(samples)
                growth.setdefault(algorithm, {})[size] = median
                target = TARGETS.get((algorithm, size))
                verdict = "" if target is None else (
                    f"< {target:g} {'met' if median < target else 'NOT met'}")
                lines.append(f"| {algorithm} | {space} | {size} | {median:.2f} | "
                             f"{p95(samples):.2f} | {verdict} |")
                print(lines[-1], flush=True)
        finally:
            stop_service(process, channel)
        if args.cold_size:
            # GP: at most its largest steady size (a cold GP at 1,000 trials takes ~10 s).
            size = min(args.cold_size, max(SLOW_SIZES.get(algorithm, (args.cold_size,))))
            first, unseen = cold(algorithm, params, trials, size)
            colds.append(f"| {algorithm} | {size} | {first:.1f} | {unseen:.1f} |")
    if colds:
        lines += ["", "Cold calls (ms): a fresh process's first request (the library is "
                  "imported at start-up), and the first request for an unseen experiment.", "",
                  "| algorithm | history | fresh process | unseen experiment |",
                  "|---|---|---|---|", *colds]
    all_sizes = sorted({s for g in growth.values() for s in g})
    lines += ["", "Growth: median ms by history size.", "",
              "| algorithm | " + " | ".join(str(s) for s in all_sizes) + " |",
              "|---|" + "---|" * len(all_sizes)]
    for algorithm, by_size in growth.items():
        cells = [f"{by_size[s]:.2f}" if s in by_size else "" for s in all_sizes]
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    print("\n".join(lines[lines.index("") if "" in lines else len(lines):]), flush=True)
    return lines


if __name__ == "__main__":
    main()
