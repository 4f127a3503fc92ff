"""`tune()`: tune a plain Python function with the real controller, services and storage.

The call builds a real Experiment (stored like any other, so `katib get` shows it),
runs the embedded Runtime (DBManager, the algorithm's suggestion service, the reconcile
loop) and executes each trial as a call of `objective(params)` in a pool of warm
worker processes (katib.executors.worker_pool). The function receives its parameters
typed (float, int, str), unlike Katib's tune(), which hands it strings.

Metrics: print `name=value` lines (parsed with the experiment's collector filter), call
`katib.report_metrics({...})`, or return a number (the objective metric) or a dict of
numbers. Warm start, a time budget and the progress bar are described at `tune`.
"""

from __future__ import annotations

import functools
import gc
import inspect
import math
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from katib import errors
from katib.api.models import (
    EXPERIMENT_LABEL,
    Condition,
    Experiment,
    Metric,
    ObjectMeta,
    Observation,
    ParameterAssignment,
    ParameterSpec,
    ParameterType,
    Trial,
    TrialSpec,
    TrialStatus,
)
from katib.controller import time_budget
from katib.controller.reconcile import PassResult
from katib.sdk.result import TuneResult
from katib.sdk.trial_rows import completed_rows, rows_from_trials
from katib.storage.base import MetricLogEntry

__all__ = ["TuneResult", "build_experiment", "store_warm_start", "tune"]

#: The primary container of the (descriptive) trial template, as Katib's tune() names it.
CONTAINER = "training-container"
OBJECTIVE_ANNOTATION = "katib-local/objective"
#: Longest wait for worker news between passes (bounds how late a timeout is noticed).
WAIT_SECONDS = 0.2

WarmStart = str | Iterable[tuple[Mapping[str, Any], float]]


def _parameter_spec(name: str, value: Any) -> ParameterSpec | None:
    """The spec for a search-space entry, or None for a constant passed through as is."""
    if isinstance(value, ParameterSpec):
        return value.model_copy(update={"name": name}, deep=True)
    if isinstance(value, Mapping) and (
        {"parameterType", "parameter_type", "feasibleSpace", "feasible_space"} & set(value)
    ):
        try:
            spec = ParameterSpec.model_validate({**value, "name": name})
        except ValueError as exc:
            raise errors.InvalidArgumentError(f"parameters[{name!r}]: {exc}") from None
        return spec
    to_spec = getattr(value, "to_parameter_spec", None)
    if callable(to_spec):
        spec = to_spec()
        if isinstance(spec, ParameterSpec):
            return spec.model_copy(update={"name": name}, deep=True)
    return None


def _split_parameters(
    parameters: Mapping[str, Any],
) -> tuple[list[ParameterSpec], dict[str, Any]]:
    if not isinstance(parameters, Mapping) or not parameters:
        raise errors.InvalidArgumentError(
            "parameters: give a dict of name -> katib.search.double/int/categorical(...)"
        )
    specs: list[ParameterSpec] = []
    constants: dict[str, Any] = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not name:
            raise errors.InvalidArgumentError(f"parameters: name {name!r} is not a string")
        spec = _parameter_spec(name, value)
        if spec is None:
            constants[name] = value
        else:
            specs.append(spec)
    if not specs:
        raise errors.InvalidArgumentError(
            "parameters: no search space given (every value is a constant); use "
            "katib.search.double/int/categorical for the parameters to tune"
        )
    return specs, constants


def _call_with_constants(
    objective: Callable[[dict[str, Any]], Any], constants: Mapping[str, Any], params: Any
) -> Any:
    return objective({**constants, **params})


def _check_objective(objective: Any) -> None:
    if not callable(objective):
        raise errors.InvalidArgumentError(
            f"objective: must be a function taking a dict of parameters, got {objective!r}"
        )
    try:
        inspect.signature(objective).bind({})
    except TypeError:
        raise errors.InvalidArgumentError(
            f"objective: {getattr(objective, '__qualname__', objective)} must accept one "
            "argument, the dict of parameters"
        ) from None
    except ValueError:
        pass  # builtins without a signature: take them on trust


def _template(names: Sequence[str], objective: Callable[..., Any]) -> dict[str, Any]:
    """A Katib Job template that documents the call (the worker pool does not run it)."""
    label = f"{getattr(objective, '__module__', '?')}.{getattr(objective, '__qualname__', '?')}"
    explain = (
        f"raise SystemExit('this trial is a call of {label} inside tune(); "
        "run tune() again to resume the experiment')"
    )
    return {
        "primaryContainerName": CONTAINER,
        "trialParameters": [{"name": n, "reference": n} for n in names],
        "trialSpec": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": CONTAINER,
                                "image": "python:3",
                                "command": ["python3", "-c", explain],
                                "args": [f"--{n}=${{trialParameters.{n}}}" for n in names],
                            }
                        ],
                    }
                }
            },
        },
    }


def build_experiment(
    name: str,
    objective: Callable[..., Any],
    specs: Sequence[ParameterSpec],
    *,
    objective_metric_name: str,
    objective_type: str,
    objective_goal: float | None,
    additional_metric_names: Sequence[str],
    max_trial_count: int | None,
    parallel_trial_count: int | None,
    max_failed_trial_count: int | None,
    algorithm_name: str,
    algorithm_settings: Mapping[str, Any] | None,
    metrics_collector_config: Mapping[str, Any] | None,
    namespace: str,
    timeout: float | None,
    on_timeout: str,
) -> Experiment:
    """The Experiment tune() stores: defaulted and validated like a YAML one."""
    from katib.api.loading import load_experiment_dict

    annotations = {
        OBJECTIVE_ANNOTATION: f"{getattr(objective, '__module__', '?')}."
        f"{getattr(objective, '__qualname__', '?')}"
    }
    if timeout is not None:
        annotations[time_budget.TIMEOUT_ANNOTATION] = f"{timeout:g}"
        annotations[time_budget.ON_TIMEOUT_ANNOTATION] = on_timeout
    objective_doc: dict[str, Any] = {
        "type": objective_type,
        "objectiveMetricName": objective_metric_name,
    }
    if additional_metric_names:
        objective_doc["additionalMetricNames"] = list(additional_metric_names)
    if objective_goal is not None:
        objective_doc["goal"] = objective_goal
    spec: dict[str, Any] = {
        "objective": objective_doc,
        "algorithm": {"algorithmName": algorithm_name},
        "parameters": [p.to_dict() for p in specs],
        "trialTemplate": _template([p.name or "" for p in specs], objective),
        "metricsCollectorSpec": {
            "collector": {"kind": (metrics_collector_config or {}).get("kind", "StdOut")}
        },
    }
    if algorithm_settings:
        spec["algorithm"]["algorithmSettings"] = [
            {"name": str(k), "value": str(v)} for k, v in algorithm_settings.items()
        ]
    source = dict(metrics_collector_config or {}).get("source")
    if source is not None:
        spec["metricsCollectorSpec"]["source"] = source
    for key, value in (
        ("maxTrialCount", max_trial_count),
        ("parallelTrialCount", parallel_trial_count),
        ("maxFailedTrialCount", max_failed_trial_count),
    ):
        if value is not None:
            spec[key] = value
    document = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }
    try:
        return load_experiment_dict(document, source="tune()")
    except errors.InvalidSpecError as exc:
        names = [p.name or "" for p in specs]
        raise errors.InvalidSpecError(
            [errors.Problem(_argument_of(p.path, names), p.message) for p in exc.problems],
            source="tune()",
        ) from None


#: Experiment field path prefix -> the tune() argument it came from (longest first).
_ARGUMENTS = (
    ("metadata.name", "name"),
    ("metadata.namespace", "namespace"),
    ("spec.objective.type", "objective_type"),
    ("spec.objective.objectiveMetricName", "objective_metric_name"),
    ("spec.objective.goal", "objective_goal"),
    ("spec.objective.additionalMetricNames", "additional_metric_names"),
    ("spec.algorithm.algorithmSettings", "algorithm_settings"),
    ("spec.algorithm", "algorithm_name"),
    ("spec.parallelTrialCount", "parallel_trial_count"),
    ("spec.maxTrialCount", "max_trial_count"),
    ("spec.maxFailedTrialCount", "max_failed_trial_count"),
    ("spec.metricsCollectorSpec", "metrics_collector_config"),
)


def _argument_of(path: str, parameter_names: Sequence[str]) -> str:
    """`objective_type (spec.objective.type)`: the argument to fix, then the stored field."""
    if path.startswith("spec.parameters["):
        index = path[len("spec.parameters[") :].split("]", 1)[0]
        if index.isdigit() and int(index) < len(parameter_names):
            return f"parameters[{parameter_names[int(index)]!r}] ({path})"
    for prefix, argument in _ARGUMENTS:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return f"{argument} ({path})"
    return path


# --- warm start ------------------------------------------------------------------------


def _in_space(spec: ParameterSpec, value: Any) -> str | None:
    """The value as Katib text when it lies in the spec's space, else None."""
    space = spec.feasible_space
    if space is None:
        return None
    if spec.parameter_type in (ParameterType.CATEGORICAL, ParameterType.DISCRETE):
        for choice in space.list_ or []:
            if str(value) == choice:
                return choice
            try:
                if float(value) == float(choice):
                    return choice
            except (TypeError, ValueError):
                continue
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    low, high = float(space.min or "-inf"), float(space.max or "inf")
    if not (math.isfinite(number) and low <= number <= high):
        return None
    if spec.parameter_type == ParameterType.INT:
        return str(int(number)) if number.is_integer() else None
    return repr(number)


def _warm_points(
    warm_start: WarmStart,
    experiment: Experiment,
    storage: Any,
) -> list[tuple[dict[str, str], float]]:
    specs = {p.name or "": p for p in experiment.spec.parameters or []}
    points: list[tuple[dict[str, str], float]] = []
    if isinstance(warm_start, str):
        try:
            source = storage.get_experiment(warm_start, experiment.namespace)
        except errors.NotFoundError:
            raise errors.NotFoundError(
                f"warm_start: experiment {experiment.namespace}/{warm_start} not found"
            ) from None
        objective = source.spec.objective
        assert objective is not None
        rows = completed_rows(
            rows_from_trials(
                storage.list_trials(warm_start, experiment.namespace),
                objective,
                source.spec.parameters,
            )
        )
        for row in rows:
            assignments = {n: _in_space(specs[n], row.params.get(n)) for n in specs}
            fitting = {n: v for n, v in assignments.items() if v is not None}
            if len(fitting) == len(specs) and row.value is not None:
                points.append((fitting, row.value))  # points outside this space are skipped
        return points
    for i, item in enumerate(warm_start):
        try:
            params, value = item
            number = float(value)
        except (TypeError, ValueError):
            raise errors.InvalidArgumentError(
                f"warm_start[{i}]: expected (params dict, number), got {item!r}"
            ) from None
        if not isinstance(params, Mapping):
            raise errors.InvalidArgumentError(f"warm_start[{i}]: params must be a dict")
        unknown = sorted(set(params) - set(specs))
        missing = sorted(set(specs) - set(params))
        if unknown or missing:
            raise errors.InvalidArgumentError(
                f"warm_start[{i}]: parameters must match the search space"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        texts: dict[str, str] = {}
        for n, raw in params.items():
            text = _in_space(specs[n], raw)
            if text is None:
                raise errors.InvalidArgumentError(
                    f"warm_start[{i}]: {n}={raw!r} is outside the search space of {n}"
                )
            texts[n] = text
        if not math.isfinite(number):
            raise errors.InvalidArgumentError(f"warm_start[{i}]: value {value!r} is not finite")
        points.append((texts, number))
    return points


def store_warm_start(warm_start: WarmStart, experiment: Experiment, storage: Any) -> int:
    """Store earlier results as completed warm-start trials; how many were stored."""
    points = _warm_points(warm_start, experiment, storage)
    objective = experiment.spec.objective
    assert objective is not None
    metric = objective.objective_metric_name or ""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    trials: list[Trial] = []
    for params, value in points:
        text = repr(float(value))
        trial = Trial(
            metadata=ObjectMeta(
                name=f"{experiment.name}-warm-"
                + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(8)),
                namespace=experiment.namespace,
                labels={EXPERIMENT_LABEL: experiment.name, time_budget.WARM_START_LABEL: "true"},
            ),
            spec=TrialSpec(
                objective=objective,
                parameter_assignments=[
                    ParameterAssignment(name=n, value=v) for n, v in params.items()
                ],
            ),
            status=TrialStatus(
                start_time=stamp,
                completion_time=stamp,
                conditions=[
                    Condition(
                        type="Succeeded",
                        reason="TrialWarmStart",
                        message="An earlier result given to tune(warm_start=...)",
                        last_update_time=stamp,
                        last_transition_time=stamp,
                    )
                ],
                observation=Observation(
                    metrics=[Metric(name=metric, min=text, max=text, latest=text)]
                ),
            ),
        )
        trials.append(trial)
    if trials:
        storage.create_trials(experiment.name, experiment.namespace, trials)
        for trial, (_, value) in zip(trials, points, strict=True):
            storage.report_observation_log(
                trial.name, [MetricLogEntry(metric, repr(float(value)), now)]
            )
    return len(trials)


# --- progress --------------------------------------------------------------------------


class _Progress:
    """tqdm.auto bar: finished trials of the budget, best value so far in the postfix."""

    def __init__(self, enabled: bool, experiment: Experiment) -> None:
        self._bar: Any = None
        self._shown: tuple[int, str | None] = (-1, None)
        if not enabled:
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tqdm.auto warns when ipywidgets is missing
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=experiment.spec.max_trial_count,
                desc=experiment.name,
                unit="trial",
                dynamic_ncols=True,
            )

    def update(self, result: PassResult) -> None:
        if self._bar is None:
            return
        objective = result.experiment.spec.objective
        best = None
        exp_status = result.experiment.status
        # The pass's aggregated counts: no walk over the history on every pass.
        done = (
            (exp_status.trials or 0)
            - (exp_status.trials_pending or 0)
            - (exp_status.trials_running or 0)
            if exp_status is not None
            else 0
        )
        optimal = exp_status.current_optimal_trial if exp_status else None
        if optimal is not None and optimal.observation is not None and objective is not None:
            for metric in optimal.observation.metrics:
                if metric.name == objective.objective_metric_name:
                    best = {"minimize": metric.min, "maximize": metric.max}.get(
                        str(objective.type), metric.latest
                    )
        if (done, best) == self._shown:
            return
        self._shown = (done, best)
        self._bar.n = done
        if best is not None and objective is not None:
            try:
                shown = f"{float(best):.6g}"
            except ValueError:
                shown = best
            self._bar.set_postfix_str(
                f"best {objective.objective_metric_name}={shown}", refresh=False
            )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --- tune ------------------------------------------------------------------------------


def tune(
    name: str,
    objective: Callable[[dict[str, Any]], Any],
    parameters: Mapping[str, Any],
    objective_metric_name: str = "objective",
    objective_type: str = "maximize",
    max_trial_count: int | None = None,
    parallel_trial_count: int | None = 1,
    max_failed_trial_count: int | None = None,
    algorithm_name: str = "random",
    algorithm_settings: Mapping[str, Any] | None = None,
    metrics_collector_config: Mapping[str, Any] | None = None,
    namespace: str = "default",
    data_dir: str | Path | None = None,
    db_url: str | None = None,
    warm_start: WarmStart | None = None,
    timeout: float | None = None,
    on_timeout: str = "wait",
    trial_timeout: float | None = None,
    progress: bool = True,
    *,
    objective_goal: float | None = None,
    additional_metric_names: Sequence[str] = (),
    memory_limit_mb: float | None = None,
    preload: Sequence[str] = (),
) -> TuneResult:
    """Tune `objective(params)` and return the result (stored like any experiment).

    - `parameters`: name -> katib.search.double/int/categorical/discrete(...) (or a
      ParameterSpec, or its Katib dict); any other value is a constant passed to every call.
    - The objective prints `name=value` lines, calls katib.report_metrics, or returns a
      number (the objective metric) or a dict of numbers.
    - `parallel_trial_count` workers run trials at once (default 1); each is a warm
      process reused across trials and replaced when a trial crashes, exceeds
      `trial_timeout` seconds, or leaves it above `memory_limit_mb` of resident memory.
      Such a trial fails alone; the experiment goes on (up to max_failed_trial_count).
    - `warm_start`: an experiment name (its succeeded trials, same namespace and storage)
      or a list of (params, value): the algorithm sees them before its first suggestion;
      they count toward no budget.
    - `timeout`: seconds for the whole experiment; then no trial starts, and running
      ones finish (`on_timeout="wait"`) or are stopped (`"kill"`); reason
      ExperimentTimeoutReached.
    - Storage: `db_url` or `data_dir` as for `katib run` (default ~/.katib, SQLite). An
      experiment of the same name is resumed (its budgets may change, nothing else);
      a finished one returns its result.
    """
    _check_objective(objective)
    if on_timeout not in time_budget.ON_TIMEOUT_POLICIES:
        raise errors.InvalidArgumentError(
            f"on_timeout: must be 'wait' or 'kill', got {on_timeout!r}"
        )
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise errors.InvalidArgumentError(
            f"timeout: must be a positive number of seconds, got {timeout!r}"
        )
    if trial_timeout is not None and not trial_timeout > 0:
        raise errors.InvalidArgumentError(
            f"trial_timeout: must be positive, got {trial_timeout!r}"
        )
    if max_trial_count is None and timeout is None and algorithm_name != "grid":
        raise errors.InvalidArgumentError(
            "max_trial_count: give a trial budget or a timeout (otherwise the search never ends)"
        )
    specs, constants = _split_parameters(parameters)
    experiment = build_experiment(
        name,
        objective,
        specs,
        objective_metric_name=objective_metric_name,
        objective_type=objective_type,
        objective_goal=objective_goal,
        additional_metric_names=additional_metric_names,
        max_trial_count=max_trial_count,
        parallel_trial_count=parallel_trial_count,
        max_failed_trial_count=max_failed_trial_count,
        algorithm_name=algorithm_name,
        algorithm_settings=algorithm_settings,
        metrics_collector_config=metrics_collector_config,
        namespace=namespace,
        timeout=timeout,
        on_timeout=on_timeout,
    )
    from katib.controller.runtime import RunOptions, Runtime
    from katib.controller.service_pool import SHARED_POOL
    from katib.executors.worker_pool import WorkerPoolExecutor, metric_plan
    from katib.storage.engine import default_data_dir

    metric_plan(experiment)  # an unsupported collector kind fails before anything starts
    function: Callable[..., Any] = objective
    if constants:
        function = functools.partial(_call_with_constants, objective, constants)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    executor = WorkerPoolExecutor(
        root / "trials", size=experiment.spec.parallel_trial_count or 1, preload=preload
    )
    executor.register(
        namespace, name, function, trial_timeout=trial_timeout, memory_limit_mb=memory_limit_mb
    )
    # The suggestion service starts first: its imports overlap the storage's and the
    # worker pool's start-up.
    # The service outlives this call for a while: the next tune() (a notebook's next
    # cell) takes it over instead of starting one (katib.controller.service_pool).
    runtime = Runtime(
        root, db_url, executor=executor, prestart=[algorithm_name], service_pool=SHARED_POOL
    )
    bar: _Progress | None = None
    # What is alive now (modules, the caller's data) stays out of the collector's scans
    # during the call: a full collection over it stalls a pass for tens of milliseconds.
    # unfreeze() gives it back to the collector when the call ends. A process that
    # froze objects itself (a pre-forking server, say) is left as it is.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    try:
        stored = runtime.submit(experiment)
        executor.resize(stored.spec.parallel_trial_count or 1)
        if warm_start is not None and not runtime.storage.list_trials(name, namespace):
            store_warm_start(warm_start, stored, runtime.storage)
        bar = _Progress(progress, stored)

        def on_pass(result: PassResult) -> None:
            assert bar is not None
            bar.update(result)
            # Until a trial ends there is nothing to do: a pass that launched has given
            # every free worker a trial (the next pass would only find them running), and
            # one that did nothing waits for a change. A pass that ended trials without
            # launching is followed at once: it may have freed a worker.
            if not result.completed and (result.created or not result.finished):
                executor.wait(WAIT_SECONDS)

        final = runtime.run(
            name, namespace, on_pass=on_pass, options=RunOptions(poll_interval=0.0005)
        )
        trials = runtime.storage.list_trials(name, namespace)
        return TuneResult(final, trials, data_dir=root, db_url=db_url)
    finally:
        if bar is not None:
            bar.close()
        runtime.close()
        if froze:
            gc.unfreeze()
