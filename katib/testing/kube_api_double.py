"""A Kubernetes API server double: real HTTP on 127.0.0.1, enough API for the official client.

Why a server and not a patched client: the Kubernetes executor's requests (paths, query
parameters, patch content types, delete options, watch streams) are the thing under test,
so they go over a socket exactly as they would to a cluster. Users can test their own code
the same way::

    with KubeApiDouble() as kube:
        executor = KubernetesExecutor(api_client=api_client_for(kube.url))

It serves discovery (/version, /api, /api/v1, /apis, /apis/{group}/{version}) so the
dynamic client works, namespaced CRUD (GET, list with labelSelector, POST, PUT, PATCH
as merge or JSON patch, DELETE with propagationPolicy, deletecollection) for batch/v1
Jobs, core/v1 Pods, ConfigMaps and the trial kinds (TFJob, PyTorchJob, XGBoostJob,
MPIJob, TrainJob, Argo Workflow, Tekton PipelineRun), pods/log, and watches
(``?watch=true``: JSON lines from a resourceVersion; ERROR 410 when it is compacted).

A simulated controller and kubelet (a background thread) turns each trial resource
into pods that run for a while and end with the exit code `behaviour` chose, and sets
the resource's status the way each kind's operator does (Job conditions Complete/
Failed, training-operator Succeeded/Failed, TrainJob Complete/Failed, Argo
``status.phase``, Tekton's Succeeded condition); suspension and foreground/background
deletion are honoured. Faults are injected by `inject` (any status, e.g. 409/404/500, a
410 ERROR event on watches, or a delay that makes the client time out).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


#: Everything the double serves (the trial kinds of the reference, plus what they need).
RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "pods", "Pod"),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("kubeflow.org", "v1", "tfjobs", "TFJob"),
    ResourceType("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"),
    ResourceType("kubeflow.org", "v1", "xgboostjobs", "XGBoostJob"),
    ResourceType("kubeflow.org", "v1", "mpijobs", "MPIJob"),
    ResourceType("kubeflow.org", "v2beta1", "mpijobs", "MPIJob"),
    ResourceType("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
    ResourceType("argoproj.io", "v1alpha1", "workflows", "Workflow"),
    ResourceType("tekton.dev", "v1", "pipelineruns", "PipelineRun"),
    ResourceType("tekton.dev", "v1beta1", "pipelineruns", "PipelineRun"),
)
_BY_PATH = {(t.group, t.version, t.plural): t for t in RESOURCE_TYPES}
_POD_TYPE = _BY_PATH[("", "v1", "pods")]
_POD_KINDS = frozenset({"Pod", "ConfigMap", "Secret", "Event"})  # not run by the controller
_KUBEFLOW_REPLICAS = {
    "TFJob": "tfReplicaSpecs",
    "PyTorchJob": "pytorchReplicaSpecs",
    "XGBoostJob": "xgbReplicaSpecs",
    "MPIJob": "mpiReplicaSpecs",
}
_MASTER_TYPES = ("master", "chief", "launcher")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodScript:
    """What a simulated pod does: run `seconds` (None: until `finish` is called), then end."""

    exit_code: int = 0
    seconds: float | None = 0.05
    log: str = ""
    termination_message: str = ""


#: Chooses a pod's script from the trial resource and the pod's primary container.
Behaviour = Callable[[JsonDict, JsonDict], PodScript]


def _default_behaviour(resource: JsonDict, container: JsonDict) -> PodScript:
    return PodScript()


def program_behaviour(resource: JsonDict, container: JsonDict) -> PodScript:
    """What katib.testing.executors.PROGRAM does, read from the container's argv.

    The double runs no images, so a pod's fate comes from its ``--value=`` argument
    (wherever a collector wrapper or script put it): "fail" exits 1, "sleep" runs until
    stopped, anything else prints ``accuracy=<value>`` and exits 0.
    """
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    value = next((a.split("=", 1)[1] for a in reversed(argv) if a.startswith("--value=")), "")
    if value == "fail":
        return PodScript(exit_code=1, log="")
    if value == "sleep":
        return PodScript(seconds=None)
    return PodScript(log=f"accuracy={value}\n")


@dataclass
class Fault:
    """Make matching requests fail or stall.

    `status` answers with that HTTP status (a Status body) instead of serving the
    request; for a watch, status 410 sends an ERROR event (code 410) in the stream, as
    the API server does for an expired resourceVersion. `delay` sleeps before answering
    (a client with a shorter timeout sees a timeout). `times` is how many requests it
    hits (None: all). `method` and `path` (a regex searched in the path) select them;
    `watch` True/False limits it to watch / non-watch requests.
    """

    status: int | None = 500
    delay: float = 0.0
    times: int | None = 1
    method: str = "*"
    path: str = ""
    watch: bool | None = None
    hits: int = 0

    def matches(self, method: str, path: str, is_watch: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method):
            return False
        if self.watch is not None and self.watch != is_watch:
            return False
        return re.search(self.path, path) is not None


@dataclass
class _Pod:
    namespace: str
    name: str
    owner_uid: str
    script: PodScript
    started: float
    primary: str
    done: bool = False


@dataclass
class _Event:
    rv: int
    type: str
    rtype: ResourceType
    obj: JsonDict


class ApiStatusError(Exception):
    """Answer the request with a Status of this code."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status_body(code: int, reason: str, message: str) -> JsonDict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "AlreadyExists",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _policy(body: Any, query: Mapping[str, list[str]]) -> str | None:
    """The propagationPolicy of a delete (DeleteOptions body or query parameter)."""
    given = (body or {}).get("propagationPolicy") if isinstance(body, dict) else None
    return given or next(iter(query.get("propagationPolicy") or []), None)


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality (=, ==, !=), set (in, notin) and existence (k, !k) requirements."""
    for term in _split_selector(selector):
        match = re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term)
        if match:
            key, op, values = match.groups()
            allowed = {v.strip() for v in values.split(",")}
            if (op == "in") != (labels.get(key) in allowed):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (strategic merge patches are treated the same way)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(target: JsonDict, ops: list[JsonDict]) -> JsonDict:
    """RFC 6902 add/replace/remove/test on object paths (enough for the executor's needs)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                parent.pop(last, None)
        elif kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiStatusError(422, "Invalid", f"test operation failed at {op['path']}")
    return doc


def _pod_specs(resource: JsonDict) -> list[tuple[str, JsonDict, str]]:
    """(pod name suffix, pod template {metadata, spec}, replica role) per pod to simulate."""
    kind = resource.get("kind", "")
    spec = resource.get("spec") or {}
    if kind in _KUBEFLOW_REPLICAS:
        pods = []
        replicas = spec.get(_KUBEFLOW_REPLICAS[kind]) or {}
        # the operator's master role: Master/Chief/Launcher, else worker 0
        has_master = any(r.lower() in _MASTER_TYPES for r in replicas)
        for rtype, replica in replicas.items():
            for index in range(int(replica.get("replicas", 1) or 1)):
                master = rtype.lower() in _MASTER_TYPES or (not has_master and index == 0)
                role = "master" if master else rtype
                pods.append((f"{rtype.lower()}-{index}", replica.get("template") or {}, role))
        return pods
    if kind == "TrainJob":
        trainer = spec.get("trainer") or {}
        container = {k: trainer[k] for k in ("image", "command", "args", "env") if k in trainer}
        template: JsonDict = {
            "metadata": {},
            "spec": {"containers": [{"name": "node", **container}]},
        }
        for override in spec.get("podTemplateOverrides") or []:
            labels = (override.get("metadata") or {}).get("labels") or {}
            template["metadata"].setdefault("labels", {}).update(labels)
        return [("node-0-0", template, "node")]
    if kind == "Workflow":
        pods = []
        for tmpl in spec.get("templates") or []:
            if "container" in tmpl:
                container = {"name": "main", **tmpl["container"]}
                meta = copy.deepcopy(tmpl.get("metadata") or {})
                pod_meta = spec.get("podMetadata") or {}  # labels for every pod of the workflow
                meta.setdefault("labels", {}).update(pod_meta.get("labels") or {})
                pods.append(
                    (
                        tmpl.get("name", "step"),
                        {"metadata": meta, "spec": {"containers": [container]}},
                        "main",
                    )
                )
        return pods
    if kind == "PipelineRun":
        pods = []
        for task in (spec.get("pipelineSpec") or {}).get("tasks") or []:
            steps = (task.get("taskSpec") or {}).get("steps") or []
            containers = [{**s, "name": f"step-{s.get('name', i)}"} for i, s in enumerate(steps)]
            meta = (task.get("taskSpec") or {}).get("metadata") or {}
            if containers:
                pods.append(
                    (
                        f"{task.get('name', 'task')}-pod",
                        {"metadata": meta, "spec": {"containers": containers}},
                        "task",
                    )
                )
        return pods
    found: list[tuple[str, JsonDict, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            inner = node.get("spec")
            if isinstance(inner, dict) and isinstance(inner.get("containers"), list):
                found.append((f"{len(found)}", node, ""))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found


class KubeApiDouble:
    """The API server double; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        namespaces: tuple[str, ...] = ("default",),
        tick: float = 0.01,
    ) -> None:
        self.behaviour = behaviour or _default_behaviour
        self.namespaces: set[str] = set(namespaces)
        self.tick = tick
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.store: dict[tuple[ResourceType, str, str], JsonDict] = {}
        self.events: list[_Event] = []
        self.rv = itertools.count(100)
        self.current_rv = 100
        self.compacted_rv = 0
        self.faults: list[Fault] = []
        #: (method, path, query) of every request, for assertions.
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        #: (plural, namespace, name, propagationPolicy) of every delete.
        self.deletions: list[tuple[str, str, str, str | None]] = []
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._run_controller, daemon=True),
        ]

    # --- lifecycle -----------------------------------------------------------------
    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> KubeApiDouble:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        with self.changed:
            self.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> KubeApiDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- test controls -------------------------------------------------------------
    def inject(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def compact(self) -> None:
        """Forget history: watches from an older resourceVersion now get 410 Gone."""
        with self.changed:
            self.current_rv = next(self.rv)  # as if other writes happened meanwhile
            self.compacted_rv = self.current_rv
            self.events.clear()
            self.changed.notify_all()

    def add_namespace(self, name: str) -> None:
        with self.lock:
            self.namespaces.add(name)

    def get(self, plural: str, namespace: str, name: str) -> JsonDict | None:
        """A copy of a stored object (plural as in the URL, e.g. "jobs", "tfjobs")."""
        with self.lock:
            for (rtype, ns, n), obj in self.store.items():
                if rtype.plural == plural and ns == namespace and n == name:
                    return copy.deepcopy(obj)
        return None

    def objects(self, plural: str, namespace: str | None = None) -> list[JsonDict]:
        with self.lock:
            return [
                copy.deepcopy(obj)
                for (rtype, ns, _), obj in self.store.items()
                if rtype.plural == plural and namespace in (None, ns)
            ]

    def put_object(self, obj: JsonDict) -> JsonDict:
        """Store an object directly (e.g. a ConfigMap a test needs), as if created."""
        group, _, version = obj["apiVersion"].rpartition("/")
        rtype = next(
            t
            for t in RESOURCE_TYPES
            if t.kind == obj["kind"] and t.group == group and t.version == version
        )
        with self.changed:
            return self._create(rtype, obj["metadata"].get("namespace", "default"), obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        """Delete an object behind the client's back (a vanished trial); pods go with it."""
        with self.changed:
            for key in [
                k for k in self.store if k[0].plural == plural and k[1:] == (namespace, name)
            ]:
                self._drop(key)

    def finish(self, namespace: str, owner: str, exit_code: int = 0) -> None:
        """End the running pods of resource `owner` now with `exit_code`."""
        with self.changed:
            for key, obj in self.store.items():
                if key[1:] != (namespace, owner) or key[0].kind in _POD_KINDS:
                    continue
                uid = obj["metadata"]["uid"]
                for pod in self._pods.values():
                    if pod.owner_uid == uid and not pod.done:
                        pod.script = PodScript(
                            exit_code=exit_code,
                            seconds=0.0,
                            log=pod.script.log,
                            termination_message=pod.script.termination_message,
                        )
                        pod.started = 0.0

    def set_status(self, plural: str, namespace: str, name: str, status: JsonDict) -> None:
        """Replace an object's status (what an operator would do)."""
        with self.changed:
            for key, obj in self.store.items():
                if key[0].plural == plural and key[1:] == (namespace, name):
                    obj["status"] = copy.deepcopy(status)
                    self._modified(key)
                    return
        raise KeyError(f"{plural} {namespace}/{name}")

    # --- store ---------------------------------------------------------------------
    def _bump(self, rtype: ResourceType, kind: str, obj: JsonDict) -> None:
        self.current_rv = next(self.rv)
        obj["metadata"]["resourceVersion"] = str(self.current_rv)
        self.events.append(_Event(self.current_rv, kind, rtype, copy.deepcopy(obj)))
        self.changed.notify_all()

    def _modified(self, key: tuple[ResourceType, str, str]) -> None:
        self._bump(key[0], "MODIFIED", self.store[key])

    def _create(self, rtype: ResourceType, namespace: str, body: JsonDict) -> JsonDict:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiStatusError(422, "Invalid", f"{rtype.kind}: metadata.name: Required value")
        if meta.get("namespace", namespace) != namespace:
            raise ApiStatusError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if namespace not in self.namespaces:
            raise ApiStatusError(404, "NotFound", f'namespaces "{namespace}" not found')
        key = (rtype, namespace, name)
        if key in self.store:
            raise ApiStatusError(
                409,
                "AlreadyExists",
                f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" already exists',
            )
        body["apiVersion"], body["kind"] = rtype.api_version, rtype.kind
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            generation=1,
        )
        self.store[key] = body
        self._bump(rtype, "ADDED", body)
        return body

    def _drop(self, key: tuple[ResourceType, str, str]) -> None:
        obj = self.store.pop(key, None)
        if obj is None:
            return
        self._bump(key[0], "DELETED", obj)
        if key[0].plural == "pods":
            self._pods.pop((key[1], key[2]), None)

    def _dependents(self, uid: str) -> list[tuple[ResourceType, str, str]]:
        return [
            key
            for key, obj in self.store.items()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _delete(
        self, rtype: ResourceType, namespace: str, name: str, policy: str | None
    ) -> JsonDict:
        key = (rtype, namespace, name)
        obj = self.store.get(key)
        self.deletions.append((rtype.plural, namespace, name, policy))
        if obj is None:
            raise ApiStatusError(404, "NotFound", self._not_found(rtype, name))
        uid = obj["metadata"]["uid"]
        if policy == "Foreground":
            # dependents first (the controller thread finishes the job), object after
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            self._modified(key)
            return copy.deepcopy(obj)
        if policy == "Orphan":
            for dep in self._dependents(uid):
                self.store[dep]["metadata"]["ownerReferences"] = [
                    r for r in self.store[dep]["metadata"]["ownerReferences"] if r.get("uid") != uid
                ]
        else:
            obj["metadata"].setdefault("annotations", {})["double/background-gc"] = uid
        self._drop(key)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": rtype.plural, "uid": uid},
        }

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> str:
        return f'{rtype.plural}{"." + rtype.group if rtype.group else ""} "{name}" not found'

    # --- the simulated controllers and kubelet ---------------------------------------
    def _run_controller(self) -> None:
        while not self._closing.wait(self.tick):
            with self.changed:
                self._step()

    def _step(self) -> None:
        owners = {obj["metadata"]["uid"]: key for key, obj in self.store.items()}
        # background garbage collection: pods whose owner is gone
        for key, obj in list(self.store.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and all(ref.get("uid") not in owners for ref in refs):
                self._drop(key)
        for key, obj in list(self.store.items()):
            rtype = key[0]
            if rtype.kind in _POD_KINDS or key not in self.store:
                continue
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                deps = self._dependents(meta["uid"])
                for dep in deps:
                    self._drop(dep)
                self._drop(key)
                continue
            if not obj.get("_double_started"):
                obj["_double_started"] = True
                if not self._suspended(obj):
                    self._start_pods(key, obj)
                continue
            self._advance(key, obj)

    def _start_pods(self, key: tuple[ResourceType, str, str], obj: JsonDict) -> None:
        rtype, namespace, name = key
        uid = obj["metadata"]["uid"]
        for suffix, template, role in _pod_specs(obj):
            tmeta = template.get("metadata") or {}
            pspec = copy.deepcopy(template.get("spec") or {})
            containers = pspec.get("containers") or []
            if not containers:
                continue
            labels = dict(tmeta.get("labels") or {})
            labels.update(self._operator_labels(obj, role, suffix))
            pod_name = f"{name}-{suffix}-{uuid.uuid4().hex[:5]}"
            primary = containers[0]
            script = self.behaviour(copy.deepcopy(obj), copy.deepcopy(primary))
            pod: JsonDict = {
                "metadata": {
                    "name": pod_name,
                    "labels": labels,
                    "annotations": dict(tmeta.get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": rtype.api_version,
                            "kind": rtype.kind,
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": pspec,
                "status": {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {
                            "name": c.get("name", ""),
                            "image": c.get("image", ""),
                            "imageID": "",
                            "ready": True,
                            "restartCount": 0,
                            "started": True,
                            "state": {"running": {"startedAt": _now()}},
                        }
                        for c in containers
                    ],
                },
            }
            self._create(_POD_TYPE, namespace, pod)
            self._pods[(namespace, pod_name)] = _Pod(
                namespace, pod_name, uid, script, time.monotonic(), primary.get("name", "")
            )
        self._set_running(obj)
        self._modified(key)

    @staticmethod
    def _operator_labels(obj: JsonDict, role: str, suffix: str) -> dict[str, str]:
        name, uid, kind = obj["metadata"]["name"], obj["metadata"]["uid"], obj["kind"]
        if kind == "Job":
            return {
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
            }
        if kind in _KUBEFLOW_REPLICAS:
            replica_type, _, index = suffix.rpartition("-")
            labels = {
                "training.kubeflow.org/job-name": name,
                "training.kubeflow.org/replica-type": replica_type,
                "training.kubeflow.org/replica-index": index,
            }
            if role == "master":
                labels["training.kubeflow.org/job-role"] = "master"
            return labels
        if kind == "TrainJob":
            return {
                "jobset.sigs.k8s.io/jobset-name": name,
                "jobset.sigs.k8s.io/replicatedjob-name": "node",
                "batch.kubernetes.io/job-completion-index": "0",
            }
        if kind == "Workflow":
            return {"workflows.argoproj.io/workflow": name}
        if kind == "PipelineRun":
            return {"tekton.dev/pipelineRun": name}
        return {}

    @staticmethod
    def _suspended(obj: JsonDict) -> bool:
        spec = obj.get("spec") or {}
        return bool(
            spec.get("suspend")
            or (spec.get("runPolicy") or {}).get("suspend")
            or spec.get("shutdown")
            or spec.get("status") in ("Cancelled", "CancelledRunFinally", "StoppedRunFinally")
        )

    def _advance(self, key: tuple[ResourceType, str, str], obj: JsonDict) -> None:
        if self._is_final(obj):
            return
        uid = obj["metadata"]["uid"]
        pods = [p for p in self._pods.values() if p.owner_uid == uid]
        if self._suspended(obj):
            for pod in pods:
                self._drop((_POD_TYPE, pod.namespace, pod.name))
            self._set_stopped(obj)
            self._modified(key)
            return
        now = time.monotonic()
        for pod in pods:
            seconds = pod.script.seconds
            if not pod.done and seconds is not None and now - pod.started >= seconds:
                self._terminate(pod)
        if pods and all(p.done for p in pods):
            failed = [p for p in pods if p.script.exit_code != 0]
            self._set_final(obj, not failed)
            self._modified(key)

    def _terminate(self, pod: _Pod) -> None:
        pod.done = True
        obj = self.store.get((_POD_TYPE, pod.namespace, pod.name))
        if obj is None:
            return
        code = pod.script.exit_code
        for status in obj["status"]["containerStatuses"]:
            primary = status["name"] == pod.primary
            exit_code = code if primary else 0
            status["ready"] = False
            status["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "message": pod.script.termination_message if primary else "",
                    "startedAt": status["state"].get("running", {}).get("startedAt", _now()),
                    "finishedAt": _now(),
                }
            }
        obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        self._modified((_POD_TYPE, pod.namespace, pod.name))

    @staticmethod
    def _is_final(obj: JsonDict) -> bool:
        status = obj.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed", "Error"):
            return True
        for cond in status.get("conditions") or []:
            if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                return True
            if cond.get("type") == "Succeeded" and cond.get("status") in ("True", "False"):
                return True
        return False

    @staticmethod
    def _condition(ctype: str, status: str, reason: str, message: str) -> JsonDict:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": _now(),
        }

    def _set_running(self, obj: JsonDict) -> None:
        kind = obj["kind"]
        status = obj.setdefault("status", {})
        status["startTime"] = _now()
        if kind == "Job":
            status["active"] = 1
        elif kind in _KUBEFLOW_REPLICAS:
            status["conditions"] = [
                self._condition("Created", "True", "JobCreated", "job is created"),
                self._condition("Running", "True", "JobRunning", "job is running"),
            ]
        elif kind == "Workflow":
            status["phase"] = "Running"
        elif kind == "PipelineRun":
            status["conditions"] = [
                self._condition("Succeeded", "Unknown", "Running", "Tasks Completed: 0")
            ]

    def _set_final(self, obj: JsonDict, ok: bool) -> None:
        kind = obj["kind"]
        status = obj.setdefault("status", {})
        status["completionTime"] = _now()
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Running"]
        if kind == "Job":
            status.pop("active", None)
            status["succeeded" if ok else "failed"] = 1
            conditions += (
                [
                    self._condition(
                        "SuccessCriteriaMet",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    self._condition(
                        "Complete",
                        "True",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                ]
                if ok
                else [
                    self._condition(
                        "FailureTarget",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                    self._condition(
                        "Failed",
                        "True",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                ]
            )
        elif kind in _KUBEFLOW_REPLICAS:
            conditions.append(self._condition("Running", "False", "JobRunning", "job is running"))
            conditions.append(
                self._condition(
                    "Succeeded",
                    "True",
                    "JobSucceeded",
                    f"{kind} {obj['metadata']['name']} successfully completed.",
                )
                if ok
                else self._condition(
                    "Failed",
                    "True",
                    "JobFailed",
                    f"{kind} {obj['metadata']['name']} has failed because one replica failed.",
                )
            )
        elif kind == "TrainJob":
            conditions.append(
                self._condition("Complete", "True", "JobsCompleted", "TrainJob is completed")
                if ok
                else self._condition("Failed", "True", "FailedJobs", "TrainJob has failed")
            )
        elif kind == "Workflow":
            status["phase"] = "Succeeded" if ok else "Failed"
            if not ok:
                status["message"] = "child failed"
        elif kind == "PipelineRun":
            conditions = [
                self._condition("Succeeded", "True", "Succeeded", "Tasks Completed: 1 (Failed: 0)")
                if ok
                else self._condition(
                    "Succeeded", "False", "Failed", "Tasks Completed: 1 (Failed: 1)"
                )
            ]
        else:
            status["phase"] = "Succeeded" if ok else "Failed"
        if conditions:
            status["conditions"] = conditions

    def _set_stopped(self, obj: JsonDict) -> None:
        kind = obj["kind"]
        status = obj.setdefault("status", {})
        if kind == "Workflow":
            status["phase"] = "Failed"
            status["message"] = "Stopped with strategy 'Terminate'"
        elif kind == "PipelineRun":
            status["conditions"] = [
                self._condition("Succeeded", "False", "Cancelled", "PipelineRun was cancelled")
            ]
        else:
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
            conditions.append(self._condition("Suspended", "True", "JobSuspended", "Job suspended"))
            status["conditions"] = conditions
            status.pop("active", None)

    # --- HTTP --------------------------------------------------------------------------
    def _fault_for(self, method: str, path: str, is_watch: bool) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, is_watch):
                    fault.hits += 1
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        return Handler

    def discovery(self, path: str) -> JsonDict | None:
        if path == "/version":
            return {
                "major": "1",
                "minor": "37",
                "gitVersion": "v1.37.0-double",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for t in RESOURCE_TYPES:
                if t.group:
                    groups.setdefault(t.group, [])
                    if t.version not in groups[t.group]:
                        groups[t.group].append(t.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        match = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
        if not match:
            return None
        group, version = ("", "v1") if match.group(1) else (match.group(2), match.group(3))
        types = [t for t in RESOURCE_TYPES if t.group == group and t.version == version]
        if not types:
            return None
        resources = [
            {
                "name": t.plural,
                "singularName": t.kind.lower(),
                "namespaced": True,
                "kind": t.kind,
                "verbs": list(t.verbs),
            }
            for t in types
        ]
        if group == "":
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
            resources.append(
                {
                    "name": "namespaces",
                    "singularName": "namespace",
                    "namespaced": False,
                    "kind": "Namespace",
                    "verbs": ["get", "list"],
                }
            )
        for t in types:
            resources.append(
                {
                    "name": f"{t.plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def list_objects(self, rtype: ResourceType, namespace: str | None, selector: str) -> JsonDict:
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (t, ns, _), obj in sorted(self.store.items(), key=lambda kv: kv[0][1:])
                if t == rtype
                and namespace in (None, ns)
                and label_selector_matches(selector, obj["metadata"].get("labels") or {})
            ]
            for item in items:
                item.pop("_double_started", None)
            return {
                "kind": f"{rtype.kind}List",
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(self.current_rv)},
                "items": items,
            }

    def watch_events(
        self,
        rtype: ResourceType,
        namespace: str | None,
        selector: str,
        since: int,
        timeout: float,
        fault_410: bool,
    ) -> Iterator[JsonDict]:
        """Events after `since`, then new ones as they come, until `timeout`."""
        if fault_410:
            yield {
                "type": "ERROR",
                "object": _status_body(410, "Expired", "too old resource version: injected"),
            }
            return
        deadline = time.monotonic() + timeout
        last = since
        while not self._closing.is_set():
            with self.changed:
                if last < self.compacted_rv:
                    gone = _status_body(
                        410, "Expired", f"too old resource version: {last} ({self.compacted_rv})"
                    )
                    batch = [{"type": "ERROR", "object": gone}]
                else:
                    batch = []
                    for event in self.events:
                        if event.rv <= last or event.rtype != rtype:
                            continue
                        meta = event.obj["metadata"]
                        if namespace not in (None, meta.get("namespace")):
                            continue
                        if not label_selector_matches(selector, meta.get("labels") or {}):
                            continue
                        obj = copy.deepcopy(event.obj)
                        obj.pop("_double_started", None)
                        batch.append({"type": event.type, "object": obj})
                    last = max(last, self.current_rv)
                    if not batch:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return
                        self.changed.wait(min(remaining, 0.2))
                        continue
            yield from batch
            if batch and batch[0]["type"] == "ERROR":
                return

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """Serve one non-watch request: (status, JSON body or text)."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        namespace: str | None = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        elif rest[:1] == ["namespaces"] and len(rest) == 2 and not group:
            if rest[1] in self.namespaces:
                return 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": rest[1]}}
            raise ApiStatusError(404, "NotFound", f'namespaces "{rest[1]}" not found')
        if not rest:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        rtype = _BY_PATH.get((group, version, rest[0]))
        if rtype is None:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        selector = (query.get("labelSelector") or [""])[0]
        with self.changed:
            if name is None:
                if method == "GET":
                    return 200, self.list_objects(rtype, namespace, selector)
                if namespace is None:
                    raise ApiStatusError(405, "MethodNotAllowed", "create needs a namespace")
                if method == "POST":
                    return 201, copy.deepcopy(self._create(rtype, namespace, body))
                if method == "DELETE":
                    policy = _policy(body, query)
                    for key in [k for k in self.store if k[0] == rtype and k[1] == namespace]:
                        if label_selector_matches(
                            selector, self.store[key]["metadata"].get("labels") or {}
                        ):
                            self._delete(rtype, namespace, key[2], policy)
                    return 200, self.list_objects(rtype, namespace, selector)
                raise ApiStatusError(
                    405, "MethodNotAllowed", f"{method} not allowed on a collection"
                )
            assert namespace is not None
            key = (rtype, namespace, name)
            if sub == "log" and rtype.plural == "pods":
                if key not in self.store:
                    raise ApiStatusError(404, "NotFound", self._not_found(rtype, name))
                pod = self._pods.get((namespace, name))
                text = pod.script.log if pod is not None else ""
                container = (query.get("container") or [""])[0]
                if pod is not None and container and container != pod.primary:
                    text = ""
                tail = next(iter(query.get("tailLines") or []), None)
                if tail is not None:
                    text = "".join(text.splitlines(keepends=True)[-int(tail) :])
                return 200, text
            if method == "DELETE":
                policy = _policy(body, query)
                return 200, self._delete(rtype, namespace, name, policy)
            obj = self.store.get(key)
            if obj is None:
                raise ApiStatusError(404, "NotFound", self._not_found(rtype, name))
            if method == "GET":
                out = copy.deepcopy(obj)
                out.pop("_double_started", None)
                return 200, out
            if method == "PUT":
                given = (body.get("metadata") or {}).get("resourceVersion")
                if given and given != obj["metadata"]["resourceVersion"]:
                    raise ApiStatusError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {rtype.plural} "{name}": '
                        "the object has been modified",
                    )
                new = copy.deepcopy(body)
                new["metadata"] = {**obj["metadata"], **(body.get("metadata") or {})}
                if sub != "status":
                    new["status"] = obj.get("status", {})
                new["_double_started"] = obj.get("_double_started", False)
                self.store[key] = new
            elif method == "PATCH":
                new = _json_patch(obj, body) if isinstance(body, list) else _merge_patch(obj, body)
                new["metadata"]["uid"] = obj["metadata"]["uid"]
                self.store[key] = new
            else:
                raise ApiStatusError(405, "MethodNotAllowed", f"{method} not allowed")
            self._modified(key)
            out = copy.deepcopy(self.store[key])
            out.pop("_double_started", None)
            return 200, out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    double: KubeApiDouble

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, code: int, body: Any) -> None:
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = split.path.rstrip("/") or "/", parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        double = self.double
        with double.lock:
            double.requests.append((method, path, query))
        is_watch = (query.get("watch") or ["false"])[0] in ("true", "1")
        fault = double._fault_for(method, path, is_watch)
        try:
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if (
                fault is not None
                and fault.status is not None
                and not (is_watch and fault.status == 410)
            ):
                code = fault.status
                raise ApiStatusError(
                    code,
                    _REASONS.get(code, "Unknown"),
                    f"injected fault: {code} on {method} {path}",
                )
            found = double.discovery(path) if method == "GET" else None
            if found is not None:
                self._send_json(200, found)
                return
            body = json.loads(raw) if raw else None
            if is_watch and method == "GET":
                self._watch(path, query, fault is not None and fault.status == 410)
                return
            code, answer = double.handle(method, path, query, body)
            self._send_json(code, answer)
        except ApiStatusError as exc:
            self._send_json(exc.code, _status_body(exc.code, exc.reason, exc.message))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            self._send_json(400, _status_body(400, "BadRequest", f"bad request: {exc}"))

    def _watch(self, path: str, query: dict[str, list[str]], fault_410: bool) -> None:
        parts = [p for p in path.split("/") if p]
        group, version, rest = (
            ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        )
        namespace = None
        if rest[:1] == ["namespaces"]:
            namespace, rest = rest[1], rest[2:]
        rtype = _BY_PATH.get((group, version, rest[0] if rest else ""))
        if rtype is None:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        since = int((query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((query.get("timeoutSeconds") or ["30"])[0])
        selector = (query.get("labelSelector") or [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if since == 0:  # "any": start with the current state, as ADDED events
                listed = self.double.list_objects(rtype, namespace, selector)
                for item in listed["items"]:
                    self._chunk({"type": "ADDED", "object": item})
                since = int(listed["metadata"]["resourceVersion"])
            for event in self.double.watch_events(
                rtype, namespace, selector, since, timeout, fault_410
            ):
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, event: JsonDict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


__all__ = [
    "RESOURCE_TYPES",
    "ApiStatusError",
    "Behaviour",
    "Fault",
    "KubeApiDouble",
    "PodScript",
    "ResourceType",
    "label_selector_matches",
    "program_behaviour",
]
