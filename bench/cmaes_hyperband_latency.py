"""Where a cmaes / hyperband GetSuggestions call spends its time, in process (no sockets).

    python bench/cmaes_hyperband_latency.py [--history 0,100,1000,10000]

Uses bench/suggestion_latency.py's histories (one trial added and one finished per
call, as the controller does) and times, per call:
  algorithm: suggest() on already converted TrialRecords, warm per-experiment state;
  servicer:  SuggestionServicer.GetSuggestions on the request (adds proto → TrialRecord);
  cold:      the first call for an experiment the process has not seen (full replay).
The gRPC figures (transport and serialisation on top) come from suggestion_latency.py.
Reports medians in ms; the minimum is printed too, since the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from suggestion_services.registry import get_algorithm
from suggestion_services.server import SuggestionServicer, TrialCache, experiment_from_proto

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The shared benchmark's histories (loaded by name: its protobuf typing is its own business).
shared: Any = importlib.import_module("suggestion_latency")


class _Context:
    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


def measure(algorithm: str, size: int, calls: int) -> tuple[list[float], list[float], float]:
    params = shared.parameters("continuous", algorithm)
    trials = shared.make_trials(size + 2 * calls + shared.WARMUP + 1, params)
    servicer = SuggestionServicer()
    history = shared.History(shared.experiment(algorithm, f"s-{size}", params), trials,
                             max(0, size - shared.WARMUP))
    while history.size < size:
        servicer.GetSuggestions(history.request, _Context())
        history.grow()
    through: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        servicer.GetSuggestions(history.request, _Context())
        through.append((time.perf_counter() - start) * 1000)
        history.grow()
    info = experiment_from_proto(history.request.experiment)
    cls = get_algorithm(algorithm)
    alone: list[float] = []
    converter = TrialCache()  # the server's: unchanged trials come back as the same objects
    for _ in range(calls):
        records = converter.convert(history.request.trials, "accuracy")
        start = time.perf_counter()
        cls().suggest_with_settings(info, records, 1)
        alone.append((time.perf_counter() - start) * 1000)
        history.grow()
    unseen = shared.History(shared.experiment(algorithm, f"cold-{size}", params), trials, size)
    start = time.perf_counter()
    servicer.GetSuggestions(unseen.request, _Context())
    return alone, through, (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default="cmaes,hyperband")
    parser.add_argument("--history", default="0,100,1000,10000")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    print("| algorithm | history | algorithm ms (min) | servicer ms (min) | cold ms |")
    print("|---|---|---|---|---|")
    for algorithm in args.algorithms.split(","):
        for size in (int(s) for s in args.history.split(",")):
            alone, through, cold = measure(algorithm, size, args.calls)
            print(f"| {algorithm} | {size} | {statistics.median(alone):.2f} ({min(alone):.2f}) "
                  f"| {statistics.median(through):.2f} ({min(through):.2f}) | {cold:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
