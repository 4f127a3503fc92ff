"""The executor contract on the local executor (real processes) and the fake one."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, ObjectMeta, ParameterAssignment, Trial, TrialSpec
from katib.controller.templating import render_run_spec
from katib.executors.base import BaseExecutor, LaunchContext
from katib.executors.fake import FakeExecutor, FakeRun
from katib.executors.local import LocalExecutor
from katib.executors.worker_pool import WorkerPoolExecutor
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage
from katib.testing.executors import PROGRAM, ExecutorContract


def _experiment() -> Experiment:
    doc: dict[str, Any] = {
        "metadata": {"name": "contract"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": 1,
            "maxTrialCount": 1,
            "parameters": [
                {
                    "name": "value",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": ["0.5", "fail", "sleep"]},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "value", "reference": "value"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "python",
                                        "command": [
                                            "python3",
                                            "-c",
                                            PROGRAM,
                                            "--value=${trialParameters.value}",
                                        ],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }
    return load_experiment_dict(doc)


@pytest.fixture
def experiment() -> Experiment:
    return _experiment()


@pytest.fixture
def make_trial(experiment: Experiment) -> Callable[[str, str], Trial]:
    def make(name: str, value: str) -> Trial:
        return Trial(
            metadata=ObjectMeta(name=name, namespace="default"),
            spec=TrialSpec(
                parameter_assignments=[ParameterAssignment(name="value", value=value)],
                run_spec=render_run_spec(experiment, name, {"value": value}),
                primary_container_name="main",
            ),
        )

    return make


class TestLocalExecutor(ExecutorContract):
    @pytest.fixture
    def executor(self, tmp_path: Path) -> Iterator[BaseExecutor]:
        executor = LocalExecutor(tmp_path / "trials")
        yield executor
        executor.close()

    @pytest.fixture
    def context(self, tmp_path: Path, experiment: Experiment) -> Iterator[LaunchContext]:
        storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
        server, port = serve_dbmanager(storage)
        yield LaunchContext(experiment=experiment, db_manager_address=f"127.0.0.1:{port}")
        server.stop(0)
        storage.close()


def _behaviour(assignments: Mapping[str, str]) -> FakeRun:
    value = assignments["value"]
    if value == "fail":
        return FakeRun(exit_code=1)
    if value == "sleep":
        return FakeRun(polls=10_000)
    return FakeRun(metrics=[("accuracy", value)])


class TestFakeExecutor(ExecutorContract):
    @pytest.fixture
    def executor(self) -> BaseExecutor:
        return FakeExecutor(_behaviour)

    @pytest.fixture
    def context(self, experiment: Experiment) -> LaunchContext:
        return LaunchContext(experiment=experiment, db_manager_address="unused")


def contract_program(params: Mapping[str, Any]) -> None:
    """PROGRAM as a function: the worker pool runs calls, not command lines."""
    import sys
    import time

    value = params["value"]
    if value == "fail":
        sys.exit(1)
    if value == "sleep":
        time.sleep(60)
    print("accuracy=" + value, flush=True)


class TestWorkerPoolExecutor(ExecutorContract):
    @pytest.fixture
    def executor(self, tmp_path: Path) -> Iterator[BaseExecutor]:
        executor = WorkerPoolExecutor(tmp_path / "trials", size=2)
        executor.register("default", "contract", contract_program)
        yield executor
        executor.close()

    @pytest.fixture
    def context(self, experiment: Experiment) -> LaunchContext:
        return LaunchContext(experiment=experiment, db_manager_address="unused")


class TestKubernetesExecutor(ExecutorContract):
    """The contract over HTTP against the Kubernetes API double.

    The double runs no images: its simulated kubelet ends each pod the way PROGRAM
    would for the pod's ``--value=`` argument (katib.testing.kube_api_double.
    program_behaviour), and its simulated Job controller sets the Job's conditions, so
    success, failure, idempotent launch and stop are the executor's real requests and
    decisions against realistic API answers.
    """

    @pytest.fixture
    def executor(self) -> Iterator[BaseExecutor]:
        from katib.executors.kubernetes import KubernetesExecutor, api_client_for
        from katib.testing.kube_api_double import KubeApiDouble, program_behaviour

        with KubeApiDouble(behaviour=program_behaviour) as kube:
            api = api_client_for(kube.url)
            executor = KubernetesExecutor(api_client=api, request_timeout=3.0, watch_timeout=2.0)
            yield executor
            executor.close()
            api.close()

    @pytest.fixture
    def context(self, experiment: Experiment) -> LaunchContext:
        return LaunchContext(experiment=experiment, db_manager_address="katib-db-manager:6789")
