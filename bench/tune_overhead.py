"""tune() against Optuna's study.optimize: wall time of N trivial trials with TPE.

    python bench/tune_overhead.py [--trials 500] [--repeat 3] [--dir DIR] [--profile]

Runs, in one process, on the same two-parameter space and a trivial objective:
- tune(algorithm_name="tpe"), sequential and with parallel_trial_count=2: every
  trial a call in a warm worker process, persisted to SQLite, real controller and
  TPE suggestion service (gRPC). Each first as the first tune() of a process (it
  starts the suggestion service), then as a later call (a notebook's next cell),
  which takes over the service the previous call kept;
- optuna TPESampler(seed=0) with study.optimize, in memory and with a SQLite storage.

Each configuration runs --repeat times, interleaved (optuna SQLite once: it is the
slow reference); the table gives medians. Reports wall times, tune()'s ratio to
each Optuna configuration, the per-trial time in milliseconds (wall / N) and tune()'s
overhead per trial. A tune() of a single trial measures the fixed cost, so the
steady per-trial time can be told apart from it.

Storage goes in a temporary directory under --dir (default: the home directory,
beside tune()'s default ~/.katib, or the system's temporary directory, whichever makes
files faster). The header gives both costs: on some machines one of them costs tens of
times more per file (kernel time, which competes with the trials for the CPU). The
objective prints nothing, so its trials make no file (katib.executors.trial_files);
a trial that prints makes a directory and two files, which is what the probe makes,
and the SQLite database goes there. --profile runs the first
sequential tune() under pyinstrument (if installed) and prints where the
controller's time goes.
"""

from __future__ import annotations

import argparse
import compileall
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from katib import search
from katib.sdk.tune import tune


def cpu_seconds() -> float:
    """CPU time of this process, of its finished children (workers, services) and of
    the suggestion services tune() keeps running (not finished, so not yet counted)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + kept_cpu()


def kept_cpu() -> float:
    """CPU seconds used so far by the services in tune()'s pool (read from /proc)."""
    from katib.controller.service_pool import SHARED_POOL

    total = 0.0
    for algorithm in SHARED_POOL.kept():
        kept = SHARED_POOL._kept.get(algorithm)
        pid = kept.service.pid if kept is not None else None
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


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


def trial_dir_us(directory: Path, count: int = 100) -> float:
    """Microseconds to make what a trial that prints makes on disk in `directory`: a
    directory with two small files (median of `count`)."""
    times = []
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        for i in range(count):
            start = time.perf_counter()
            path = os.path.join(scratch, str(i))
            os.mkdir(path)
            for name in ("a", "b"):
                fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"x")
                os.close(fd)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def storage_dir(choice: Path | None) -> tuple[Path, str]:
    """`choice`, or the cheaper of the home and temporary directories to make trial
    directories in; with a line that gives what each costs."""
    candidates = [choice] if choice is not None else []
    candidates += [Path.home(), Path(tempfile.gettempdir())]
    costs: dict[Path, float] = {}
    for candidate in candidates:
        costs.setdefault(candidate.resolve(), trial_dir_us(candidate))
    chosen = choice.resolve() if choice is not None else min(costs, key=costs.__getitem__)
    listed = "; ".join(f"{path}: {us:.0f} us" for path, us in costs.items())
    return chosen, f"storage under {chosen} (making a directory with 2 files: {listed})"


def precompile() -> str:
    """Compile the project's modules to bytecode now, as Python's first import would
    have done on most machines; a line saying so.

    With PYTHONDONTWRITEBYTECODE set (as in some sandboxes and containers) Python never
    caches our modules' bytecode, and every start of a suggestion service or worker
    compiles them again (about 40 ms per service): a cost of that setting, not of a
    trial."""
    root = Path(__file__).resolve().parent.parent
    for package in ("katib", "suggestion_services", "metrics_collector"):
        compileall.compile_dir(root / package, quiet=1)
    setting = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return "project bytecode compiled first" + (
        f" (PYTHONDONTWRITEBYTECODE={setting} is set here)" if setting else ""
    )


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the benchmark's temporary storage goes (default: the "
                        "cheaper of the home and temporary directories)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from katib.controller.service_pool import SHARED_POOL

    n = args.trials
    load_before = f"{os.getloadavg()[0]:.2f}"
    directory, storage_line = storage_dir(args.dir)
    bytecode_line = precompile()
    samples: dict[str, list[tuple[float, float, float]]] = {}
    fixed: dict[str, list[float]] = {"first call": [], "later call": []}
    with tempfile.TemporaryDirectory(dir=directory, prefix="katib-bench-") as tmp:
        runs = 0

        def tune_run(trials: int, parallel: int, first: bool) -> tuple[float, float, float]:
            nonlocal runs
            runs += 1
            if first:
                SHARED_POOL.close()  # nothing kept: this call starts the service
            return run_tune(trials, parallel, Path(tmp) / f"run{runs}")

        configurations: list[tuple[str, Callable[[], tuple[float, float, float]]]] = [
            ("optuna TPE, in memory", lambda: run_optuna(n, None)),
            ("tune() TPE, sequential, first call", lambda: tune_run(n, 1, True)),
            ("tune() TPE, parallel_trial_count=2, first call", lambda: tune_run(n, 2, True)),
            ("tune() TPE, sequential, later call", lambda: tune_run(n, 1, False)),
            ("tune() TPE, parallel_trial_count=2, later call", lambda: tune_run(n, 2, False)),
        ]
        samples["optuna TPE, SQLite"] = [run_optuna(n, f"sqlite:///{tmp}/optuna.db")]
        for round_ in range(max(1, args.repeat)):
            for label, run in configurations:
                if args.profile and round_ == 0 and label.endswith("sequential, first call"):
                    samples.setdefault(label, []).append(profiled(run))
                else:
                    samples.setdefault(label, []).append(run())
            fixed["first call"].append(tune_run(1, 1, True)[0])
            fixed["later call"].append(tune_run(1, 1, False)[0])
        SHARED_POOL.close()
    order = [configurations[0][0], "optuna TPE, SQLite"] + [c[0] for c in configurations[1:]]
    rows = [
        (label, *(statistics.median(s[i] for s in samples[label]) for i in range(3)))
        for label in order
    ]
    memory, sqlite = rows[0][1], rows[1][1]
    lines = [
        f"{n} trials, objective (x-2)^2+(y+1)^2 on [-10,10]^2, TPE; medians of "
        f"{max(1, args.repeat)} interleaved runs (optuna SQLite: 1); load average before: "
        f"{load_before}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)",
        f"{storage_line}; {bytecode_line}",
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
    lines += [
        "",
        "CPU s: this process and its children (suggestion service, workers). First call: "
        "the first tune() of a process, which starts the suggestion service; later call: "
        "the next tune() in the same process, which takes over the service the first kept.",
        "",
    ]
    for label, wall, _, _ in rows[2:]:
        lines.append(
            f"- overhead per trial of {label} over optuna in memory: "
            f"{(wall - memory) / n * 1000:+.2f} ms; over optuna SQLite: "
            f"{(wall - sqlite) / n * 1000:+.2f} ms"
        )
    first, later = rows[2][1], rows[4][1]
    for call, walls in fixed.items():
        lines.append(
            f"- tune() with a single trial, {call} (start-up and shutdown: suggestion service, "
            f"workers, storage): {statistics.median(walls):.2f} s"
        )
    lines.append(
        f"- a first call takes {first - later:.2f} s longer than a later one (sequential): the "
        "suggestion service's start (a new process: Python, numpy, grpc)"
    )
    one = statistics.median(fixed["later call"])
    lines.append(
        f"- without the later call's fixed cost, sequential tune() takes "
        f"{(later - one) / max(n - 1, 1) * 1000:.2f} ms per trial, "
        f"{(later - one) / max(n - 1, 1) / (memory / n):.2f}x optuna in memory's per trial"
    )
    print("\n".join(lines), flush=True)
    return lines


def profiled(run: Callable[[], tuple[float, float, float]]) -> tuple[float, float, float]:
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: pip install pyinstrument") from None
    profiler = Profiler()
    profiler.start()
    result = run()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    return result


if __name__ == "__main__":
    main()
