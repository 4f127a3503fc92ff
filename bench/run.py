"""Run every benchmark and print Markdown tables for bench/RESULTS.md.

python bench/run.py
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import suggestion_latency
import trial_overhead


def main() -> None:
    cpus = os.cpu_count()
    machine = platform.processor() or platform.machine()
    print(
        f"# {datetime.date.today()} on {platform.node()}: {machine}, {cpus} cores, "
        f"Python {platform.python_version()}\n"
    )
    print("## Per-trial overhead of the local path\n")
    lines = trial_overhead.main([])
    print("\n".join(lines) + "\n")
    print("## GetSuggestions latency over gRPC (one assignment per call)\n")
    lines = suggestion_latency.main([])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
