"""GetSuggestions latency over gRPC, closed loop, as history grows.

    python bench/suggestion_latency.py [--algorithms random,grid] [--history 0,1000,10000]

Starts `python -m suggestion_services` as a real process on 127.0.0.1:0 and
sends each request with the whole history (as the controller does), asking for
one new assignment. Reports median and p95 milliseconds per call.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import time

import grpc

from katib.apis.v1beta1 import api_pb2, api_pb2_grpc

PARAMS = [
    api_pb2.ParameterSpec(
        name="lr",
        parameter_type=api_pb2.DOUBLE,
        feasible_space=api_pb2.FeasibleSpace(
            min="0.0001", max="0.1", step="0.0001", distribution=api_pb2.UNIFORM
        ),
    ),
    api_pb2.ParameterSpec(
        name="layers",
        parameter_type=api_pb2.INT,
        feasible_space=api_pb2.FeasibleSpace(min="1", max="100"),
    ),
    api_pb2.ParameterSpec(
        name="optimizer",
        parameter_type=api_pb2.CATEGORICAL,
        feasible_space=api_pb2.FeasibleSpace(list=["sgd", "adam", "ftrl"]),
    ),
]


def history(n: int, seed: int = 0) -> list[api_pb2.Trial]:
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        # distinct grid points: lr in steps of 0.0001, layers and optimizer vary
        assignments = [
            api_pb2.ParameterAssignment(name="lr", value=f"{(i % 1000 + 1) * 0.0001:.4f}"),
            api_pb2.ParameterAssignment(name="layers", value=str(i // 1000 % 100 + 1)),
            api_pb2.ParameterAssignment(
                name="optimizer", value=["sgd", "adam", "ftrl"][i // 100000]
            ),
        ]
        trials.append(
            api_pb2.Trial(
                name=f"bench-{i}",
                spec=api_pb2.TrialSpec(
                    parameter_assignments=api_pb2.TrialSpec.ParameterAssignments(
                        assignments=assignments
                    )
                ),
                status=api_pb2.TrialStatus(
                    condition=api_pb2.TrialStatus.SUCCEEDED,
                    observation=api_pb2.Observation(
                        metrics=[api_pb2.Metric(name="accuracy", value=f"{rng.random():.6f}")]
                    ),
                ),
            )
        )
    return trials


def start_service() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "suggestion_services", "--algorithm", "random", "--port", "0"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"listening on (\S+):(\d+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"service did not start: {line!r}")
    return process, f"{match.group(1)}:{match.group(2)}"


def measure(
    stub: api_pb2_grpc.SuggestionStub, algorithm: str, size: int, calls: int
) -> tuple[float, float]:
    experiment = api_pb2.Experiment(
        name="bench",
        spec=api_pb2.ExperimentSpec(
            parameter_specs=api_pb2.ExperimentSpec.ParameterSpecs(parameters=PARAMS),
            objective=api_pb2.ObjectiveSpec(
                type=api_pb2.MAXIMIZE, objective_metric_name="accuracy"
            ),
            algorithm=api_pb2.AlgorithmSpec(
                algorithm_name=algorithm,
                algorithm_settings=[api_pb2.AlgorithmSetting(name="random_state", value="1")],
            ),
            parallel_trial_count=1,
            max_trial_count=0,
        ),
    )
    request = api_pb2.GetSuggestionsRequest(
        experiment=experiment,
        trials=history(size),
        current_request_number=1,
        total_request_number=size + 1,
    )
    for _ in range(3):
        stub.GetSuggestions(request, timeout=60)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        stub.GetSuggestions(request, timeout=60)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algorithms", default="random,grid")
    parser.add_argument("--history", default="0,1000,10000")
    args = parser.parse_args(argv)
    process, address = start_service()
    lines = ["| algorithm | history | median ms | p95 ms |", "|---|---|---|---|"]
    try:
        channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", 512 << 20),
                ("grpc.max_receive_message_length", 512 << 20),
            ],
        )
        stub = api_pb2_grpc.SuggestionStub(channel)
        for algorithm in args.algorithms.split(","):
            for size in [int(s) for s in args.history.split(",")]:
                calls = 50 if size <= 1000 else 20
                median, p95 = measure(stub, algorithm, size, calls)
                lines.append(f"| {algorithm} | {size} | {median:.2f} | {p95:.2f} |")
                print(lines[-1], flush=True)
        channel.close()
    finally:
        process.terminate()
        process.wait()
    return lines


if __name__ == "__main__":
    main()
