"""Run every benchmark and print Markdown tables for bench/RESULTS.md.

    python bench/run.py              # everything but the optimisation-quality study
    python bench/run.py --quality    # also bench/quality.py (about 20 min on 2 idle cores)

Each script also runs alone (`python bench/<name>.py --help`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import api_latency
import collector_parsers
import quality
import report_path
import suggestion_latency
import trial_overhead
import tune_overhead
import ui_weight


def _section(title: str, run: Callable[[list[str]], list[str]]) -> None:
    print(f"## {title}\n", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the scripts also print their tables
        lines = run([])
    print("\n".join(lines) + "\n", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", action="store_true", help="also run bench/quality.py")
    args = parser.parse_args(argv)
    machine = platform.processor() or platform.machine()
    print(
        f"# {datetime.date.today()} on {platform.node()}: {machine}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    _section("Per-trial overhead of the local path", trial_overhead.main)
    _section("GetSuggestions latency over gRPC (one assignment per call)",
             suggestion_latency.main)
    _section("Metrics parsers, event files and the collector's CPU", collector_parsers.main)
    _section("Reporting path: observations/s into the database", report_path.main)
    _section("tune() against Optuna's study.optimize (500 TPE trials)", tune_overhead.main)
    _section("REST API latency (1,000 experiments, 100,000 trials)", api_latency.main)
    _section("Web UI page weight and time to plot", ui_weight.main)
    if args.quality:
        _section("Optimisation quality (regret)", quality.main)


if __name__ == "__main__":
    main()
