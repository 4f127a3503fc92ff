"""`KatibClient`: Katib's SDK verbs, embedded (no server) or against a `katib server`.

Names, arguments and return shapes follow Katib's `kubeflow.katib.KatibClient`, with
our models (katib.api.models) in place of the generated `V1beta1*` classes: they have
the same fields in snake_case and `to_dict()` gives the camelCase document.

Where we differ on purpose:
- `create_experiment` also takes a YAML/JSON file path (or text), and returns the
  stored experiment (Katib returns nothing);
- `edit_experiment_budget` returns the updated experiment;
- `wait_for_experiment_condition` polls every second by default (Katib: 15 s; a poll is
  a local read here) and raises `ExperimentFailedError` (a RuntimeError, as Katib's) or
  `WaitTimeoutError` (a TimeoutError), both in the katib.errors tree;
- `get_trial_metrics` returns `MetricLog`s shaped like Katib's (`.time_stamp`,
  `.metric.name`, `.metric.value`) read from storage, optionally for one metric;
- Katib's `list_suggestions` (which lists experiments) and `get_suggestion` do not
  exist: suggestions are not separate objects here.

Backends: with `server=` (or $KATIB_SERVER) every call goes over the REST API of a
`katib server`; otherwise the client is embedded and experiments live in the local data
directory (see katib.sdk._backend_embedded for how they run).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from katib import errors
from katib.api.models import (
    Condition,
    Experiment,
    ExperimentConditionType,
    Metric,
    OptimalTrial,
    ParameterAssignment,
    Suggestion,
    Trial,
    TrialConditionType,
)
from katib.sdk._backend import (
    BACKENDS,
    BaseBackend,
    ExperimentDocument,
    MetricLog,
    MetricValue,
)
from katib.sdk.suggestions import suggestion_of

if TYPE_CHECKING:
    from katib.sdk.tune import TuneResult

__all__ = [
    "ExperimentFailedError",
    "KatibClient",
    "MetricLog",
    "MetricValue",
    "WaitTimeoutError",
]

log = logging.getLogger(__name__)

SERVER_ENV = "KATIB_SERVER"
TOKEN_ENV = "KATIB_TOKEN"
DEFAULT_TIMEOUT = 120
CONDITIONS = tuple(c.value for c in ExperimentConditionType)


ExperimentFailedError = errors.ExperimentFailedError
WaitTimeoutError = errors.WaitTimeoutError


def _has_condition(experiment: Experiment, condition: str) -> bool:
    conditions = experiment.status.conditions if experiment.status else []
    return any(c.type == condition and c.status == "True" for c in conditions)


def _current(experiment: Experiment) -> str:
    conditions = experiment.status.conditions if experiment.status else []
    true = [c for c in conditions if c.status == "True"]
    return true[-1].type if true else "Pending"


class KatibClient:
    """Create, watch, edit and delete experiments; read their trials and metrics.

    `data_dir` / `db_url` choose the local storage of the embedded client (defaults:
    $KATIB_DATA_DIR or ~/.katib, and $KATIB_DB or a SQLite file there), as for the
    `katib` command. `server` (default $KATIB_SERVER unless `data_dir` or `db_url` is
    given), e.g. "http://127.0.0.1:8080", sends every call to that server instead, with
    `token` (default $KATIB_TOKEN) as a bearer token. `namespace` is the default of
    every call's `namespace`.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        db_url: str | None = None,
        server: str | None = None,
        token: str | None = None,
        namespace: str = "default",
    ) -> None:
        self.namespace = namespace
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.db_url = db_url
        local = data_dir is not None or db_url is not None
        if server and local:
            raise errors.InvalidArgumentError(
                "KatibClient: give either server= or data_dir=/db_url= (a local data "
                "directory), not both"
            )
        # $KATIB_SERVER only when the call names no local storage: explicit wins over env
        self.server = server or (None if local else os.environ.get(SERVER_ENV) or None)
        self.backend: BaseBackend
        if self.server:
            self.backend = BACKENDS["http"]()(namespace, server=self.server, token=token)
        else:
            self.backend = BACKENDS["embedded"]()(namespace, data_dir=self.data_dir, db_url=db_url)

    def close(self) -> None:
        """Release connections; experiments keep running."""
        self.backend.close()

    def __enter__(self) -> KatibClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.server or f"data_dir={getattr(self.backend, 'data_dir', None)}"
        return f"KatibClient({where}, namespace={self.namespace!r})"

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # --- experiments -------------------------------------------------------------------
    def create_experiment(
        self, experiment: Experiment | dict[str, Any] | str | Path, namespace: str | None = None
    ) -> Experiment:
        """Validate, store and start an experiment; return it as stored (with defaults).

        `experiment`: an Experiment model, its dict (camelCase, as in YAML), or the path
        of a YAML/JSON file (or the YAML text itself). `namespace` overrides the
        experiment's own (else the client's default). Relative file names in the trial
        command resolve next to the file, or in the current directory.
        InvalidSpecError lists every problem with its field path (and line);
        AlreadyExistsError if the name is taken.
        """
        if isinstance(experiment, Experiment):
            document = ExperimentDocument(body=experiment.to_dict(), namespace=namespace)
        elif isinstance(experiment, dict):
            document = ExperimentDocument(body=experiment, namespace=namespace)
        elif isinstance(experiment, (str, Path)):
            text = str(experiment)
            is_path = isinstance(experiment, Path) or (
                "\n" not in text
                and (text.endswith((".yaml", ".yml", ".json")) or Path(text).exists())
            )
            if is_path:
                path = Path(experiment).expanduser()
                try:
                    body = path.read_text(encoding="utf-8")
                except FileNotFoundError:
                    raise errors.InvalidArgumentError(
                        f"create_experiment: file not found: {path}"
                    ) from None
                except (OSError, UnicodeDecodeError) as exc:
                    raise errors.InvalidArgumentError(
                        f"create_experiment: cannot read {path}: {exc}"
                    ) from None
                document = ExperimentDocument(
                    body=body,
                    source=str(path),
                    directory=path.resolve().parent,
                    namespace=namespace,
                )
            else:
                document = ExperimentDocument(body=text, namespace=namespace)
        else:
            raise errors.InvalidArgumentError(
                "create_experiment: expected an Experiment, a dict or a YAML file path, "
                f"got {type(experiment).__name__}"
            )
        created = self.backend.create_experiment(document)
        log.info("Experiment %s/%s has been created", created.namespace, created.name)
        return created

    def get_experiment(
        self, name: str, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> Experiment:
        """The experiment with its current status (NotFoundError if there is none)."""
        return self.backend.get_experiment(name, self._ns(namespace))

    def list_experiments(
        self, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> list[Experiment]:
        """The namespace's experiments, oldest first."""
        return self.backend.list_experiments(self._ns(namespace))

    def get_experiment_conditions(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> list[Condition]:
        """The experiment's conditions (`experiment` saves a read), or []."""
        experiment = experiment or self.get_experiment(name, namespace)
        return list(experiment.status.conditions) if experiment.status else []

    def _is(
        self, condition: str, name: str, namespace: str | None, experiment: Experiment | None
    ) -> bool:
        return _has_condition(experiment or self.get_experiment(name, namespace), condition)

    def is_experiment_created(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> bool:
        return self._is("Created", name, namespace, experiment)

    def is_experiment_running(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> bool:
        return self._is("Running", name, namespace, experiment)

    def is_experiment_restarting(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> bool:
        return self._is("Restarting", name, namespace, experiment)

    def is_experiment_succeeded(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> bool:
        return self._is("Succeeded", name, namespace, experiment)

    def is_experiment_failed(
        self,
        name: str,
        namespace: str | None = None,
        experiment: Experiment | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> bool:
        return self._is("Failed", name, namespace, experiment)

    def wait_for_experiment_condition(
        self,
        name: str,
        namespace: str | None = None,
        expected_condition: str = "Succeeded",
        timeout: float = 600,
        polling_interval: float = 1.0,
        apiserver_timeout: int = DEFAULT_TIMEOUT,
        callback: Callable[[Experiment], None] | None = None,
    ) -> Experiment:
        """Poll until the experiment has `expected_condition`; return it then.

        Raises ExperimentFailedError (a RuntimeError) when it ends Failed and Failed was
        not awaited, WaitTimeoutError (a TimeoutError) after `timeout` seconds.
        `callback` sees the experiment at every poll (Katib prints trial counts).
        """
        expected = str(expected_condition)
        if expected not in CONDITIONS:
            raise errors.InvalidArgumentError(
                f"wait_for_experiment_condition: expected_condition {expected!r} is not one "
                f"of: {', '.join(CONDITIONS)}"
            )
        if polling_interval <= 0 or timeout < 0:
            raise errors.InvalidArgumentError(
                "wait_for_experiment_condition: polling_interval must be > 0 and timeout >= 0"
            )
        ns = self._ns(namespace)
        deadline = time.monotonic() + timeout
        while True:
            experiment = self.get_experiment(name, ns)
            if callback is not None:
                callback(experiment)
            if _has_condition(experiment, expected):
                return experiment
            if expected != "Failed" and _has_condition(experiment, "Failed"):
                conditions = experiment.status.conditions if experiment.status else []
                failed = next(c for c in conditions if c.type == "Failed")
                raise ExperimentFailedError(
                    f"Experiment: {ns}/{name} is Failed (waiting for {expected}): "
                    f"{failed.reason or ''} {failed.message or ''}".rstrip()
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(
                    f"Timeout waiting for Experiment: {ns}/{name} to reach {expected} "
                    f"condition after {timeout:g} s; it is {_current(experiment)} "
                    f"({(experiment.status.trials or 0) if experiment.status else 0} trial(s))"
                )
            time.sleep(min(polling_interval, left))

    def edit_experiment_budget(
        self,
        name: str,
        namespace: str | None = None,
        max_trial_count: int | None = None,
        parallel_trial_count: int | None = None,
        max_failed_trial_count: int | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> Experiment:
        """Change the trial budget, as Katib allows: only these counts; maxTrialCount
        above the trials created; a finished experiment only with resumePolicy
        LongRunning or FromVolume (it then restarts). Returns the updated experiment.

        InvalidArgumentError (a ValueError) without any count or with a non-integer;
        InvalidSpecError, with the field paths, for an edit Katib's rules refuse."""
        given = {
            "max_trial_count": max_trial_count,
            "parallel_trial_count": parallel_trial_count,
            "max_failed_trial_count": max_failed_trial_count,
        }
        if all(v is None for v in given.values()):
            raise errors.InvalidArgumentError(
                "edit_experiment_budget: give at least one of max_trial_count, "
                "parallel_trial_count, max_failed_trial_count"
            )
        for arg, value in given.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise errors.InvalidArgumentError(
                    f"edit_experiment_budget: {arg} must be an integer, got {value!r}"
                )
        return self.backend.edit_experiment_budget(
            name, self._ns(namespace), max_trial_count, parallel_trial_count, max_failed_trial_count
        )

    def delete_experiment(
        self, name: str, namespace: str | None = None, delete_options: Any = None
    ) -> None:
        """Stop the experiment and its running trials, then delete it with its trials."""
        self.backend.delete_experiment(name, self._ns(namespace))
        log.info("Experiment %s/%s has been deleted", self._ns(namespace), name)

    # --- trials ------------------------------------------------------------------------
    def get_suggestion(
        self, name: str, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> Suggestion:
        """The experiment `name`'s Suggestion: its algorithm, the settings the service
        returned and every assignment handed out (katib.sdk.suggestions)."""
        ns = self._ns(namespace)
        experiment = self.backend.get_experiment(name, ns)
        return suggestion_of(experiment, self.backend.list_trials(name, ns))

    def list_suggestions(
        self, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> list[Suggestion]:
        """The Suggestion of every experiment in the namespace, oldest first (Katib's
        verb lists experiments and returns them as Suggestions; this lists Suggestions)."""
        ns = self._ns(namespace)
        return [
            suggestion_of(e, self.backend.list_trials(e.name, ns))
            for e in self.backend.list_experiments(ns)
        ]

    def get_trial(
        self, name: str, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> Trial:
        return self.backend.get_trial(name, self._ns(namespace))

    def list_trials(
        self,
        experiment_name: str | None = None,
        namespace: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> list[Trial]:
        """The experiment's trials in creation order (every experiment's when no name)."""
        ns = self._ns(namespace)
        if experiment_name is None:
            return [
                t for e in self.list_experiments(ns) for t in self.backend.list_trials(e.name, ns)
            ]
        return self.backend.list_trials(experiment_name, ns)

    def get_success_trial_details(
        self,
        experiment_name: str | None = None,
        namespace: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """`{name, parameter_assignments, metrics}` of every Succeeded trial."""
        out: list[dict[str, Any]] = []
        for trial in self.list_trials(experiment_name, namespace):
            if trial.condition != TrialConditionType.SUCCEEDED:
                continue
            assignments: list[ParameterAssignment] = list(trial.spec.parameter_assignments)
            metrics: list[Metric] = (
                list(trial.status.observation.metrics) if trial.status.observation else []
            )
            out.append(
                {"name": trial.name, "parameter_assignments": assignments, "metrics": metrics}
            )
        return out

    def get_optimal_hyperparameters(
        self, name: str, namespace: str | None = None, timeout: int = DEFAULT_TIMEOUT
    ) -> OptimalTrial | None:
        """The current optimal trial (name, assignments, observation), or None if no trial
        has produced the objective metric yet."""
        experiment = self.get_experiment(name, namespace)
        optimal = experiment.status.current_optimal_trial if experiment.status else None
        if optimal is None or optimal.observation is None or not optimal.observation.metrics:
            return None
        return optimal

    def get_trial_metrics(
        self,
        name: str,
        namespace: str | None = None,
        metric_name: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> list[MetricLog]:
        """The trial's observation log: every reported value in time order (of one metric
        when `metric_name` is given). NotFoundError if there is no such trial."""
        return self.backend.get_observation_log(name, self._ns(namespace), metric_name)

    def get_trial_logs(
        self, name: str, namespace: str | None = None, tail: int | None = None
    ) -> str:
        """The trial's output (stdout and stderr), its last `tail` lines when given."""
        return self.backend.get_trial_logs(name, self._ns(namespace), tail)

    # --- tune --------------------------------------------------------------------------
    def tune(
        self,
        name: str,
        objective: Callable[..., Any],
        parameters: dict[str, Any],
        namespace: str | None = None,
        **kwargs: Any,
    ) -> TuneResult:
        """Tune a plain Python function: see katib.sdk.tune.tune for every argument.

        Runs here (warm worker processes, this client's data directory and database);
        not available with a server.
        """
        if self.server:
            raise errors.InvalidArgumentError(
                "KatibClient.tune runs the objective function on this machine; use a "
                "client without server= (and without $KATIB_SERVER), or create_experiment "
                "with a trial template to run it on the server"
            )
        from katib.sdk.tune import tune

        return tune(
            name,
            objective,
            parameters,
            namespace=self._ns(namespace),
            data_dir=self.data_dir,
            db_url=self.db_url,
            **kwargs,
        )
