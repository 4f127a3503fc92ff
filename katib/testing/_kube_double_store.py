"""The test double's storage: objects, resourceVersions, watch history, deletes, patches.

Private to katib.testing.kube_api_double (the public import path). What an API server
keeps: each object under (type, namespace, name), a resourceVersion bumped on every
write with the event recorded for watches, deletes with propagationPolicy (foreground
marks the object and leaves it to the simulated controller), label selectors, and merge
and JSON patches.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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


class DoubleStore:
    """The objects and their history; every method expects `changed` (the lock) held
    unless it takes it itself."""

    def __init__(self, namespaces: tuple[str, ...]) -> None:
        self.namespaces: set[str] = set(namespaces)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.store: dict[tuple[ResourceType, str, str], JsonDict] = {}
        self.events: list[_Event] = []
        self.rv = itertools.count(100)
        self.current_rv = 100
        self.compacted_rv = 0
        #: (plural, namespace, name, propagationPolicy) of every delete.
        self.deletions: list[tuple[str, str, str, str | None]] = []
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._closing = threading.Event()

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
