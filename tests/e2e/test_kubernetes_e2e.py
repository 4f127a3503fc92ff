"""Opt-in: an experiment whose trials run as Jobs on a real Kubernetes cluster.

Skipped unless KATIB_E2E_KUBECONFIG names a kubeconfig. Also read:
  KATIB_E2E_DB_MANAGER_ADDRESS  HOST:PORT at which the cluster's pods reach this machine
                                (required; `katib run` listens on 0.0.0.0:PORT), e.g. the
                                kind network's gateway 172.18.0.1:16789
  KATIB_E2E_CONTEXT             kubeconfig context (default: the current one)
  KATIB_E2E_NAMESPACE           namespace of the experiment and its trials (default: default)
  KATIB_E2E_IMAGE               image with Python and this package, used for the trials and
                                the collector sidecar (default: katib-local:latest; load it
                                into the cluster first, e.g. `kind load docker-image`)
See docs/kubernetes-executor.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KUBECONFIG = os.environ.get("KATIB_E2E_KUBECONFIG", "")
KATIB = [sys.executable, "-m", "katib.cli.main"]

PROGRAM = (
    "import sys, time\n"
    "x = float(sys.argv[1].split('=', 1)[1])\n"
    "for epoch in range(3):\n"
    "    time.sleep(0.5)\n"
    "    print(f'epoch {epoch}: accuracy={x * (epoch + 1) / 3:.4f}', flush=True)\n"
)


def _experiment(name: str, namespace: str, image: str) -> dict[str, object]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": 3,
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 1,
            "parameters": [
                {
                    "name": "x",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.1", "max": "0.9"},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "training",
                "trialParameters": [{"name": "x", "reference": "x"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "training",
                                        "image": image,
                                        "imagePullPolicy": "IfNotPresent",
                                        "command": [
                                            "python3",
                                            "-c",
                                            PROGRAM,
                                            "--x=${trialParameters.x}",
                                        ],
                                    }
                                ],
                            }
                        },
                    },
                },
            },
        },
    }


@pytest.mark.skipif(
    not KUBECONFIG,
    reason="KATIB_E2E_KUBECONFIG is not set: the real-cluster test is opt-in "
    "(see docs/kubernetes-executor.md)",
)
def test_experiment_runs_on_a_real_cluster(tmp_path: Path) -> None:
    address = os.environ.get("KATIB_E2E_DB_MANAGER_ADDRESS", "")
    if not address:
        pytest.fail(
            "KATIB_E2E_DB_MANAGER_ADDRESS must be HOST:PORT at which the cluster's pods reach "
            "this machine (e.g. the kind network's gateway IP and a free port)"
        )
    namespace = os.environ.get("KATIB_E2E_NAMESPACE", "default")
    image = os.environ.get("KATIB_E2E_IMAGE", "katib-local:latest")
    context = os.environ.get("KATIB_E2E_CONTEXT") or None
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(_experiment(name, namespace, image)))
    env = {**os.environ, "KUBECONFIG": KUBECONFIG, "KATIB_DATA_DIR": str(tmp_path / "data")}
    command = [*KATIB, "run", str(path), "-q", "--executor", "kubernetes"]
    command += ["--collector-image", image, "--db-manager-address", address]
    if context:
        command += ["--kube-context", context]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr

    listed = subprocess.run(
        [*KATIB, "get", "trials", "-e", name, "-n", namespace, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    trials = json.loads(listed.stdout)
    trials = trials.get("items", trials) if isinstance(trials, dict) else trials
    assert len(trials) == 3
    for trial in trials:
        conditions = [c for c in trial["status"]["conditions"] if c["status"] == "True"]
        assert conditions[-1]["type"] == "Succeeded", trial["status"]
        metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
        assert float(metrics["accuracy"]["max"]) > 0

    # finished trials were cleaned up (not retained): no Job of the experiment is left
    from katib.api.loading import load_experiment
    from katib.executors.kubernetes import KubernetesExecutor, load_api_client

    executor = KubernetesExecutor(api_client=load_api_client(context, KUBECONFIG), watch=False)
    try:
        assert executor.find_trials(load_experiment(path)) == {}
    finally:
        executor.close()
        executor.api.close()
