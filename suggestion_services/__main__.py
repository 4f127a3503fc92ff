"""`python -m suggestion_services --algorithm NAME --port N [--host H]`.

Prints one line, `suggestion service '<name>' listening on <host>:<port>`, which
the controller parses, then serves until SIGTERM/SIGINT and exits 0. The line comes
as soon as the server listens; the algorithm's `warm_up` (e.g. TPE's import of
its model phase, needed only after its random start-up draws) then runs in the
background, overlapping the first requests. The same port
also serves api.v1.beta1.EarlyStopping (Katib's controller expects it on 6788: run
a second instance with `--port 6788` for a Katib deployment).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType

from katib.errors import KatibError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the server, block until a stop signal."""
    parser = argparse.ArgumentParser(prog="python -m suggestion_services")
    parser.add_argument("--algorithm", default=None,
                        help="default algorithm (requests still pick by name); checked at start")
    parser.add_argument("--port", type=int, default=6789, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop when the process that started this one is gone "
                             "(the embedded runtime passes it, so a killed `katib run` "
                             "leaves no service behind)")
    args = parser.parse_args(argv)
    parent = os.getppid()

    from .server import serve  # after argument parsing: --help stays fast

    try:
        server, port = serve(args.algorithm, args.host, args.port)
    except (KatibError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, KatibError) else 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    name = args.algorithm if args.algorithm is not None else "all"
    print(f"suggestion service '{name}' listening on {args.host}:{port}", flush=True)
    if args.algorithm is not None:
        threading.Thread(target=_warm_up, args=(args.algorithm,), name="warm-up",
                         daemon=True).start()
    while not stop.wait(1.0):
        if args.exit_with_parent and os.getppid() != parent:
            break  # re-parented: whoever started us is gone
    server.stop(grace=5).wait()
    return 0


def _warm_up(algorithm: str) -> None:
    """Run the algorithm's warm-up; a failure is left to the request that needs what
    it loads, which then reports it (the import is retried there)."""
    from .registry import get_algorithm

    try:
        get_algorithm(algorithm).warm_up()
    except Exception:  # only an optimisation: the request that needs it reports the error
        logging.getLogger(__name__).debug("warm-up of %s failed", algorithm, exc_info=True)
    # What the imports made lives as long as the server: leave it out of the collector's
    # full scans, which otherwise stall a request for tens of milliseconds now and then.
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
