"""deploy/: every object validates against the Kubernetes 1.37 schema (strict), the
kustomization lists every file, RBAC grants only what the executor needs, and the
commands the containers run are ones our programs accept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from katib.testing.manifest_schema import SCHEMA_VERSION, validate_manifest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FILES = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for p in FILES for d in _docs(p)}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_object_validates(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        assert validate_manifest(doc, SCHEMA_VERSION) == [doc["kind"]]


def test_kustomization_lists_every_file() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"  # not a cluster object: not validated
    assert sorted(kustomization["resources"]) == sorted(p.name for p in FILES)
    assert kustomization["namespace"] == "katib"


def test_kustomize_build_validates() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not checked")
    built = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60
    )
    if built.returncode != 0 and "unknown command" in built.stderr:
        pytest.skip(f"this kubectl has no kustomize: {built.stderr.strip()}")
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert len(docs) == len(_all())
    for doc in docs:
        validate_manifest(doc)
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "katib"


TRIAL_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
# The calls katib/executors/kubernetes.py makes (docs/kubernetes-executor.md, "RBAC needed").
EXPECTED_RULES = {
    ("batch", "jobs"): TRIAL_VERBS,
    ("kubeflow.org", "tfjobs"): TRIAL_VERBS,
    ("kubeflow.org", "pytorchjobs"): TRIAL_VERBS,
    ("kubeflow.org", "xgboostjobs"): TRIAL_VERBS,
    ("kubeflow.org", "mpijobs"): TRIAL_VERBS,
    ("trainer.kubeflow.org", "trainjobs"): TRIAL_VERBS,
    ("argoproj.io", "workflows"): TRIAL_VERBS,
    ("tekton.dev", "pipelineruns"): TRIAL_VERBS,
    ("", "pods"): {"list", "deletecollection"},
    ("", "pods/log"): {"get"},
    ("", "configmaps"): {"get", "create", "delete", "deletecollection"},
}


def test_rbac_grants_only_what_the_executor_needs() -> None:
    objects = _all()
    role = objects["ClusterRole/katib-local-trials"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_RULES
    binding = objects["ClusterRoleBinding/katib-local-trials"]
    assert binding["roleRef"]["name"] == "katib-local-trials"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "katib-server", "namespace": "katib"}
    ]
    server = objects["Deployment/katib-server"]["spec"]["template"]["spec"]
    assert server["serviceAccountName"] == "katib-server"
    suggestion = objects["Deployment/katib-suggestion"]["spec"]["template"]["spec"]
    assert suggestion["automountServiceAccountToken"] is False  # it needs no API access


def test_rbac_covers_every_trial_kind_the_manifests_support() -> None:
    kinds_dir = Path(__file__).parent / "trial_kinds"
    plural = {"TFJob": "tfjobs", "PyTorchJob": "pytorchjobs", "XGBoostJob": "xgboostjobs",
              "MPIJob": "mpijobs", "TrainJob": "trainjobs", "Workflow": "workflows",
              "PipelineRun": "pipelineruns"}  # fmt: skip
    for path in kinds_dir.glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())["spec"]["trialTemplate"]["trialSpec"]
        group = spec["apiVersion"].rsplit("/", 1)[0]
        assert (group, plural[spec["kind"]]) in EXPECTED_RULES, path.name


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]+)", help_text))


def test_server_command_uses_existing_flags() -> None:
    container = _all()["Deployment/katib-server"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["katib"] and container["args"][0] == "server"
    used = {a for a in container["args"] if a.startswith("--")}
    assert {
        "--db",
        "--host",
        "--port",
        "--token-file",
        "--dbmanager-port",
        "--allow-public",
    } <= used
    shown = subprocess.run(
        [sys.executable, "-m", "katib.cli.main", "server", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert used <= _flags(shown.stdout)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "grpc-dbmanager": 6789}
    args = container["args"]
    assert args[args.index("--port") + 1] == "8080"
    assert args[args.index("--dbmanager-port") + 1] == "6789"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert args[args.index("--token-file") + 1].rsplit("/", 1)[0] in mounts


def test_suggestion_command_uses_existing_flags() -> None:
    container = _all()["Deployment/katib-suggestion"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "suggestion_services"]
    shown = subprocess.run(
        [sys.executable, "-m", "suggestion_services", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert {a for a in container["args"] if a.startswith("--")} <= _flags(shown.stdout)
    assert container["readinessProbe"]["grpc"]["service"] == "manager.v1beta1.Suggestion"


def test_services_select_their_pods() -> None:
    objects = _all()
    for service, workload in [
        ("Service/katib-server", "Deployment/katib-server"),
        ("Service/katib-suggestion", "Deployment/katib-suggestion"),
        ("Service/katib-postgres", "StatefulSet/katib-postgres"),
    ]:
        selector = objects[service]["spec"]["selector"]
        labels = objects[workload]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), service
        ports = {
            p["name"]
            for c in objects[workload]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in objects[service]["spec"]["ports"]:
            assert port["targetPort"] in ports, (service, port)


def test_storage_url_and_postgres_agree() -> None:
    secret = _all()["Secret/katib-db"]["stringData"]
    url = secret["KATIB_DB"]
    assert url.startswith("postgresql+psycopg://")
    assert f"{secret['POSTGRES_USER']}:{secret['POSTGRES_PASSWORD']}@katib-postgres:5432/" in url
    assert url.endswith("/" + secret["POSTGRES_DB"])


def test_dockerfile_copies_what_exists_and_installs_the_package() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source
    assert "katib-local[postgres,mysql,kubernetes]" in text
    assert re.search(r"^USER 1000", text, re.M)
    assert '"katib", "server"' in text
