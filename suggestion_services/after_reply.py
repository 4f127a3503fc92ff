"""Work an algorithm defers until its reply has gone out.

An algorithm may prepare for the request it expects next (TPE guesses its next
answer); done while the reply is still being sent, that work would hold the GIL the
reply needs. The server collects such work while the algorithm runs and registers it
to run once the RPC has ended; outside a server it runs at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deferred: ContextVar[list[Callable[[], None]] | None] = ContextVar("deferred", default=None)


def defer(work: Callable[[], None]) -> None:
    """Run `work` after the reply being computed has been sent (now, if none is)."""
    pending = _deferred.get()
    if pending is None:
        work()
    else:
        pending.append(work)


@contextmanager
def collecting() -> Iterator[list[Callable[[], None]]]:
    """Collect what `defer` is given within the block, for the caller to run later."""
    pending: list[Callable[[], None]] = []
    token = _deferred.set(pending)
    try:
        yield pending
    finally:
        _deferred.reset(token)
