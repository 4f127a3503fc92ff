"""The `katib` command: run, validate and inspect experiments in a local data directory."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.console import Console
from rich.table import Table

from katib import errors
from katib.api.loading import load_experiment, parse_experiment
from katib.api.models import Experiment, Trial
from katib.cli import remote
from katib.cli.exit_codes import EXPERIMENT_FAILED, exit_code_for
from katib.cli.progress import Progress, summary
from katib.controller.observation import strategies_of
from katib.storage.engine import default_data_dir, resolve_url

F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _handle_errors(func: F) -> F:
    """Every known error becomes one message and its exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except errors.KatibError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(exit_code_for(exc))

    return wrapper  # type: ignore[return-value]


def _storage_options(func: F) -> F:
    func = click.option(
        "--db",
        "db_url",
        envvar="KATIB_DB",
        default=None,
        help="Storage URL (sqlite:///..., postgresql://..., mysql://...). "
        "Default: a SQLite file in the data directory.",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="KATIB_DATA_DIR",
        default=None,
        help="Where the database, trial logs and work files live (default ~/.katib).",
    )(func)
    return func


def _open_storage(data_dir: Path | None, db_url: str | None) -> Any:
    from katib.storage.sql import SQLStorage

    directory = data_dir or default_data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return SQLStorage(resolve_url(db_url, directory))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the controller does.")
def cli(verbose: bool) -> None:
    """Katib-compatible hyperparameter tuning on this machine."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check an Experiment file and print every problem found."""
    experiment, problems = parse_experiment(file)
    if problems:
        err_console.print(f"[red]{file}: {len(problems)} problem(s)[/red]")
        for problem in problems:
            err_console.print(f"  - {problem}")
        sys.exit(2)
    assert experiment is not None
    console.print(f"{file}: experiment {experiment.name} is valid")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_storage_options
@click.option("-q", "--quiet", is_flag=True, help="No live progress view.")
@click.option(
    "--executor",
    "executor_name",
    type=click.Choice(["local", "kubernetes"]),
    envvar="KATIB_EXECUTOR",
    default="local",
    show_default=True,
    help="Where trials run: local processes, or resources on a Kubernetes cluster.",
)
@click.option("--kube-context", default=None, help="kubeconfig context (kubernetes executor).")
@click.option(
    "--collector-image",
    default=None,
    help="Image of the metrics collector sidecar (kubernetes executor).",
)
@click.option(
    "--db-manager-address",
    default=None,
    metavar="HOST:PORT",
    help="Where trial pods reach this run's DBManager (kubernetes executor); "
    "DBManager then listens on all interfaces at PORT.",
)
@_handle_errors
def run(
    file: Path,
    data_dir: Path | None,
    db_url: str | None,
    quiet: bool,
    executor_name: str = "local",
    kube_context: str | None = None,
    collector_image: str | None = None,
    db_manager_address: str | None = None,
) -> None:
    """Run an Experiment to completion here (or resume it if it is already stored)."""
    from katib.controller.runtime import Runtime

    experiment = load_experiment(file)
    runtime_options: dict[str, Any] = {}
    if executor_name == "kubernetes":
        from katib.executors.registry import create_executor

        host, _, port = (db_manager_address or "").rpartition(":")
        if not host or not port.isdigit():
            raise errors.InvalidArgumentError(
                "--db-manager-address: the kubernetes executor needs HOST:PORT, an address "
                "trial pods can reach this machine's DBManager at (e.g. the node network's "
                "gateway IP and a free port)"
            )
        runtime_options = {
            "db_manager_host": "0.0.0.0",
            "db_manager_port": int(port),
            "executor": create_executor(
                "kubernetes",
                kube_context=kube_context,
                collector_image=collector_image,
                db_manager_address=db_manager_address,
            ),
        }
    stop_requested = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_sigterm)
    progress = Progress(console, quiet=quiet)
    with Runtime(
        data_dir=data_dir, db_url=db_url, notice=progress.notice, **runtime_options
    ) as runtime:
        stored = runtime.submit(experiment, experiment_dir=file.parent)
        console.print(
            f"experiment {stored.namespace}/{stored.name}: "
            f"{len(runtime.storage.list_trials(stored.name, stored.namespace))} "
            f"trial(s) stored, data in {runtime.data_dir}"
        )
        try:
            with progress:
                final = runtime.run(
                    stored.name,
                    stored.namespace,
                    on_pass=progress.update,
                    should_stop=lambda: stop_requested,
                )
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: running trials keep running; run `katib run {file}` again to resume"
            )
            sys.exit(130)
        if stop_requested:
            err_console.print("stopped: run the same command again to resume")
            sys.exit(143)
        trials = runtime.storage.list_trials(final.name, final.namespace)
        _print_result(final, trials)
        if final.status and any(
            c.type == "Failed" and c.status == "True" for c in final.status.conditions
        ):
            sys.exit(EXPERIMENT_FAILED)


def _last_condition(experiment: Experiment) -> tuple[str, str]:
    conditions = experiment.status.conditions if experiment.status else []
    true = [c for c in conditions if c.status == "True"]
    if not true:
        return "Pending", ""
    return true[-1].type, true[-1].message or ""


def _print_result(experiment: Experiment, trials: list[Trial]) -> None:
    state, message = _last_condition(experiment)
    console.print(f"experiment {experiment.name} {state}: {message}")
    console.print(summary(experiment, trials))
    optimal = experiment.status.current_optimal_trial if experiment.status else None
    if optimal is None or not optimal.best_trial_name:
        console.print("no trial succeeded, so there is no optimal trial")
        return
    console.print(f"optimal trial: {optimal.best_trial_name}")
    for assignment in optimal.parameter_assignments:
        console.print(f"  {assignment.name} = {assignment.value}")
    for metric in optimal.observation.metrics if optimal.observation else []:
        console.print(f"  {metric.name}: min={metric.min} max={metric.max} latest={metric.latest}")


def _find_trial(storage: Any, name: str, namespace: str | None) -> Trial:
    """Trial names are unique across namespaces, so the namespace may be left out."""
    if namespace is not None:
        return storage.get_trial(name, namespace)  # type: ignore[no-any-return]
    for ns in sorted({e.namespace for e in storage.list_experiments()} | {"default"}):
        try:
            return storage.get_trial(name, ns)  # type: ignore[no-any-return]
        except errors.NotFoundError:
            continue
    raise errors.NotFoundError(f"trial {name} not found")


def _trial_value(experiment: Experiment, trial: Trial, name: str) -> str:
    from katib.controller.observation import metric_value

    strategy = strategies_of(experiment).get(name, "latest")
    return metric_value(trial.status.observation, name, strategy) or ""


@cli.command()
@click.argument("kind", type=click.Choice(["experiments", "experiment", "trials", "trial"]))
@click.argument("name", required=False)
@click.option("-n", "--namespace", default=None, help="Namespace (default: all for experiments).")
@click.option(
    "-e",
    "--experiment",
    "experiment_name",
    default=None,
    help="Only the trials of this experiment.",
)
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table")
@_storage_options
@remote.server_option
@_handle_errors
def get(
    kind: str,
    name: str | None,
    namespace: str | None,
    experiment_name: str | None,
    output: str,
    data_dir: Path | None,
    db_url: str | None,
    server: str | None = None,
    token_file: Path | None = None,
) -> None:
    """List experiments or trials (with their metrics)."""
    if server:
        return remote.get(server, token_file, kind, name, namespace, experiment_name, output)
    storage = _open_storage(data_dir, db_url)
    try:
        if kind.startswith("experiment"):
            experiments = (
                [storage.get_experiment(name, namespace or "default")]
                if name
                else storage.list_experiments(namespace)
            )
            if output != "table":
                _dump([e.to_dict() for e in experiments], output)
                return
            table = Table("NAMESPACE", "NAME", "ALGORITHM", "STATUS", "TRIALS", "BEST")
            for exp in experiments:
                trials = storage.list_trials(exp.name, exp.namespace)
                done = sum(1 for t in trials if t.is_completed)
                optimal = exp.status.current_optimal_trial if exp.status else None
                objective = exp.spec.objective.objective_metric_name if exp.spec.objective else ""
                best = ""
                if optimal and optimal.best_trial_name:
                    best_trial = next(
                        (t for t in trials if t.name == optimal.best_trial_name), None
                    )
                    if best_trial is not None and objective:
                        best = _trial_value(exp, best_trial, objective)
                algorithm = exp.spec.algorithm.algorithm_name if exp.spec.algorithm else ""
                total = exp.spec.max_trial_count
                table.add_row(
                    exp.namespace,
                    exp.name,
                    algorithm or "",
                    _last_condition(exp)[0],
                    f"{done}/{total if total is not None else '-'}",
                    best,
                )
            console.print(table)
            return
        if name:
            trial = _find_trial(storage, name, namespace)
            _dump([trial.to_dict()], "yaml" if output == "table" else output)
            return
        experiments = (
            [storage.get_experiment(experiment_name, namespace or "default")]
            if experiment_name
            else storage.list_experiments(namespace)
        )
        rows: list[tuple[Experiment, Trial]] = [
            (exp, t) for exp in experiments for t in storage.list_trials(exp.name, exp.namespace)
        ]
        print_trials(rows, output)
    finally:
        storage.close()


def print_trials(rows: list[tuple[Experiment, Trial]], output: str) -> None:
    """`katib get trials` output, embedded or against a server: a table or documents."""
    if output != "table":
        _dump([t.to_dict() for _, t in rows], output)
        return
    metric_names: list[str] = []
    param_names: list[str] = []
    for exp, trial in rows:
        for metric in strategies_of(exp):
            if metric not in metric_names:
                metric_names.append(metric)
        for assignment in trial.spec.parameter_assignments:
            if assignment.name not in param_names:
                param_names.append(assignment.name)
    table = Table("EXPERIMENT", "TRIAL", "STATUS", *metric_names, *param_names)
    for exp, trial in rows:
        values = trial.assignments
        table.add_row(
            exp.name,
            trial.name,
            trial.condition.value,
            *[_trial_value(exp, trial, m) for m in metric_names],
            *[values.get(p, "") for p in param_names],
        )
    console.print(table)


def _dump(docs: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        console.print_json(json.dumps(docs if len(docs) != 1 else docs[0]))
    else:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@cli.command()
@click.argument("kind", type=click.Choice(["experiment", "trial"]))
@click.argument("name")
@click.option("-n", "--namespace", default=None, help="Namespace (default: default).")
@_storage_options
@remote.server_option
@_handle_errors
def describe(
    kind: str,
    name: str,
    namespace: str | None,
    data_dir: Path | None,
    db_url: str | None,
    server: str | None = None,
    token_file: Path | None = None,
) -> None:
    """Show an experiment's (or trial's) spec, conditions and optimal trial."""
    if server:
        return remote.describe(server, token_file, kind, name, namespace)
    storage = _open_storage(data_dir, db_url)
    try:
        if kind == "trial":
            click.echo(
                yaml.safe_dump(_find_trial(storage, name, namespace).to_dict(), sort_keys=False),
                nl=False,
            )
            return
        namespace = namespace or "default"
        experiment = storage.get_experiment(name, namespace)
        trials = storage.list_trials(name, namespace)
        click.echo(yaml.safe_dump(experiment.to_dict(), sort_keys=False), nl=False)
        console.print(summary(experiment, trials))
    finally:
        storage.close()


@cli.command()
@click.argument("trial")
@click.option("-n", "--namespace", default=None, help="Namespace (found if left out).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the trial runs.")
@_storage_options
@remote.server_option
@_handle_errors
def logs(
    trial: str,
    namespace: str,
    follow: bool,
    data_dir: Path | None,
    db_url: str | None,
    server: str | None = None,
    token_file: Path | None = None,
) -> None:
    """Print a trial's output (stdout and stderr)."""
    if server:
        return remote.logs(server, token_file, trial, namespace, follow)
    from katib.executors.local import LocalExecutor

    storage = _open_storage(data_dir, db_url)
    try:
        record = _find_trial(storage, trial, namespace)
    finally:
        storage.close()
    executor = LocalExecutor((data_dir or default_data_dir()) / "trials")
    path = executor.log_path(record)
    if not path.exists():
        if record.is_completed:
            return None  # it ended without printing anything (a function trial keeps no file)
        raise errors.NotFoundError(f"trial {trial} has no log yet ({path})")
    out = sys.stdout.buffer
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 16)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not follow or executor.poll(record).phase.value != "Running":
                break
            time.sleep(0.3)


@cli.command()
@click.argument("kind", type=click.Choice(["experiment"]))
@click.argument("name")
@click.option("-n", "--namespace", default="default")
@_storage_options
@remote.server_option
@_handle_errors
def delete(
    kind: str,
    name: str,
    namespace: str,
    data_dir: Path | None,
    db_url: str | None,
    server: str | None = None,
    token_file: Path | None = None,
) -> None:
    """Delete an experiment, stopping its running trials and removing their logs."""
    if server:
        return remote.delete(server, token_file, kind, name, namespace)
    from katib.executors.local import LocalExecutor

    storage = _open_storage(data_dir, db_url)
    try:
        trials = storage.list_trials(name, namespace)
        storage.get_experiment(name, namespace)
        executor = LocalExecutor((data_dir or default_data_dir()) / "trials")
        for trial in trials:
            if not trial.is_completed:
                executor.stop(trial)
        storage.delete_experiment(name, namespace)
        for trial in trials:
            executor.remove(trial)
        console.print(f"experiment {namespace}/{name} deleted ({len(trials)} trial(s))")
    finally:
        storage.close()


from katib.server.main import server_command  # noqa: E402 - imports no web framework

cli.add_command(server_command)
cli.add_command(remote.apply)
cli.add_command(remote.wait)
from katib.cli.render import render as render_command  # noqa: E402

cli.add_command(render_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
