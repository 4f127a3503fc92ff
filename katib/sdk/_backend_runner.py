"""The detached process that runs one experiment for an embedded `KatibClient`.

`python -m katib.sdk._backend_runner --data-dir D --namespace N --name E --state-file S
[--db URL] [--experiment-file F] [--experiment-dir DIR]`

With `--experiment-file` (a JSON Experiment, already validated by the client) it submits
the experiment first: the suggestion service checks the algorithm settings, as Katib's
webhook does, and the outcome is written to the state file for the waiting client
(`{"state": "error", "error": {"type", "message"}}` or `{"state": "running", ...}`).
Without it, it resumes a stored experiment (the client saw the previous runner die).

Then it reconciles until the experiment completes, it is deleted, or SIGTERM arrives
(trials keep running; the next runner adopts them). A second runner for the same
experiment finds it owned and exits quietly, so a racing resume is harmless.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from katib import errors

if TYPE_CHECKING:
    from katib.api.models import Experiment
    from katib.controller.runtime import Runtime


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _mark_created(runtime: Runtime, experiment: Experiment) -> None:
    """Set Created before answering the client, so `is_experiment_created` holds as soon
    as `create_experiment` returns (the first reconcile pass would set the same)."""
    from katib.api.models import ExperimentConditionType, ExperimentStatus
    from katib.controller import status

    if experiment.status is not None and experiment.status.conditions:
        return
    exp_status = ExperimentStatus()
    status.mark_experiment(
        exp_status, ExperimentConditionType.CREATED, "ExperimentCreated", "Experiment is created"
    )
    exp_status.start_time = status.now_rfc3339()
    runtime.storage.update_experiment_status(experiment.name, experiment.namespace, exp_status)


def _steal_from_zombie(runtime: Runtime, name: str, namespace: str) -> None:
    """Take over from a previous runner that was killed but not yet reaped by the client
    that started it: its zombie still has a pid and start time, so the runtime's own
    check would wait for the ownership to go stale (30 s)."""
    from katib.sdk._backend_embedded import owner_alive

    owner = runtime.storage.get_ownership(name, namespace).owner
    if owner and not owner_alive(owner):
        runtime.storage.acquire_experiment(name, namespace, runtime.owner, steal_from=[owner])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m katib.sdk._backend_runner")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--db", default=None)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--state-file", required=True, type=Path)
    parser.add_argument("--experiment-file", type=Path, default=None)
    parser.add_argument("--experiment-dir", type=Path, default=None)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    creating = args.experiment_file is not None

    def fail(exc: BaseException) -> int:
        if creating:
            kind = type(exc).__name__ if isinstance(exc, errors.KatibError) else "InternalError"
            error: dict[str, Any] = {"type": kind, "message": str(exc)}
            if isinstance(exc, errors.InvalidSpecError):
                error["problems"] = [
                    {"path": p.path, "message": p.message, "line": p.line} for p in exc.problems
                ]
            write_state(args.state_file, {"state": "error", "pid": os.getpid(), "error": error})
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2

    from katib.api.models import Experiment
    from katib.controller.runtime import RunOptions, Runtime, owner_identity
    from katib.executors import process_tree

    try:
        runtime = Runtime(data_dir=args.data_dir, db_url=args.db, notice=print)
    except errors.KatibError as exc:
        return fail(exc)
    with runtime:
        try:
            if creating:
                doc = json.loads(args.experiment_file.read_text(encoding="utf-8"))
                experiment = Experiment.model_validate(doc, by_alias=True, by_name=False)
                stored = runtime.submit(experiment, experiment_dir=args.experiment_dir)
                args.experiment_file.unlink(missing_ok=True)
                _mark_created(runtime, stored)
            elif args.experiment_dir is not None:
                runtime.submit(
                    runtime.storage.get_experiment(args.name, args.namespace),
                    experiment_dir=args.experiment_dir,
                )
            _steal_from_zombie(runtime, args.name, args.namespace)
            runtime.acquire(args.name, args.namespace)
        except errors.ConflictError as exc:
            if creating:
                return fail(exc)
            print(f"not resuming: {exc}", flush=True)
            return 0
        except Exception as exc:  # reported to the waiting client
            return fail(exc)
        write_state(
            args.state_file,
            {
                "state": "running",
                "pid": os.getpid(),
                "ticks": process_tree.start_ticks(os.getpid()),
                "owner": owner_identity(),
                "experimentDir": str(args.experiment_dir) if args.experiment_dir else None,
            },
        )
        print(f"running experiment {args.namespace}/{args.name}", flush=True)
        try:
            final = runtime.run(
                args.name,
                args.namespace,
                options=RunOptions(poll_interval=args.poll_interval),
                should_stop=lambda: stop,
            )
        except errors.NotFoundError:
            print(f"experiment {args.namespace}/{args.name} was deleted", flush=True)
            return 0
        conditions = final.status.conditions if final.status else []
        last = [c for c in conditions if c.status == "True"]
        state = last[-1].type if last else "unknown"
        print(f"experiment {args.namespace}/{args.name}: {'stopped' if stop else state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
