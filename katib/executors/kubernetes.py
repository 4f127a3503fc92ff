"""Trials as Kubernetes resources: a batch/v1 Job by default, any trial kind from the template.

The only module of the project that imports `kubernetes`. How it keeps the executor
contract (katib.executors.base) with all state on the cluster:

- launch renders the trial's resource (katib.executors.kubernetes_manifest) in the
  experiment's namespace and creates it: Jobs through BatchV1Api, every other kind
  (TFJob, PyTorchJob, XGBoostJob, MPIJob, TrainJob, Argo Workflow, Tekton PipelineRun,
  ...) through CustomObjectsApi, its plural found by discovery from apiVersion + kind.
  409 AlreadyExists is success (launch is idempotent), unless the object that exists
  belongs to another trial.
- poll reads the resource (from a list+watch cache, else a GET) and decides with the
  trial's successCondition/failureCondition, or the kind's defaults
  (katib.controller.conditions), failure first as in Katib. When it has ended, the
  outcome comes from the primary pod (labels ``katib.kubeflow.org/trial`` plus
  primaryPodLabels): the primary container's exit code, and its termination message,
  which our collector fills with its result (early stopped, why metrics were missing).
  The metrics themselves go from the collector in the pod straight to DBManager.
- Finished, and not ``retain``: the outcome is recorded in a small ConfigMap
  ``<trial>-outcome`` (labelled with the trial) and the resource is deleted with
  foreground propagation. The record is what lets a restarted controller, or a second
  launch, tell "finished and cleaned up" from "never started" without any memory here.
- stop records a "stopped" outcome and deletes the resource; with ``retain`` it keeps
  the resource and stops its pods instead (Job/TrainJob ``spec.suspend``, training-
  operator ``spec.runPolicy.suspend``, Argo ``spec.shutdown: Terminate``, Tekton
  ``spec.status: Cancelled``), marking the resource with the stopped outcome.
- A resource that vanished with no record, for a trial that had been marked Running
  (or launched by this instance), is LOST.
- API errors map onto katib.errors: 5xx, 429, timeouts and unreachable servers are
  UnavailableError (retryable: the controller retries the pass), everything else an
  ExecutorError naming the resource.

Watches: one list+watch per (kind, namespace) keeps a cache of the trial resources
(label selector ``katib.kubeflow.org/trial``); it resumes from the last
resourceVersion and relists on 410 Gone, so polling many trials costs no requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from katib.api.models import Experiment, Trial
from katib.errors import ExecutorError, InvalidArgumentError, KatibError, UnavailableError
from katib.executors.base import BaseExecutor, LaunchContext, TrialOutcome, TrialPhase

log = logging.getLogger(__name__)

EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
TRIAL_LABEL = "katib.kubeflow.org/trial"
OUTCOME_LABEL = "katib.kubeflow.org/outcome"
STOPPED_ANNOTATION = "katib.kubeflow.org/stopped"
OUTCOME_SUFFIX = "-outcome"
#: Containers our manifests add for the collector (Katib's names for the sidecar).
COLLECTOR_CONTAINERS = ("metrics-logger-and-collector", "metrics-collector")
PROPAGATION_POLICIES = ("Foreground", "Background", "Orphan")
#: What the primary container prints last when its collector stopped it early.
EARLY_STOPPED_LINE = "Training Container was Early Stopped"

T = TypeVar("T")


def api_client_for(host: str, *, token: str | None = None) -> k8s.ApiClient:
    """An ApiClient for an API server at `host` (http://127.0.0.1:port for the test double).

    No urllib3 retries: a failed call surfaces at once and the controller's pass retries.
    """
    configuration = k8s.Configuration(host=host)
    configuration.retries = False
    configuration.connection_pool_maxsize = 16
    if token:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return k8s.ApiClient(configuration)


def load_api_client(
    kube_context: str | None = None, kubeconfig: str | None = None
) -> k8s.ApiClient:
    """In-cluster config when running in a pod (and no context is named), else kubeconfig."""
    configuration = k8s.Configuration()
    try:
        if (
            kube_context is None
            and kubeconfig is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
        ):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=kube_context, client_configuration=configuration
            )
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        where = f" (context {kube_context!r})" if kube_context else ""
        raise ExecutorError(
            f"no usable Kubernetes configuration{where}: {exc}; set KUBECONFIG or "
            "--kube-context, or run inside a cluster"
        ) from None
    configuration.retries = False
    configuration.connection_pool_maxsize = 16
    return k8s.ApiClient(configuration)


@dataclass(frozen=True)
class ResourceKind:
    """A trial resource type as the API serves it."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def is_job(self) -> bool:
        return self.api_version == "batch/v1" and self.kind == "Job"


JOB = ResourceKind("batch/v1", "Job", "jobs")

#: Merge patches that stop a retained resource's pods but keep the resource.
_STOP_PATCHES: dict[str, dict[str, Any]] = {
    "Job": {"spec": {"suspend": True}},
    "TrainJob": {"spec": {"suspend": True}},
    "TFJob": {"spec": {"runPolicy": {"suspend": True}}},
    "PyTorchJob": {"spec": {"runPolicy": {"suspend": True}}},
    "XGBoostJob": {"spec": {"runPolicy": {"suspend": True}}},
    "MPIJob": {"spec": {"runPolicy": {"suspend": True}}},
    "Workflow": {"spec": {"shutdown": "Terminate"}},
    "PipelineRun": {"spec": {"status": "Cancelled"}},
}


def _body_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return (exc.body or "").strip()[:200]
    return str(body.get("message") or "") if isinstance(body, dict) else ""


class KubernetesApiError(ExecutorError):
    """The API refused a call (4xx); `status` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class KubernetesUnavailableError(UnavailableError):
    """The API failed (5xx, 429), timed out or could not be reached; retrying may help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _map_api_error(what: str, exc: ApiException) -> KatibError:
    status = exc.status or 0
    detail = _body_message(exc)
    text = f"{what}: the Kubernetes API answered {status} {exc.reason or ''}".rstrip()
    if detail:
        text += f": {detail}"
    if status >= 500 or status == 429:
        return KubernetesUnavailableError(text, status)
    return KubernetesApiError(text, status)


def _condition_error(exc: InvalidArgumentError, what: str) -> ExecutorError:
    return ExecutorError(f"{what}: {exc}")


class _Watcher:
    """A list+watch cache of one kind's trial resources in one namespace."""

    def __init__(self, executor: KubernetesExecutor, kind: ResourceKind, namespace: str) -> None:
        self.executor, self.kind, self.namespace = executor, kind, namespace
        self.items: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.relists = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"watch-{kind.plural}-{namespace}", daemon=True
        )
        self._watch: k8s_watch.Watch | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """End the watch now: close its open stream (else it ends at its timeout)."""
        self.stopped.set()
        current = self._watch
        if current is not None:
            current.stop()
            response = getattr(current, "_resp", None)  # the stream being read, if any
            if response is not None:
                with contextlib.suppress(Exception):
                    response.shutdown()

    def get(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.items.get(name)
            return json.loads(json.dumps(obj)) if obj is not None else None

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                version = self._relist()
                self._follow(version)
            except Exception as exc:  # a watch thread must never die
                self.synced.clear()
                if not self.stopped.is_set():
                    log.info(
                        "watch of %s in %s: %s; relisting", self.kind.plural, self.namespace, exc
                    )
                self.stopped.wait(self.executor.watch_backoff)

    def _relist(self) -> str:
        items, version = self.executor._list(self.kind, self.namespace, TRIAL_LABEL)
        with self.lock:
            self.items = {item["metadata"]["name"]: item for item in items}
            self.relists += 1
        self.synced.set()
        return version

    def _follow(self, version: str) -> None:
        """Apply watch events from `version` on; return to relist on 410 Gone."""
        ex = self.executor
        while not self.stopped.is_set():
            self._watch = k8s_watch.Watch()
            func, args = ex._list_function(self.kind, self.namespace)
            try:
                for event in self._watch.stream(
                    func,
                    *args,
                    label_selector=TRIAL_LABEL,
                    resource_version=version,
                    timeout_seconds=max(1, int(ex.watch_timeout)),
                    allow_watch_bookmarks=True,
                    deserialize=False,
                    _request_timeout=ex.watch_timeout + ex.request_timeout,
                ):
                    obj = event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    version = meta.get("resourceVersion") or version
                    name = meta.get("name")
                    if event.get("type") == "BOOKMARK" or not name:
                        continue
                    with self.lock:
                        if event.get("type") == "DELETED":
                            self.items.pop(name, None)
                        else:
                            self.items[name] = obj
            except ApiException as exc:
                if exc.status == 410:
                    log.info(
                        "watch of %s in %s expired (410 Gone): relisting",
                        self.kind.plural,
                        self.namespace,
                    )
                    return
                raise


class KubernetesExecutor(BaseExecutor):
    """Runs each trial as the resource its template describes, in the experiment's namespace."""

    name = "kubernetes"

    def __init__(
        self,
        api_client: k8s.ApiClient | None = None,
        *,
        kube_context: str | None = None,
        collector: str = "sidecar",
        collector_image: str = "katib-local:latest",
        db_manager_address: str | None = None,
        token_secret: str | None = None,
        image_pull_policy: str | None = None,
        propagation_policy: str = "Foreground",
        request_timeout: float = 10.0,
        watch: bool = True,
        watch_timeout: float = 30.0,
    ) -> None:
        """``api_client``: an explicit client (tests: `api_client_for(double.url)`); else
        in-cluster config or kubeconfig (``kube_context``). ``db_manager_address``: the
        address trial pods dial (e.g. ``katib-db-manager.kubeflow:6789``), instead of the
        controller's own. ``request_timeout``: seconds per API call."""
        if propagation_policy not in PROPAGATION_POLICIES:
            raise ExecutorError(
                f"propagation policy {propagation_policy!r} is not one of "
                f"{', '.join(PROPAGATION_POLICIES)}"
            )
        if collector not in ("sidecar", "wrapper"):
            raise ExecutorError(f"collector {collector!r} is not 'sidecar' or 'wrapper'")
        self._owns_client = api_client is None
        self.api = api_client if api_client is not None else load_api_client(kube_context)
        self.collector = collector
        self.collector_image = collector_image
        self.db_manager_address = db_manager_address
        self.token_secret = token_secret
        self.image_pull_policy = image_pull_policy
        self.propagation_policy = propagation_policy
        self.request_timeout = request_timeout
        self.watch_enabled = watch
        self.watch_timeout = watch_timeout
        self.watch_backoff = 0.2
        self._batch = k8s.BatchV1Api(self.api)
        self._core = k8s.CoreV1Api(self.api)
        self._custom = k8s.CustomObjectsApi(self.api)
        self._kinds: dict[tuple[str, str], ResourceKind] = {("batch/v1", "Job"): JOB}
        self._watchers: dict[tuple[ResourceKind, str], _Watcher] = {}
        self._launched: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # --- API plumbing --------------------------------------------------------------
    def _call(self, what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call with the timeout; errors mapped onto katib.errors."""
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            raise _map_api_error(what, exc) from None
        except urllib3.exceptions.TimeoutError:
            raise KubernetesUnavailableError(
                f"{what}: the Kubernetes API did not answer within {self.request_timeout:g} s"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesUnavailableError(
                f"{what}: cannot reach the Kubernetes API: {exc}"
            ) from None

    def _json(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call whose raw JSON answer we want (no model validation of unknown fields)."""
        response = self._call(what, func, *args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data or b"null")
        except ValueError:
            raise ExecutorError(
                f"{what}: the Kubernetes API sent an answer that is not JSON"
            ) from None

    def resolve(self, api_version: str, kind: str) -> ResourceKind:
        """The plural under which the cluster serves `kind` in `api_version` (discovery)."""
        key = (api_version, kind)
        found = self._kinds.get(key)
        if found is not None:
            return found
        group, _, version = api_version.rpartition("/")
        if not group:
            raise ExecutorError(
                f"trial kind {kind} ({api_version}) is in the core API group; trials must be "
                "a Job or a custom resource such as TFJob, PyTorchJob, TrainJob or Workflow"
            )
        what = f"discovery of {api_version}"
        try:
            answer = self._json(what, self._custom.get_api_resources, group, version)
        except ExecutorError as exc:
            if not _is_status(exc, 404):
                raise
            answer = {"resources": []}
        for resource in answer.get("resources") or []:
            if resource.get("kind") == kind and "/" not in str(resource.get("name")):
                found = ResourceKind(api_version, kind, str(resource["name"]))
                self._kinds[key] = found
                return found
        raise ExecutorError(
            f"the cluster does not serve {kind} in {api_version}: is its operator (CRD) installed?"
        )

    def _list_function(
        self, kind: ResourceKind, namespace: str
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if kind.is_job:
            return self._batch.list_namespaced_job, (namespace,)
        return self._custom.list_namespaced_custom_object, (
            kind.group,
            kind.version,
            namespace,
            kind.plural,
        )

    def _list(
        self, kind: ResourceKind, namespace: str, selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        func, args = self._list_function(kind, namespace)
        answer = self._json(
            f"list {kind.plural} in {namespace}", func, *args, label_selector=selector
        )
        return list(answer.get("items") or []), str(
            (answer.get("metadata") or {}).get("resourceVersion") or "0"
        )

    def _get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"{kind.kind} {namespace}/{name}"
        try:
            if kind.is_job:
                result: dict[str, Any] = self._json(
                    what, self._batch.read_namespaced_job, name, namespace
                )
            else:
                result = self._json(
                    what,
                    self._custom.get_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    name,
                )
        except ExecutorError as exc:
            if _is_status(exc, 404):
                return None
            raise
        return result

    def _create(self, kind: ResourceKind, namespace: str, body: dict[str, Any]) -> bool:
        """Create; False when an object of that name already exists (409)."""
        what = f"{kind.kind} {namespace}/{body['metadata']['name']}"
        try:
            if kind.is_job:
                self._json(what, self._batch.create_namespaced_job, namespace, body)
            else:
                self._json(
                    what,
                    self._custom.create_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    body,
                )
        except ExecutorError as exc:
            if _is_status(exc, 409):
                return False
            raise
        return True

    def _patch(self, kind: ResourceKind, namespace: str, name: str, patch: dict[str, Any]) -> None:
        what = f"{kind.kind} {namespace}/{name}"
        ctype = "application/merge-patch+json"
        if kind.is_job:
            self._json(
                what, self._batch.patch_namespaced_job, name, namespace, patch, _content_type=ctype
            )
        else:
            self._json(
                what,
                self._custom.patch_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                patch,
                _content_type=ctype,
            )

    def _delete(self, kind: ResourceKind, namespace: str, name: str) -> None:
        """Delete with the configured propagation policy; a missing object is fine."""
        what = f"{kind.kind} {namespace}/{name}"
        options = k8s.V1DeleteOptions(propagation_policy=self.propagation_policy)
        try:
            if kind.is_job:
                self._call(
                    what,
                    self._batch.delete_namespaced_job,
                    name,
                    namespace,
                    body=options,
                    _preload_content=False,
                )
            else:
                self._call(
                    what,
                    self._custom.delete_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    name,
                    body=options,
                    _preload_content=False,
                )
        except ExecutorError as exc:
            if not _is_status(exc, 404):
                raise

    # --- what a trial is -----------------------------------------------------------
    def _kind_of(self, trial: Trial) -> ResourceKind:
        run_spec = trial.spec.run_spec or {}
        api_version, kind = run_spec.get("apiVersion"), run_spec.get("kind")
        if not api_version or not kind:
            raise ExecutorError(
                f"trial {trial.name} has no rendered run spec with apiVersion and kind"
            )
        return self.resolve(str(api_version), str(kind))

    def _conditions(self, trial: Trial, kind: ResourceKind) -> tuple[str, str]:
        from katib.controller.conditions import default_conditions

        spec = trial.spec
        if spec.success_condition and spec.failure_condition:
            return spec.success_condition, spec.failure_condition
        try:
            return default_conditions(kind.api_version, kind.kind)
        except InvalidArgumentError as exc:
            raise _condition_error(exc, f"trial {trial.name}") from None

    def _verdict(self, trial: Trial, kind: ResourceKind, obj: Mapping[str, Any]) -> str | None:
        """ "failed", "succeeded" or None (still running), failure looked at first."""
        from katib.controller.conditions import evaluate

        success, failure = self._conditions(trial, kind)
        try:
            if evaluate(failure, obj):
                return "failed"
            if evaluate(success, obj):
                return "succeeded"
        except InvalidArgumentError as exc:
            raise _condition_error(exc, f"trial {trial.name}") from None
        return None

    # --- launch --------------------------------------------------------------------
    def launch(self, trial: Trial, context: LaunchContext) -> None:
        from katib.executors.kubernetes_manifest import build_trial_manifest

        experiment = context.experiment
        if trial.namespace != experiment.namespace:
            raise ExecutorError(
                f"trial {trial.name} is in namespace {trial.namespace!r}, not in its experiment's "
                f"namespace {experiment.namespace!r}; trials run only in the experiment's namespace"
            )
        kind = self._kind_of(trial)
        self._conditions(trial, kind)  # an unusable kind fails before anything is created
        namespace, name = trial.namespace, trial.name
        if self._recorded(namespace, name) is not None:
            return  # finished and cleaned up: never run again
        try:
            manifest = build_trial_manifest(
                experiment,
                trial,
                db_manager_address=self.db_manager_address or context.db_manager_address,
                collector=self.collector,
                collector_image=self.collector_image,
                token_secret=self.token_secret,
                early_stopping_address=context.early_stopping_address,
                image_pull_policy=self.image_pull_policy,
            )
        except InvalidArgumentError as exc:  # the trial fails with the reason, not the run
            raise ExecutorError(f"trial {name}: cannot build its {kind.kind}: {exc}") from None
        meta = manifest.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace or meta.get("name", name) != name:
            raise ExecutorError(
                f"trial {name}: the rendered {kind.kind} is "
                f"{meta.get('namespace')}/{meta.get('name')}, not {namespace}/{name}"
            )
        meta.update(name=name, namespace=namespace)
        if not self._create(kind, namespace, manifest):
            existing = self._get(kind, namespace, name)
            owner = ((existing or {}).get("metadata", {}).get("labels") or {}).get(TRIAL_LABEL)
            if existing is None:
                raise KubernetesUnavailableError(
                    f"{kind.kind} {namespace}/{name}: the API answered 409 AlreadyExists but "
                    "the object cannot be read; launching again will tell"
                )
            if owner != name:
                raise ExecutorError(
                    f"{kind.kind} {namespace}/{name} already exists and does not belong to trial "
                    f"{name} (label {TRIAL_LABEL}={owner!r}); delete it or rename the experiment"
                )
        with self._lock:
            self._launched.add((namespace, name))
        self._watcher(kind, namespace)

    # --- poll ----------------------------------------------------------------------
    def _watcher(self, kind: ResourceKind, namespace: str) -> _Watcher | None:
        if not self.watch_enabled:
            return None
        with self._lock:
            watcher = self._watchers.get((kind, namespace))
            if watcher is None:
                watcher = self._watchers[(kind, namespace)] = _Watcher(self, kind, namespace)
                watcher.start()
            return watcher

    def _forget(self, kind: ResourceKind, namespace: str, name: str) -> None:
        """We just changed the object: read it afresh until the watch catches up."""
        with self._lock:
            watcher = self._watchers.get((kind, namespace))
        if watcher is not None:
            with watcher.lock:
                watcher.items.pop(name, None)

    def _read(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        watcher = self._watcher(kind, namespace)
        if watcher is not None and watcher.synced.is_set():
            cached = watcher.get(name)
            if cached is not None:
                return cached
        return self._get(kind, namespace, name)

    def _kind_or_none(self, trial: Trial) -> ResourceKind | None:
        """The trial's kind, or None when it cannot be known (no run spec, a kind the
        cluster does not serve); refusals and outages of the API still raise."""
        try:
            return self._kind_of(trial)
        except (KubernetesApiError, UnavailableError):
            raise
        except ExecutorError as exc:
            log.info("%s: %s", trial.name, exc)
            return None

    def poll(self, trial: Trial) -> TrialOutcome:
        kind = self._kind_or_none(trial)
        namespace, name = trial.namespace, trial.name
        if kind is None:  # launch will say why it cannot create it
            if self._was_launched(trial):
                return TrialOutcome(
                    TrialPhase.LOST,
                    message=f"trial {name}: the cluster no longer serves its resource kind",
                )
            return TrialOutcome(TrialPhase.NOT_STARTED)
        obj = self._read(kind, namespace, name)
        if obj is not None and not (obj.get("metadata") or {}).get("deletionTimestamp"):
            stopped = self._stopped_mark(obj)
            if stopped is not None:
                return stopped
            verdict = self._verdict(trial, kind, obj)
            if verdict is None:
                return TrialOutcome(TrialPhase.RUNNING)
            outcome = self._outcome(trial, obj, verdict)
            if not trial.spec.retain_run:
                self._record(trial, outcome)
                self._delete(kind, namespace, name)
                self._forget(kind, namespace, name)
            return outcome
        recorded = self._recorded(namespace, name)
        if recorded is not None:
            return recorded
        what = f"{kind.kind} {namespace}/{name}"
        if obj is not None:
            return TrialOutcome(
                TrialPhase.LOST,
                message=f"{what} is being deleted by someone else before it finished",
            )
        if self._was_launched(trial):
            return TrialOutcome(
                TrialPhase.LOST,
                message=f"{what} vanished before it finished (deleted outside katib?)",
            )
        return TrialOutcome(TrialPhase.NOT_STARTED)

    def _was_launched(self, trial: Trial) -> bool:
        with self._lock:
            if (trial.namespace, trial.name) in self._launched:
                return True
        status = trial.status
        conditions = status.conditions if status is not None else []
        return any(str(c.type) == "Running" for c in conditions or [])

    def _primary_pods(self, trial: Trial) -> list[dict[str, Any]]:
        from katib.executors.kubernetes_manifest import pod_label_selector

        kind = (trial.spec.run_spec or {}).get("kind")
        # TrainJob pods come from its runtime and carry the JobSet's labels, not ours
        selector = pod_label_selector({"kind": kind, "metadata": {"name": trial.name}})
        extra = ",".join(f"{k}={v}" for k, v in (trial.spec.primary_pod_labels or {}).items())
        selector = f"{selector},{extra}" if extra else selector
        answer = self._json(
            f"pods of trial {trial.namespace}/{trial.name}",
            self._core.list_namespaced_pod,
            trial.namespace,
            label_selector=selector,
        )
        return list(answer.get("items") or [])

    def _outcome(self, trial: Trial, obj: Mapping[str, Any], verdict: str) -> TrialOutcome:
        """The ended trial's outcome from its resource and its primary pod."""
        primary_name = trial.spec.primary_container_name or ""
        exit_code: int | None = None
        container_note = ""
        result: dict[str, Any] = {}
        collector_error = ""
        primary_pod = ""
        for pod in self._primary_pods(trial):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated") or {}
                if not terminated:
                    continue
                cname = status.get("name")
                parsed = _parse_result(terminated.get("message") or "")
                if cname == primary_name or (not primary_name and exit_code is None):
                    exit_code = int(terminated.get("exitCode", 0))
                    primary_pod = str((pod.get("metadata") or {}).get("name") or "")
                    container_note = f"container {cname} exited with code {exit_code}" + (
                        f" ({terminated['reason']})" if terminated.get("reason") else ""
                    )
                    result = parsed or result
                elif cname in COLLECTOR_CONTAINERS:
                    result = result or parsed
                    if int(terminated.get("exitCode", 0)) != 0:
                        code = terminated.get("exitCode")
                        collector_error = f"metrics collector {cname} exited with code {code}"
        if not result and verdict == "succeeded" and primary_pod:
            result = self._early_stop_from_log(trial, primary_pod)
        early_stopped = bool(result.get("early_stopped"))
        reason = str(result.get("reason") or "")
        if verdict == "succeeded":
            message = str(result.get("error") or "")
            if early_stopped and not message:
                message = f"early stopped: {result.get('early_stopped_reason') or 'rules held'}"
            return TrialOutcome(
                TrialPhase.FINISHED,
                exit_code=0,
                message=message,
                early_stopped=early_stopped,
                metrics_reason=reason,
            )
        parts = [_condition_message(obj)]
        if container_note and exit_code:
            parts.append(container_note)
        if collector_error and not exit_code:  # the sidecar passes the command's code on
            parts.append(collector_error)
        if result.get("error"):
            parts.append(str(result["error"]))
        return TrialOutcome(
            TrialPhase.FINISHED,
            exit_code=exit_code if exit_code else 1,
            message="; ".join(p for p in parts if p),
            early_stopped=early_stopped,
            metrics_reason=reason,
        )

    def _early_stop_from_log(self, trial: Trial, pod: str) -> dict[str, Any]:
        """The sidecar layout's primary script ends its output with this line when the
        collector stopped the command (which then exits 0, as in Katib)."""
        response: Any = self._call(
            f"log of pod {trial.namespace}/{pod}",
            self._core.read_namespaced_pod_log,
            pod,
            trial.namespace,
            container=trial.spec.primary_container_name or None,
            tail_lines=5,
            _preload_content=False,
        )
        tail = bytes(response.data or b"").decode("utf-8", errors="replace")
        if EARLY_STOPPED_LINE in tail.splitlines():
            return {"early_stopped": True, "early_stopped_reason": "the collector's rules held"}
        return {}

    # --- outcome records -------------------------------------------------------------
    def _record(self, trial: Trial, outcome: TrialOutcome) -> None:
        """Keep the outcome in a ConfigMap before the resource goes (idempotent)."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": trial.name + OUTCOME_SUFFIX,
                "namespace": trial.namespace,
                "labels": {
                    **_trial_labels(trial),
                    OUTCOME_LABEL: "true",
                },
            },
            "data": {"outcome": json.dumps(_outcome_to_dict(outcome))},
        }
        what = f"ConfigMap {trial.namespace}/{trial.name}{OUTCOME_SUFFIX}"
        try:
            self._call(
                what,
                self._core.create_namespaced_config_map,
                trial.namespace,
                body,
                _preload_content=False,
            )
        except ExecutorError as exc:
            if not _is_status(exc, 409):
                raise

    def _recorded(self, namespace: str, name: str) -> TrialOutcome | None:
        what = f"ConfigMap {namespace}/{name}{OUTCOME_SUFFIX}"
        try:
            answer = self._json(
                what, self._core.read_namespaced_config_map, name + OUTCOME_SUFFIX, namespace
            )
        except ExecutorError as exc:
            if _is_status(exc, 404):
                return None
            raise
        labels = (answer.get("metadata") or {}).get("labels") or {}
        if labels.get(TRIAL_LABEL) != name or labels.get(OUTCOME_LABEL) != "true":
            return None  # somebody else's ConfigMap of that name
        try:
            return _outcome_from_dict(json.loads((answer.get("data") or {}).get("outcome") or "{}"))
        except (ValueError, TypeError):
            return TrialOutcome(TrialPhase.FINISHED, message=f"{what} holds an unreadable outcome")

    @staticmethod
    def _stopped_mark(obj: Mapping[str, Any]) -> TrialOutcome | None:
        text = ((obj.get("metadata") or {}).get("annotations") or {}).get(STOPPED_ANNOTATION)
        if not text:
            return None
        try:
            return _outcome_from_dict(json.loads(text))
        except (ValueError, TypeError):
            return TrialOutcome(TrialPhase.FINISHED, signal=15, message="stopped")

    # --- stop ----------------------------------------------------------------------
    def stop(self, trial: Trial) -> None:
        """Record a stopped outcome, then delete the resource (retain: stop its pods)."""
        kind = self._kind_or_none(trial)
        if kind is None:
            return  # nothing of that kind can exist
        namespace, name = trial.namespace, trial.name
        obj = self._get(kind, namespace, name)
        if obj is None or self._stopped_mark(obj) is not None:
            return
        verdict = self._verdict(trial, kind, obj)
        if verdict is not None:
            outcome = self._outcome(trial, obj, verdict)
        else:
            outcome = TrialOutcome(
                TrialPhase.FINISHED,
                signal=15,
                message=f"{kind.kind} {namespace}/{name} was stopped",
            )
        if trial.spec.retain_run:
            if verdict is not None:
                return  # it ended on its own: nothing to stop, and retained as it is
            patch: dict[str, Any] = {
                "metadata": {
                    "annotations": {STOPPED_ANNOTATION: json.dumps(_outcome_to_dict(outcome))}
                }
            }
            stop_patch = _STOP_PATCHES.get(kind.kind)
            if stop_patch is not None:
                patch = _merge(patch, stop_patch)
            self._patch(kind, namespace, name, patch)
            self._forget(kind, namespace, name)
            if stop_patch is None:
                self._delete_pods(trial)
            return
        self._record(trial, outcome)
        self._delete(kind, namespace, name)
        self._forget(kind, namespace, name)

    def _delete_pods(self, trial: Trial) -> None:
        """Stop a retained resource of a kind with no known suspend field: delete its pods."""
        what = f"pods of trial {trial.namespace}/{trial.name}"
        self._call(
            what,
            self._core.delete_collection_namespaced_pod,
            trial.namespace,
            label_selector=f"{TRIAL_LABEL}={trial.name}",
            _preload_content=False,
        )

    # --- beyond the contract -----------------------------------------------------------
    def find_trials(self, experiment: Experiment) -> dict[str, str]:
        """Trial resources of `experiment` on the cluster: name -> Running/Succeeded/Failed.

        From labels alone, so a restarted controller (or an operator) sees what runs.
        """
        template = experiment.spec.trial_template
        spec = (template.trial_spec if template is not None else None) or {}
        kind = self.resolve(
            str(spec.get("apiVersion") or "batch/v1"), str(spec.get("kind") or "Job")
        )
        items, _ = self._list(kind, experiment.namespace, f"{EXPERIMENT_LABEL}={experiment.name}")
        from katib.controller.conditions import default_conditions, evaluate

        success, failure = (
            (template.success_condition, template.failure_condition)
            if template is not None and template.success_condition and template.failure_condition
            else default_conditions(kind.api_version, kind.kind)
        )
        found: dict[str, str] = {}
        for item in items:
            name = (item.get("metadata") or {}).get("name", "")
            if evaluate(failure, item):
                found[name] = "Failed"
            elif evaluate(success, item):
                found[name] = "Succeeded"
            else:
                found[name] = "Running"
        return found

    def remove_experiment(self, experiment: Experiment) -> int:
        """Delete every trial resource and outcome record of `experiment` (found by its
        label); returns how many resources were deleted. For deleting an experiment."""
        template = experiment.spec.trial_template
        spec = (template.trial_spec if template is not None else None) or {}
        kind = self.resolve(
            str(spec.get("apiVersion") or "batch/v1"), str(spec.get("kind") or "Job")
        )
        selector = f"{EXPERIMENT_LABEL}={experiment.name}"
        items, _ = self._list(kind, experiment.namespace, selector)
        for item in items:
            self._delete(kind, experiment.namespace, str(item["metadata"]["name"]))
        self._call(
            f"outcome records of experiment {experiment.namespace}/{experiment.name}",
            self._core.delete_collection_namespaced_config_map,
            experiment.namespace,
            label_selector=f"{selector},{OUTCOME_LABEL}=true",
            _preload_content=False,
        )
        return len(items)

    def read_log(self, trial: Trial, tail_lines: int | None = None) -> str:
        """The primary container's log from the primary pod ("" when there is no pod)."""
        pods = self._primary_pods(trial)
        if not pods:
            return ""
        pod = pods[0]["metadata"]["name"]
        kwargs: dict[str, Any] = {"container": trial.spec.primary_container_name or None}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        response: Any = self._call(
            f"log of pod {trial.namespace}/{pod}",
            self._core.read_namespaced_pod_log,
            pod,
            trial.namespace,
            _preload_content=False,
            **kwargs,
        )
        return bytes(response.data or b"").decode("utf-8", errors="replace")

    def remove(self, trial: Trial) -> None:
        """Delete the trial's resource (even a retained one) and its outcome record."""
        self._delete(self._kind_of(trial), trial.namespace, trial.name)
        what = f"ConfigMap {trial.namespace}/{trial.name}{OUTCOME_SUFFIX}"
        try:
            self._call(
                what,
                self._core.delete_namespaced_config_map,
                trial.name + OUTCOME_SUFFIX,
                trial.namespace,
                _preload_content=False,
            )
        except ExecutorError as exc:
            if not _is_status(exc, 404):
                raise

    def watch_relists(self) -> int:
        """How many times the watches listed (1 each, plus one per 410 Gone or error)."""
        with self._lock:
            return sum(w.relists for w in self._watchers.values())

    def close(self) -> None:
        with self._lock:
            watchers = list(self._watchers.values())
            self._watchers.clear()
        for watcher in watchers:
            watcher.stop()
        for watcher in watchers:
            watcher.thread.join(timeout=2.0)
        if self._owns_client:
            self.api.close()


def _is_status(exc: KatibError, status: int) -> bool:
    return getattr(exc, "status", None) == status


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _trial_labels(trial: Trial) -> dict[str, str]:
    try:
        from katib.executors.kubernetes_manifest import trial_labels
    except ImportError:  # pragma: no cover - the renderer ships with this module
        return {TRIAL_LABEL: trial.name}
    return {**trial_labels(trial), TRIAL_LABEL: trial.name}


def _parse_result(message: str) -> dict[str, Any]:
    """Our collector's result (JSON) from a termination message; {} for any other text."""
    text = message.strip()
    if not text.startswith("{"):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _condition_message(obj: Mapping[str, Any]) -> str:
    """The reason and message of the resource's last true condition (or its phase message)."""
    status = obj.get("status") or {}
    for condition in reversed(status.get("conditions") or []):
        if condition.get("status") in ("True", "False") and condition.get("type") in (
            "Failed",
            "Succeeded",
            "Complete",
        ):
            reason, message = condition.get("reason") or "", condition.get("message") or ""
            return f"{reason}: {message}" if reason and message else reason or message
    phase, message = status.get("phase") or "", status.get("message") or ""
    return f"{phase}: {message}" if phase and message else message


def _outcome_to_dict(outcome: TrialOutcome) -> dict[str, Any]:
    return {
        "phase": str(outcome.phase),
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "message": outcome.message,
        "early_stopped": outcome.early_stopped,
        "metrics_reason": outcome.metrics_reason,
    }


def _outcome_from_dict(data: Mapping[str, Any]) -> TrialOutcome:
    return TrialOutcome(
        TrialPhase(str(data.get("phase") or TrialPhase.FINISHED)),
        exit_code=data.get("exit_code"),
        signal=data.get("signal"),
        message=str(data.get("message") or ""),
        early_stopped=bool(data.get("early_stopped")),
        metrics_reason=str(data.get("metrics_reason") or ""),
    )
