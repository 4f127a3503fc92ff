"""The `katib` verbs against a server (`--server URL` or KATIB_SERVER), plus `apply` and `wait`.

Output has the same shapes as the embedded commands: the server's JSON documents are
turned back into the same models and printed by the same helpers. The token comes
from KATIB_TOKEN (or `--token-file`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from katib import errors
from katib.api.models import Experiment, Trial

F = TypeVar("F", bound=Callable[..., Any])

BUDGET_FIELDS = ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount")
TERMINAL = ("Succeeded", "Failed")


def server_option(func: F) -> F:
    """`--server URL` (or KATIB_SERVER): talk to that server instead of the local data dir."""
    func = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="File with the server's token (default: $KATIB_TOKEN).",
    )(func)
    return click.option(
        "--server",
        envvar="KATIB_SERVER",
        default=None,
        help="URL of a katib server (e.g. http://127.0.0.1:8080); default: $KATIB_SERVER.",
    )(func)


def client(server: str, token_file: Path | None = None) -> Any:
    from katib.sdk.http_client import KatibHttpClient

    token = None
    if token_file is not None:
        from katib.server.auth import load_token

        token = load_token(token_file)
    return KatibHttpClient(server, token=token)


def _cli() -> Any:
    from katib.cli import main  # late: main imports this module

    return main


def _experiment(doc: dict[str, Any]) -> Experiment:
    return Experiment.model_validate(doc)


def _trial(doc: dict[str, Any]) -> Trial:
    return Trial.model_validate(doc)


def find_trial(api: Any, name: str, namespace: str | None) -> dict[str, Any]:
    """Trial names are unique across namespaces, so the namespace may be left out."""
    if namespace is not None:
        return dict(api.get_trial(name, namespace))
    namespaces = sorted({s["namespace"] for s in api.list_experiments()} | {"default"})
    for ns in namespaces:
        try:
            return dict(api.get_trial(name, ns))
        except errors.NotFoundError:
            continue
    raise errors.NotFoundError(f"trial {name} not found")


# --- get / describe / logs / delete ----------------------------------------------------------
def get(
    server: str,
    token_file: Path | None,
    kind: str,
    name: str | None,
    namespace: str | None,
    experiment_name: str | None,
    output: str,
) -> None:
    from rich.table import Table

    main = _cli()
    with client(server, token_file) as api:
        if kind.startswith("experiment"):
            if name:
                docs = [api.get_experiment(name, namespace or "default")]
                summaries = [
                    s for s in api.list_experiments(namespace or "default") if s["name"] == name
                ]
            else:
                summaries = api.list_experiments(namespace)
                docs = None
            if output != "table":
                if docs is None:
                    docs = [api.get_experiment(s["name"], s["namespace"]) for s in summaries]
                main._dump(docs, output)
                return
            table = Table("NAMESPACE", "NAME", "ALGORITHM", "STATUS", "TRIALS", "BEST")
            for s in summaries:
                counts = s["trials"]
                done = counts["total"] - counts["running"] - counts["pending"]
                total = s.get("maxTrialCount")
                best = s.get("best") or {}
                value = best.get("value")
                status = s["status"] if s["status"] != "Created" else "Pending"
                table.add_row(
                    s["namespace"],
                    s["name"],
                    s.get("algorithm") or "",
                    status,
                    f"{done}/{total if total is not None else '-'}",
                    "" if value is None else _number_text(value),
                )
            main.console.print(table)
            return
        if name:
            trial_doc = find_trial(api, name, namespace)
            main._dump([trial_doc], "yaml" if output == "table" else output)
            return
        if experiment_name:
            experiments = [_experiment(api.get_experiment(experiment_name, namespace or "default"))]
        else:
            experiments = [
                _experiment(api.get_experiment(s["name"], s["namespace"]))
                for s in api.list_experiments(namespace)
            ]
        rows = [
            (exp, _trial(t))
            for exp in experiments
            for t in api.list_trials(exp.name, exp.namespace)
        ]
    main.print_trials(rows, output)


def _number_text(value: Any) -> str:
    """A best value as the embedded table prints it (the stored text, e.g. 0.9)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def describe(
    server: str, token_file: Path | None, kind: str, name: str, namespace: str | None
) -> None:
    from katib.cli.progress import summary

    main = _cli()
    with client(server, token_file) as api:
        if kind == "trial":
            click.echo(yaml.safe_dump(find_trial(api, name, namespace), sort_keys=False), nl=False)
            return
        namespace = namespace or "default"
        experiment = _experiment(api.get_experiment(name, namespace))
        trials = [_trial(t) for t in api.list_trials(name, namespace)]
    click.echo(yaml.safe_dump(experiment.to_dict(), sort_keys=False), nl=False)
    main.console.print(summary(experiment, trials))


def logs(
    server: str, token_file: Path | None, trial: str, namespace: str | None, follow: bool
) -> None:
    with client(server, token_file) as api:
        record = find_trial(api, trial, namespace)
        ns = (record.get("metadata") or {}).get("namespace") or "default"
        printed = 0
        while True:
            text = api.get_trial_logs(trial, ns)
            if len(text) < printed:  # the log was replaced: print it again
                printed = 0
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
            if not follow or _trial(api.get_trial(trial, ns)).is_completed:
                if follow:  # the last lines written before it ended
                    sys.stdout.write(api.get_trial_logs(trial, ns)[printed:])
                return
            time.sleep(0.5)


def delete(server: str, token_file: Path | None, kind: str, name: str, namespace: str) -> None:
    main = _cli()
    with client(server, token_file) as api:
        count = len(api.list_trials(name, namespace))
        api.delete_experiment(name, namespace)
    main.console.print(f"experiment {namespace}/{name} deleted ({count} trial(s))")


# --- apply -----------------------------------------------------------------------------------
def _apply_remote(api: Any, file: Path, text: str) -> str:
    """Create the experiment, or edit the budget of the stored one; what happened, in words."""
    try:
        stored = api.create_experiment(text)
        return f"experiment {_where(stored)} created"
    except errors.AlreadyExistsError:
        pass
    from katib.api.loading import load_experiment

    local = load_experiment(text if text.endswith("\n") else text + "\n", source=str(file))
    stored_doc = api.get_experiment(local.name, local.namespace)
    new_spec, old_spec = local.spec.to_dict(), dict(stored_doc.get("spec") or {})
    changed = sorted(k for k in set(new_spec) | set(old_spec) if new_spec.get(k) != old_spec.get(k))
    forbidden = [k for k in changed if k not in BUDGET_FIELDS]
    if forbidden:
        raise errors.AlreadyExistsError(
            f"experiment {local.namespace}/{local.name} already exists with a different spec "
            f"(changed: {', '.join('spec.' + k for k in forbidden)}); only "
            "spec.parallelTrialCount, spec.maxTrialCount and spec.maxFailedTrialCount are "
            f"editable. Delete it first: katib delete experiment {local.name}"
        )
    if not changed:
        return f"experiment {local.namespace}/{local.name} unchanged"
    api.edit_experiment_budget(
        local.name,
        local.namespace,
        max_trial_count=new_spec.get("maxTrialCount"),
        parallel_trial_count=new_spec.get("parallelTrialCount"),
        max_failed_trial_count=new_spec.get("maxFailedTrialCount"),
    )
    return f"experiment {local.namespace}/{local.name} configured ({', '.join(changed)})"


def _where(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


@click.command()
@click.option(
    "-f",
    "--filename",
    "file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Experiment file (YAML or JSON).",
)
@click.option("--dry-run", is_flag=True, help="Validate (on the server too) without storing.")
@server_option
@click.option("--db", "db_url", envvar="KATIB_DB", default=None, help="Storage URL (embedded).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KATIB_DATA_DIR",
    default=None,
    help="Data directory (embedded).",
)
def apply(
    file: Path,
    dry_run: bool,
    server: str | None,
    token_file: Path | None,
    db_url: str | None,
    data_dir: Path | None,
) -> None:
    """Submit an Experiment (a server runs it); a stored one gets its budget edited."""
    main = _cli()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        main.err_console.print(f"[red]error:[/red] {file}: {exc.strerror or exc}")
        sys.exit(2)
    try:
        if server:
            with client(server, token_file) as api:
                if dry_run:
                    doc = api.create_experiment(text, dry_run=True)
                    main.console.print(f"experiment {_where(doc)} is valid (dry run)")
                    return
                main.console.print(_apply_remote(api, file, text))
            return
        _apply_embedded(file, dry_run, db_url, data_dir)
    except errors.KatibError as exc:
        _fail(exc)


def _apply_embedded(file: Path, dry_run: bool, db_url: str | None, data_dir: Path | None) -> None:
    """Store it in the local database; a `katib server` on that database runs it."""
    from katib.api.loading import load_experiment
    from katib.controller.runtime import Runtime
    from katib.storage.engine import default_data_dir, resolve_url

    main = _cli()
    experiment = load_experiment(file)
    if dry_run:
        main.console.print(f"experiment {experiment.namespace}/{experiment.name} is valid")
        return
    url = resolve_url(db_url, data_dir or default_data_dir())
    # A scratch directory: a server may be using the real one (its DBManager address file).
    with (
        tempfile.TemporaryDirectory(prefix="katib-apply-") as scratch,
        Runtime(data_dir=Path(scratch), db_url=url) as runtime,
    ):
        stored = runtime.submit(experiment)
    main.console.print(
        f"experiment {stored.namespace}/{stored.name} stored; a `katib server` on this "
        f"database runs it (or `katib run {file}`)"
    )


def _fail(exc: errors.KatibError) -> None:
    from katib.cli.exit_codes import exit_code_for

    main = _cli()
    main.err_console.print(f"[red]error:[/red] {exc}")
    sys.exit(exit_code_for(exc))


# --- wait ------------------------------------------------------------------------------------
def _state(doc: dict[str, Any]) -> tuple[str, str]:
    conditions = (doc.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if c.get("status") == "True"]
    if not true:
        return "Created", ""
    return str(true[-1].get("type")), str(true[-1].get("message") or "")


@click.command()
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--for",
    "condition",
    default="Succeeded",
    show_default=True,
    type=click.Choice(["Created", "Running", "Restarting", "Succeeded", "Failed", "Completed"]),
    help="The condition to wait for (Completed: Succeeded or Failed).",
)
@click.option("--timeout", default=600.0, show_default=True, type=float, help="Seconds.")
@click.option("--interval", default=1.0, show_default=True, type=float, help="Poll seconds.")
@server_option
@click.option("--db", "db_url", envvar="KATIB_DB", default=None, help="Storage URL (embedded).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KATIB_DATA_DIR",
    default=None,
    help="Data directory (embedded).",
)
def wait(
    name: str,
    namespace: str,
    condition: str,
    timeout: float,
    interval: float,
    server: str | None,
    token_file: Path | None,
    db_url: str | None,
    data_dir: Path | None,
) -> None:
    """Wait until an experiment has a condition; exit 1 if it Failed instead, 5 on timeout."""
    main = _cli()
    try:
        source: Any = client(server, token_file) if server else main._open_storage(data_dir, db_url)

        def fetch() -> dict[str, Any]:
            if server:
                return dict(source.get_experiment(name, namespace))
            return dict(source.get_experiment(name, namespace).to_dict())

        try:
            doc = _wait_for(fetch, name, namespace, condition, timeout, interval)
        finally:
            source.close()
    except errors.KatibError as exc:
        _fail(exc)
        return
    state, message = _state(doc)
    line = f"experiment {namespace}/{name} {state}: {message}".rstrip(": ")
    if state == "Failed" and condition not in ("Failed", "Completed"):
        _fail(errors.ExperimentFailedError(f"{line} (waited for {condition})"))
    main.console.print(line)


def _wait_for(
    fetch: Callable[[], dict[str, Any]],
    name: str,
    namespace: str,
    condition: str,
    timeout: float,
    interval: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = fetch()
        conditions = (doc.get("status") or {}).get("conditions") or []
        holding = {c.get("type") for c in conditions if c.get("status") == "True"}
        wanted = set(TERMINAL) if condition == "Completed" else {condition}
        if holding & wanted or holding & set(TERMINAL):
            return doc
        if time.monotonic() >= deadline:
            state, _ = _state(doc)
            raise errors.WaitTimeoutError(
                f"experiment {namespace}/{name} is still {state} after {timeout:g}s "
                f"(waiting for {condition})"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
