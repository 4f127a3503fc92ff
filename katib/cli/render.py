"""`katib render FILE [--set name=value ...]`: the manifest a trial would create, no cluster.

Template problems (a placeholder without a trialParameter, a Go-template typo, a
ConfigMap that cannot be found, a primary container that is not there) show up here,
before an Experiment sits on a cluster creating trials that fail.
"""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click
import yaml

from katib import errors
from katib.api.loading import load_experiment
from katib.api.models import (
    EXPERIMENT_LABEL,
    Experiment,
    ObjectMeta,
    ParameterAssignment,
    ParameterSpec,
    ParameterType,
    Trial,
    TrialSpec,
)
from katib.cli.exit_codes import exit_code_for
from katib.controller.templating import render_run_spec, sample_assignments
from katib.executors.kubernetes_manifest import COLLECTORS, build_trial_manifest

DEFAULT_DB_MANAGER_ADDRESS = "katib-server.katib.svc:6789"


def _check_value(param: ParameterSpec, value: str) -> str | None:
    """Why `value` is outside the parameter's feasible space (None if it is inside)."""
    space = param.feasible_space
    ptype = str(param.parameter_type or "")
    if ptype in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        allowed = list(space.list_ or []) if space else []
        if value in allowed:
            return None
        if ptype == ParameterType.DISCRETE:
            try:
                if any(Decimal(value) == Decimal(a) for a in allowed):
                    return None
            except InvalidOperation:
                pass
        return f"must be one of {', '.join(allowed)}"
    try:
        number = Decimal(value)
    except InvalidOperation:
        return f"must be a number ({ptype})"
    if ptype == ParameterType.INT and number != number.to_integral_value():
        return "must be an integer"
    low = space.min if space else None
    high = space.max if space else None
    try:
        if low is not None and number < Decimal(low):
            return f"must be at least {low}"
        if high is not None and number > Decimal(high):
            return f"must be at most {high}"
    except InvalidOperation:
        return None
    return None


def assignments_for(
    experiment: Experiment, settings: tuple[str, ...]
) -> tuple[dict[str, str], set[str]]:
    """(the values to render with, the names the user set); InvalidArgumentError lists
    every --set that names no parameter or holds a value outside its space."""
    params = {p.name or "": p for p in experiment.spec.parameters or []}
    values = sample_assignments(experiment)
    given: set[str] = set()
    problems: list[str] = []
    for item in settings:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"--set {item!r}: expected NAME=VALUE")
            continue
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            problems.append(f"--set {name}: no such parameter (parameters: {known})")
            continue
        why = _check_value(params[name], value)
        if why is not None:
            problems.append(f"--set {name}={value}: {why}")
            continue
        values[name] = value
        given.add(name)
    if problems:
        raise errors.InvalidArgumentError("; ".join(problems))
    return values, given


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter value (repeatable); others get a sample (midpoint or first list value).",
)
@click.option("--trial-name", default=None, help="Default: <experiment>-sample.")
@click.option(
    "--collector",
    type=click.Choice(COLLECTORS),
    default="sidecar",
    show_default=True,
    help="How the metrics collector is added to the primary container.",
)
@click.option(
    "--db-manager-address",
    default=DEFAULT_DB_MANAGER_ADDRESS,
    show_default=True,
    help="Where the collector reports (the server's DBManager).",
)
@click.option("--collector-image", default="katib-local:latest", show_default=True)
@click.option("--token-secret", default=None, help="Secret holding the server's token.")
@click.option("--raw", is_flag=True, help="Only the rendered template: no labels, no collector.")
def render(
    file: Path,
    settings: tuple[str, ...],
    trial_name: str | None,
    collector: str,
    db_manager_address: str,
    collector_image: str,
    token_secret: str | None,
    raw: bool,
) -> None:
    """Print (as YAML) the resource a trial of FILE would create on Kubernetes."""
    try:
        experiment = load_experiment(file)
        values, given = assignments_for(experiment, settings)
        name = trial_name or f"{experiment.name}-sample"
        run_spec = render_run_spec(experiment, name, values)
        template = experiment.spec.trial_template
        trial = Trial(
            metadata=ObjectMeta(
                name=name,
                namespace=experiment.namespace,
                labels={EXPERIMENT_LABEL: experiment.name},
            ),
            spec=TrialSpec(
                objective=experiment.spec.objective,
                parameter_assignments=[
                    ParameterAssignment(name=k, value=v) for k, v in values.items()
                ],
                run_spec=run_spec,
                retain_run=template.retain if template else None,
                metrics_collector=experiment.spec.metrics_collector_spec,
                primary_pod_labels=template.primary_pod_labels if template else None,
                primary_container_name=template.primary_container_name if template else None,
            ),
        )
        manifest = (
            run_spec
            if raw
            else build_trial_manifest(
                experiment,
                trial,
                db_manager_address=db_manager_address,
                collector=collector,
                collector_image=collector_image,
                token_secret=token_secret,
            )
        )
    except errors.KatibError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    header = [f"# trial {name} of experiment {experiment.namespace}/{experiment.name}"]
    for key, value in values.items():
        header.append(f"#   {key} = {value}{'' if key in given else '  (sample)'}")
    if template is not None and template.success_condition:
        header.append(f"# successCondition: {template.success_condition}")
        header.append(f"# failureCondition: {template.failure_condition}")
    click.echo("\n".join(header))
    click.echo(yaml.safe_dump(manifest, sort_keys=False, width=100), nl=False)
