"""Crash points for restart-safety tests: `KATIB_CRASH_AT=point[:n]` kills this process.

The controller calls `crash_point(name)` at the instants where a crash is most
likely to lose or duplicate work; the tests set the variable to prove it does not.
Unset (always, outside those tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("KATIB_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
