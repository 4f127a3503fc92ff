"""Trials as Kubernetes resources: a batch/v1 Job by default, any trial kind from the template.

The only module of the project that imports `kubernetes`: `KubernetesExecutor` makes
the API calls. The rest of the executor imports no client, so it reads (and tests)
without one: the executor contract over those calls is
katib.executors.kubernetes_lifecycle.TrialLifecycle, what the objects mean is decided in
katib.executors.kubernetes_outcome, names, kinds and the error mapping live in
katib.executors.kubernetes_resources, and the list+watch cache in
katib.executors.kubernetes_watch. All state is on the cluster.

- launch renders the trial's resource (katib.executors.kubernetes_manifest) in the
  experiment's namespace and creates it: Jobs through BatchV1Api, every other kind
  (TFJob, PyTorchJob, XGBoostJob, MPIJob, TrainJob, Argo Workflow, Tekton PipelineRun,
  ...) through CustomObjectsApi, its plural found by discovery from apiVersion + kind.
  409 AlreadyExists is success (launch is idempotent), unless the object that exists
  belongs to another trial.
- poll reads the resource (from the watch cache, else a GET) and decides with the
  trial's conditions. When it has ended, the outcome comes from the primary pod; the
  metrics go from the collector in the pod straight to DBManager.
- Finished, and not ``retain``: the outcome is recorded in a ConfigMap
  ``<trial>-outcome`` and the resource is deleted (foreground propagation by default).
  The record lets a restarted controller, or a second launch, tell "finished and cleaned
  up" from "never started" without any memory here.
- stop records a "stopped" outcome and deletes the resource; with ``retain`` it keeps
  the resource and stops its pods with a merge patch instead.
- A resource that vanished with no record, for a trial that had been marked Running
  (or launched by this instance), is LOST.
- ConfigMap trial templates (``trialTemplate.configMap``, ``goTemplate.templateSpec``)
  are read from the cluster: while an executor is open, renders
  (katib.controller.templating) fetch them with ``read_namespaced_config_map``.
- API errors map onto katib.errors: 5xx, 429, timeouts and unreachable servers are
  UnavailableError (retryable), everything else an ExecutorError naming the resource.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from katib.api.models import Trial
from katib.controller import templating
from katib.errors import (
    ExecutorError,
    InvalidSpecError,
    Problem,
)
from katib.executors.base import TrialOutcome
from katib.executors.kubernetes_lifecycle import TrialLifecycle
from katib.executors.kubernetes_outcome import (
    outcome_from_record,
    record_body,
)
from katib.executors.kubernetes_resources import (
    COLLECTOR_CONTAINERS,
    EARLY_STOPPED_LINE,
    EXPERIMENT_LABEL,
    JOB,
    MERGE_PATCH,
    OUTCOME_LABEL,
    OUTCOME_SUFFIX,
    PROPAGATION_POLICIES,
    STOPPED_ANNOTATION,
    TRIAL_LABEL,
    KubernetesApiError,
    KubernetesUnavailableError,
    ResourceKind,
    api_error,
    is_status,
    pod_selector,
)
from katib.executors.kubernetes_watch import WatchExpired, WatchStream

__all__ = [
    "COLLECTOR_CONTAINERS",
    "EARLY_STOPPED_LINE",
    "EXPERIMENT_LABEL",
    "JOB",
    "OUTCOME_LABEL",
    "OUTCOME_SUFFIX",
    "PROPAGATION_POLICIES",
    "STOPPED_ANNOTATION",
    "TRIAL_LABEL",
    "KubernetesApiError",
    "KubernetesExecutor",
    "KubernetesUnavailableError",
    "ResourceKind",
    "api_client_for",
    "load_api_client",
]


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


# --- ConfigMap trial templates --------------------------------------------------------------

#: Open executors, oldest first; the newest reads ConfigMap templates for every render.
_template_readers: list[weakref.ref[KubernetesExecutor]] = []
_readers_lock = threading.Lock()


def _cluster_configmap(name: str, namespace: str) -> Mapping[str, str] | None:
    """The fetcher installed in katib.controller.templating while an executor is open."""
    with _readers_lock:
        live = [ref() for ref in _template_readers]
    for executor in reversed(live):
        if executor is not None:
            return executor.read_template_configmap(name, namespace)
    return None


def _install_template_reader(executor: KubernetesExecutor) -> weakref.ref[KubernetesExecutor]:
    ref = weakref.ref(executor)
    with _readers_lock:
        _template_readers.append(ref)
        templating.use_configmap_fetcher(_cluster_configmap)
    return ref


def _remove_template_reader(ref: weakref.ref[KubernetesExecutor]) -> None:
    """Closed (or collected): the last one out puts the local lookup back."""
    with _readers_lock:
        _template_readers[:] = [r for r in _template_readers if r is not ref and r() is not None]
        if not _template_readers and templating._installed_fetcher is _cluster_configmap:
            templating.use_configmap_fetcher(None)


class _ClientWatchStream:
    """One watch request of the trial resources through the official client."""

    def __init__(
        self, executor: KubernetesExecutor, kind: ResourceKind, namespace: str, version: str
    ) -> None:
        self._executor, self._kind, self._namespace, self._version = (
            executor,
            kind,
            namespace,
            version,
        )
        self._watch = k8s_watch.Watch()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ex = self._executor
        func, args = ex._list_function(self._kind, self._namespace)
        try:
            yield from self._watch.stream(
                func,
                *args,
                label_selector=TRIAL_LABEL,
                resource_version=self._version,
                timeout_seconds=max(1, int(ex.watch_timeout)),
                allow_watch_bookmarks=True,
                deserialize=False,
                _request_timeout=ex.watch_timeout + ex.request_timeout,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(str(exc.reason or "Gone")) from None
            raise

    def close(self) -> None:
        self._watch.stop()
        response = getattr(self._watch, "_resp", None)  # the stream being read, if any
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()


class KubernetesExecutor(TrialLifecycle):
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
        super().__init__(watch=watch)
        self.watch_timeout = watch_timeout
        self._batch = k8s.BatchV1Api(self.api)
        self._core = k8s.CoreV1Api(self.api)
        self._custom = k8s.CustomObjectsApi(self.api)
        self._kinds: dict[tuple[str, str], ResourceKind] = {("batch/v1", "Job"): JOB}
        # ConfigMap trial templates render from the cluster while this executor is open
        ref = _install_template_reader(self)
        self._template_reader = weakref.finalize(self, _remove_template_reader, ref)

    # --- API plumbing --------------------------------------------------------------
    def _call(self, what: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call with the timeout; errors mapped onto katib.errors."""
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return func(*args, **kwargs)
        except ApiException as exc:
            raise api_error(what, exc.status, exc.reason, exc.body) from None
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

    def _absent_ok(self, what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A JSON call for which 404 means "not there": None."""
        try:
            return self._json(what, func, *args, **kwargs)
        except ExecutorError as exc:
            if is_status(exc, 404):
                return None
            raise

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
        answer = self._absent_ok(what, self._custom.get_api_resources, group, version) or {}
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

    def _custom_args(self, kind: ResourceKind, namespace: str) -> tuple[str, str, str, str]:
        return kind.group, kind.version, namespace, kind.plural

    def _get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        what = f"{kind.kind} {namespace}/{name}"
        if kind.is_job:
            return self._absent_ok(what, self._batch.read_namespaced_job, name, namespace)
        return self._absent_ok(
            what,
            self._custom.get_namespaced_custom_object,
            *self._custom_args(kind, namespace),
            name,
        )

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
                    *self._custom_args(kind, namespace),
                    body,
                )
        except ExecutorError as exc:
            if is_status(exc, 409):
                return False
            raise
        return True

    def _patch(self, kind: ResourceKind, namespace: str, name: str, patch: dict[str, Any]) -> None:
        what = f"{kind.kind} {namespace}/{name}"
        if kind.is_job:
            self._json(
                what,
                self._batch.patch_namespaced_job,
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,
            )
        else:
            self._json(
                what,
                self._custom.patch_namespaced_custom_object,
                *self._custom_args(kind, namespace),
                name,
                patch,
                _content_type=MERGE_PATCH,
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
                    *self._custom_args(kind, namespace),
                    name,
                    body=options,
                    _preload_content=False,
                )
        except ExecutorError as exc:
            if not is_status(exc, 404):
                raise

    # --- ConfigMap trial templates ---------------------------------------------------
    def read_template_configmap(self, name: str, namespace: str) -> dict[str, str]:
        """The data of the ConfigMap a trial template names, read from the cluster.

        Installed as katib.controller.templating's fetcher while this executor is open;
        a ConfigMap the cluster does not have is an InvalidSpecError naming it.
        """
        what = f"ConfigMap {namespace}/{name} (trial template)"
        answer = self._absent_ok(what, self._core.read_namespaced_config_map, name, namespace)
        if answer is None:
            raise InvalidSpecError(
                [
                    Problem(
                        "spec.trialTemplate",
                        f"configMap not found on the Kubernetes cluster: {namespace}/{name} "
                        "(the kubernetes executor reads trial templates from the cluster: "
                        "create the ConfigMap there, e.g. kubectl apply -f FILE)",
                    )
                ]
            )
        data = answer.get("data") or {}
        return {str(key): str(value) for key, value in data.items()}

    def _primary_pods(self, trial: Trial) -> list[dict[str, Any]]:
        answer = self._json(
            f"pods of trial {trial.namespace}/{trial.name}",
            self._core.list_namespaced_pod,
            trial.namespace,
            label_selector=pod_selector(trial),
        )
        return list(answer.get("items") or [])

    def _pod_log(self, trial: Trial, pod: str, tail_lines: int | None = None) -> str:
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

    # --- outcome records -------------------------------------------------------------
    def _record(self, trial: Trial, outcome: TrialOutcome) -> None:
        """Keep the outcome in a ConfigMap before the resource goes (idempotent)."""
        what = f"ConfigMap {trial.namespace}/{trial.name}{OUTCOME_SUFFIX}"
        try:
            self._call(
                what,
                self._core.create_namespaced_config_map,
                trial.namespace,
                record_body(trial, outcome),
                _preload_content=False,
            )
        except ExecutorError as exc:
            if not is_status(exc, 409):
                raise

    def _recorded(self, namespace: str, name: str) -> TrialOutcome | None:
        what = f"ConfigMap {namespace}/{name}{OUTCOME_SUFFIX}"
        answer = self._absent_ok(
            what, self._core.read_namespaced_config_map, name + OUTCOME_SUFFIX, namespace
        )
        return None if answer is None else outcome_from_record(answer, name)

    def _delete_pods(self, trial: Trial) -> None:
        """Stop a retained resource of a kind with no known suspend field: delete its pods."""
        self._call(
            f"pods of trial {trial.namespace}/{trial.name}",
            self._core.delete_collection_namespaced_pod,
            trial.namespace,
            label_selector=f"{TRIAL_LABEL}={trial.name}",
            _preload_content=False,
        )

    def _delete_records(self, namespace: str, selector: str) -> None:
        self._call(
            f"outcome records in {namespace} ({selector})",
            self._core.delete_collection_namespaced_config_map,
            namespace,
            label_selector=f"{selector},{OUTCOME_LABEL}=true",
            _preload_content=False,
        )

    def _delete_record(self, trial: Trial) -> None:
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
            if not is_status(exc, 404):
                raise

    def _watch_stream(self, kind: ResourceKind, namespace: str, version: str) -> WatchStream:
        return _ClientWatchStream(self, kind, namespace, version)

    def close(self) -> None:
        self._template_reader()  # ConfigMap templates no longer read through this one
        self._stop_watchers()
        if self._owns_client:
            self.api.close()
