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

This module is the public import path; the parts live in private modules:
katib.testing._kube_double_store (objects, resourceVersions, watch history, deletes,
patches, label selectors), _kube_double_operators (the simulated operators and kubelet)
and _kube_double_http (API routing, discovery, watches, faults, the request handler).
"""

from __future__ import annotations

import copy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from katib.testing._kube_double_http import ApiRoutes, Fault, _Handler
from katib.testing._kube_double_operators import (
    SimulatedOperators,
    _default_behaviour,
    program_behaviour,
)
from katib.testing._kube_double_store import (
    _POD_KINDS,
    RESOURCE_TYPES,
    ApiStatusError,
    Behaviour,
    DoubleStore,
    JsonDict,
    PodScript,
    ResourceType,
    label_selector_matches,
)


class KubeApiDouble(ApiRoutes, SimulatedOperators):
    """The API server double; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        namespaces: tuple[str, ...] = ("default",),
        tick: float = 0.01,
    ) -> None:
        self.behaviour = behaviour or _default_behaviour
        self.tick = tick
        DoubleStore.__init__(self, namespaces)
        self.faults: list[Fault] = []
        #: (method, path, query) of every request, for assertions.
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        return Handler


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
