"""tune() against Optuna's study.optimize: wall time of N trivial trials with TPE.

    python bench/tune_overhead.py [--trials 500] [--profile]

Runs, in one process, on the same two-parameter space and a trivial objective:
- tune(algorithm_name="tpe"), sequential and with parallel_trial_count=2: every
  trial a call in a warm worker process, persisted to SQLite, real controller and
  TPE suggestion service (gRPC);
- optuna TPESampler(seed=0) with study.optimize, in memory and with a SQLite storage.

Reports wall times, tune()'s ratio to each Optuna configuration, and the per-trial
time in milliseconds (wall / N) and tune()'s overhead per trial over the Optuna
configuration it is compared with. A tune() of a single trial measures the fixed
cost (starting the suggestion service and the workers, opening storage, shutting
down), so the steady per-trial time can be told apart from it. --profile runs the
sequential tune() under pyinstrument (if installed) and prints where the controller's
time goes.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from katib import search
from katib.sdk.tune import tune


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (services, workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def objective(params: dict[str, Any]) -> float:
    return (params["x"] - 2.0) ** 2 + (params["y"] + 1.0) ** 2


def run_tune(trials: int, parallel: int, data_dir: Path) -> tuple[float, float, float]:
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = tune(
        f"bench-p{parallel}",
        objective,
        {"x": search.double(-10.0, 10.0), "y": search.double(-10.0, 10.0)},
        objective_type="minimize",
        algorithm_name="tpe",
        max_trial_count=trials,
        parallel_trial_count=parallel,
        data_dir=data_dir,
        progress=False,
    )
    wall = time.perf_counter() - start
    assert len(result.trials) == trials, result
    assert result.condition == "Succeeded", result.message
    return wall, cpu_seconds() - cpu, float(result.best_value or 0.0)


def run_optuna(trials: int, storage: str | None) -> tuple[float, float, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def optuna_objective(trial: Any) -> float:
        return objective(
            {"x": trial.suggest_float("x", -10.0, 10.0), "y": trial.suggest_float("y", -10.0, 10.0)}
        )

    cpu = cpu_seconds()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=0), storage=storage
        )
        study.optimize(optuna_objective, n_trials=trials)
    return time.perf_counter() - start, cpu_seconds() - cpu, float(study.best_value)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = args.trials
    load_before = f"{os.getloadavg()[0]:.2f}"
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("optuna TPE, in memory", *run_optuna(n, None)))
        rows.append(("optuna TPE, SQLite", *run_optuna(n, f"sqlite:///{tmp}/optuna.db")))
        if args.profile:
            try:
                from pyinstrument import Profiler
            except ImportError:
                raise SystemExit("--profile needs pyinstrument: pip install pyinstrument") from None
            profiler = Profiler()
            profiler.start()
            rows.append(("tune() TPE, sequential", *run_tune(n, 1, Path(tmp) / "p1")))
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        else:
            rows.append(("tune() TPE, sequential", *run_tune(n, 1, Path(tmp) / "p1")))
        rows.append(("tune() TPE, parallel_trial_count=2", *run_tune(n, 2, Path(tmp) / "p2")))
        fixed = run_tune(1, 1, Path(tmp) / "one")[0]
    memory, sqlite = rows[0][1], rows[1][1]
    lines = [
        f"{n} trials, objective (x-2)^2+(y+1)^2 on [-10,10]^2, TPE; load average before: "
        f"{load_before}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)",
        "",
        "| configuration | wall s | ms/trial | CPU s | vs optuna in memory | vs optuna SQLite "
        "| best |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, wall, cpu, best in rows:
        lines.append(
            f"| {label} | {wall:.2f} | {wall / n * 1000:.2f} | {cpu:.2f} | {wall / memory:.2f}x "
            f"| {wall / sqlite:.2f}x | {best:.4f} |"
        )
    lines += ["", "CPU s: this process and its children (suggestion service, workers).", ""]
    for label, wall, _, _ in rows[2:]:
        lines.append(
            f"- overhead per trial of {label} over optuna SQLite: "
            f"{(wall - sqlite) / n * 1000:+.2f} ms; over optuna in memory: "
            f"{(wall - memory) / n * 1000:+.2f} ms"
        )
    lines.append(
        f"- tune() with a single trial (start-up and shutdown: suggestion service, workers, "
        f"storage): {fixed:.2f} s; without it, sequential tune() takes "
        f"{(rows[2][1] - fixed) / max(n - 1, 1) * 1000:.2f} ms per trial, "
        f"{(rows[2][1] - fixed) / max(n - 1, 1) / (memory / n):.2f}x optuna in memory's per trial"
    )
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
