"""Experiment routes: create (YAML or JSON, dry run), list with summaries, get, edit, delete.

Creating validates exactly as `katib run` does (structure, rules, then the algorithm
settings through the suggestion service) and stores the experiment; the server's
reconcile loop runs it. Budget edits follow Katib's update rules.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from katib import errors
from katib.api.loading import FILE_PATH, parse_experiment, parse_experiment_dict
from katib.api.models import Experiment, Trial
from katib.api.validation import validate_update
from katib.controller.runtime import Runtime
from katib.controller.status import now_rfc3339
from katib.server.app import runtime_of
from katib.server.summaries import STATUSES, best_of, experiment_status, list_summaries

log = logging.getLogger(__name__)

router = APIRouter(tags=["experiments"])

RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
MAX_BODY_BYTES = 4 * 1024 * 1024


@router.get("/experiments")
def list_experiments(
    runtime: RuntimeDep,
    namespace: Annotated[str | None, Query(description="Only this namespace.")] = None,
    status: Annotated[
        str | None, Query(description="Only this status: " + ", ".join(STATUSES))
    ] = None,
    full: Annotated[
        bool,
        Query(description="Whole experiments (as GET of one returns them), not summaries."),
    ] = False,
) -> JSONResponse:
    """Every experiment (oldest first) as a summary with trial counts and the best trial,
    or whole (`full=true`: what a client listing experiments needs, in one request)."""
    if status is not None and status not in STATUSES:
        raise errors.InvalidArgumentError(f"status: {status!r} is not one of {', '.join(STATUSES)}")
    if full:
        docs = runtime.storage.list_experiment_documents(namespace or None)
        items = [d for d in docs if status is None or experiment_status(d) == status]
        return JSONResponse({"items": items})
    # Plain JSON: the items are JSON already, so skip FastAPI's per-field encoding.
    return JSONResponse({"items": list_summaries(runtime.storage, namespace or None, status)})


def _experiment_from_body(raw: bytes, content_type: str) -> Experiment:
    """Parse a YAML or JSON request body; InvalidSpecError with every problem."""
    if len(raw) > MAX_BODY_BYTES:
        raise errors.InvalidSpecError(
            [errors.Problem(FILE_PATH, f"the body is larger than {MAX_BODY_BYTES} bytes")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidSpecError(
            [errors.Problem(FILE_PATH, "the body is not UTF-8")]
        ) from None
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or (media not in YAML_TYPES and text.lstrip()[:1] in "{["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.InvalidSpecError(
                [errors.Problem(FILE_PATH, f"not valid JSON: {exc.msg}", exc.lineno)]
            ) from None
        exp, problems = parse_experiment_dict(data)
    else:
        # A trailing newline keeps the loader from ever reading the text as a file path.
        exp, problems = parse_experiment(text if text.endswith("\n") else text + "\n")
    if problems or exp is None:
        raise errors.InvalidSpecError(problems or [errors.Problem(FILE_PATH, "no Experiment")])
    return exp


def _validate_with_services(runtime: Runtime, experiment: Experiment) -> None:
    """Algorithm (and early-stopping) settings, checked by the services that will use them."""
    algorithm = experiment.spec.algorithm
    name = (algorithm.algorithm_name or "") if algorithm else ""
    runtime.suggestion_client(name).validate(experiment)
    if experiment.spec.early_stopping is not None:
        runtime.early_stopping_client().validate(experiment.spec.early_stopping)


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "description": "A kubeflow.org/v1beta1 Experiment, as YAML or JSON.",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


@router.post("/experiments", status_code=201, openapi_extra=_CREATE_BODY)
async def create_experiment(
    request: Request,
    response: Response,
    dry_run: Annotated[
        bool, Query(alias="dryRun", description="Validate only; store nothing.")
    ] = False,
) -> dict[str, Any]:
    """Create from a YAML (application/yaml, text/yaml) or JSON body; 422 lists every problem."""
    runtime: Runtime = request.app.state.runtime
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise errors.InvalidSpecError(
            [errors.Problem(FILE_PATH, f"the body is larger than {MAX_BODY_BYTES} bytes")]
        )
    raw = await request.body()
    experiment = _experiment_from_body(raw, request.headers.get("content-type", ""))
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_create, runtime, experiment, dry_run, response)


def _generated_name(prefix: str) -> str:
    """metadata.generateName + 5 random characters, as the Kubernetes API server does."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(5))


def _create(
    runtime: Runtime, experiment: Experiment, dry_run: bool, response: Response
) -> dict[str, Any]:
    if not experiment.metadata.name and experiment.metadata.generate_name:
        experiment.metadata.name = _generated_name(experiment.metadata.generate_name)
    if not dry_run:
        try:
            runtime.storage.get_experiment(experiment.name, experiment.namespace)
        except errors.NotFoundError:
            pass
        else:
            raise errors.AlreadyExistsError(
                f'experiment "{experiment.name}" already exists in namespace '
                f'"{experiment.namespace}"'
            )
    _validate_with_services(runtime, experiment)
    if dry_run:
        response.status_code = 200
        return experiment.to_dict()
    if experiment.metadata.creation_timestamp is None:  # the API server sets it in Katib
        experiment.metadata.creation_timestamp = now_rfc3339()
    runtime.storage.create_experiment(experiment)
    stored = runtime.storage.get_experiment(experiment.name, experiment.namespace)
    log.info("experiment %s/%s created", stored.namespace, stored.name)
    return stored.to_dict()


@router.get("/namespaces/{namespace}/experiments/{name}")
def get_experiment(namespace: str, name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The experiment as stored (spec after defaulting, plus status)."""
    return runtime.storage.get_experiment(name, namespace).to_dict()


class BudgetPatch(BaseModel):
    """Katib's editable fields; anything else is refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_trial_count: int | None = Field(default=None, alias="maxTrialCount")
    parallel_trial_count: int | None = Field(default=None, alias="parallelTrialCount")
    max_failed_trial_count: int | None = Field(default=None, alias="maxFailedTrialCount")


@router.patch("/namespaces/{namespace}/experiments/{name}")
def edit_experiment(
    namespace: str, name: str, patch: BudgetPatch, runtime: RuntimeDep
) -> dict[str, Any]:
    """Edit the budget; growing maxTrialCount restarts a finished experiment (LongRunning)."""
    fields = patch.model_dump(by_alias=True, exclude_none=True)
    if not fields:
        raise errors.InvalidArgumentError(
            "give at least one of maxTrialCount, parallelTrialCount, maxFailedTrialCount"
        )
    stored = runtime.storage.get_experiment(name, namespace)
    trials = runtime.storage.count_trials_by_condition(namespace).get((namespace, name), {})
    edited = stored.model_copy(deep=True)
    for key, value in fields.items():
        setattr(edited.spec, _SPEC_ATTRS[key], value)
    problems = validate_update(stored, edited, trials_count=sum(trials.values()))
    if problems:
        raise errors.InvalidSpecError(problems)
    return runtime.submit(edited).to_dict()


_SPEC_ATTRS = {
    "maxTrialCount": "max_trial_count",
    "parallelTrialCount": "parallel_trial_count",
    "maxFailedTrialCount": "max_failed_trial_count",
}


def delete_experiment_and_trials(runtime: Runtime, name: str, namespace: str) -> int:
    """Stop the running trials, delete the experiment, remove trial files; the trial count."""
    storage, executor = runtime.storage, runtime.executor
    trials: dict[str, Trial] = {t.name: t for t in storage.list_trials(name, namespace)}
    for trial in trials.values():
        if not trial.is_completed:
            executor.stop(trial)
    # A trial created while we stopped the others is caught by a second look.
    for trial in storage.list_trials(name, namespace):
        if trial.name not in trials:
            trials[trial.name] = trial
            if not trial.is_completed:
                executor.stop(trial)
    storage.delete_experiment(name, namespace)
    remove = getattr(executor, "remove", None)  # executors with files to clean up
    for trial in trials.values():
        if remove is not None:
            remove(trial)
    return len(trials)


@router.delete("/namespaces/{namespace}/experiments/{name}", status_code=204)
def delete_experiment(namespace: str, name: str, runtime: RuntimeDep) -> Response:
    """Delete the experiment, its trials (stopped first), their observations and logs."""
    count = delete_experiment_and_trials(runtime, name, namespace)
    log.info("experiment %s/%s deleted (%d trials)", namespace, name, count)
    return Response(status_code=204)


@router.get("/namespaces/{namespace}/experiments/{name}/trials")
def list_trials(namespace: str, name: str, runtime: RuntimeDep) -> JSONResponse:
    """The experiment's trials in creation order."""
    items = [t.to_dict() for t in runtime.storage.list_trials(name, namespace)]
    return JSONResponse({"items": items})


@router.get("/namespaces/{namespace}/experiments/{name}/best")
def best_trial(namespace: str, name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The optimal trial so far: {trialName, value, parameters, observation}; 404 if none."""
    experiment = runtime.storage.get_experiment(name, namespace)
    best = best_of(experiment.to_dict())
    if best is None:
        raise errors.NotFoundError(
            f"experiment {namespace}/{name} has no optimal trial yet (no trial succeeded)"
        )
    return best
