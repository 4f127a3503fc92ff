"""The test double's simulated operators and kubelet: trial resources become pods that end.

Private to katib.testing.kube_api_double. A background thread turns each trial resource
into pods (one per replica, Argo template or Tekton task) that run for a while and end
with the exit code the double's `behaviour` chose, and sets the resource's status the
way each kind's operator does: Job conditions Complete/Failed, training-operator
Succeeded/Failed, TrainJob Complete/Failed, Argo ``status.phase``, Tekton's Succeeded
condition. Suspension and foreground/background deletion are honoured.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from katib.testing._kube_double_store import (
    _POD_KINDS,
    _POD_TYPE,
    Behaviour,
    DoubleStore,
    JsonDict,
    PodScript,
    ResourceType,
    _now,
    _Pod,
)

_KUBEFLOW_REPLICAS = {
    "TFJob": "tfReplicaSpecs",
    "PyTorchJob": "pytorchReplicaSpecs",
    "XGBoostJob": "xgbReplicaSpecs",
    "MPIJob": "mpiReplicaSpecs",
}
_MASTER_TYPES = ("master", "chief", "launcher")


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


class SimulatedOperators(DoubleStore):
    """The controller thread's work (`_run_controller`), over the store it inherits."""

    behaviour: Behaviour
    tick: float

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
