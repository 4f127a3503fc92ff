"""The sidecar collector mode as real processes: the primary's shell script from the
manifest builder runs a fake trial, the sidecar follows its log, reports to a real
DBManager gRPC server and ends on the exit marker (no pod, the same files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from katib.executors.kubernetes_manifest import PRIMARY_SCRIPT
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage
from metrics_collector.sidecar import write_termination_message

TRAIN = """
import sys, time
steps = int(sys.argv[1]); code = int(sys.argv[2]); pause = float(sys.argv[3])
for i in range(steps):
    print(f"epoch {i} accuracy={0.5 + i / 100:.2f} loss={1.0 / (i + 1):.3f}", flush=True)
    time.sleep(pause)
print("done", flush=True)
sys.exit(code)
"""


@pytest.fixture
def dbmanager(tmp_path: Path) -> Iterator[tuple[SQLStorage, str]]:
    storage = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    server, port = serve_dbmanager(storage)
    yield storage, f"127.0.0.1:{port}"
    server.stop(0)
    storage.close()


class Pod:
    """The two containers' processes sharing a control directory and a metrics volume."""

    def __init__(self, root: Path, address: str) -> None:
        self.root = root
        self.control = root / "control"
        self.log = root / "metrics-volume" / "metrics.log"
        self.result_dir = root / "control" / "collector"
        self.address = address
        self.script = root / "train.py"
        self.script.write_text(TRAIN)

    def primary(self, steps: int, code: int = 0, pause: float = 0.02) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "KATIB_CONTROL_DIR": str(self.control),
            "KATIB_METRICS_LOG": str(self.log),
        }
        argv = [sys.executable, str(self.script), str(steps), str(code), str(pause)]
        with open(self.root / "primary.out", "wb") as out:
            return subprocess.Popen(
                ["sh", "-c", PRIMARY_SCRIPT, "katib-trial", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def primary_output(self) -> bytes:
        return (self.root / "primary.out").read_bytes()

    def sidecar(self, trial: str, *extra: str) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable, "-m", "metrics_collector", "--sidecar",
            "--control-dir", str(self.control),
            "--trial-name", trial,
            "--metric-names", "accuracy,loss",
            "--trial-dir", str(self.result_dir),
            "--db-manager-address", self.address,
            "--source-kind", "file", "--file-path", str(self.log), "--file-format", "TEXT",
            "--poll-interval", "0.05", "--flush-interval", "0.1",
            *extra,
        ]  # fmt: skip
        with open(self.root / "sidecar.out", "wb") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def sidecar_output(self) -> str:
        return (self.root / "sidecar.out").read_text(errors="replace")

    def result(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.result_dir / "result.json").read_text())
        return data


def _values(storage: SQLStorage, trial: str, metric: str) -> list[str]:
    return [e.value for e in storage.get_observation_log(trial, metric)]


def test_reports_and_exits_with_the_primary_code(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    sidecar = pod.sidecar("t-ok")
    primary = pod.primary(steps=5)
    # another container that never ends (a mesh proxy): it must not keep the sidecar alive
    other = subprocess.Popen(["sleep", "60"])
    try:
        assert primary.wait(timeout=30) == 0
        assert sidecar.wait(timeout=30) == 0, pod.sidecar_output()
    finally:
        other.kill()
        other.wait()
    assert b"accuracy=0.54" in pod.primary_output()  # the trial's output still shows in its own log
    assert (pod.control / "exit").read_text().split() == ["0", "1"]  # exit code, attempt
    assert _values(storage, "t-ok", "accuracy") == ["0.50", "0.51", "0.52", "0.53", "0.54"]
    assert _values(storage, "t-ok", "loss")[-1] == "0.200"
    result = pod.result()
    assert result["exit_code"] == 0 and result["objective_seen"] is True
    assert result["metric_counts"] == {"accuracy": 5, "loss": 5}


def test_result_goes_to_the_termination_message(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    _, address = dbmanager
    pod = Pod(tmp_path, address)
    message = tmp_path / "termination-log"
    primary = pod.primary(steps=2)
    sidecar = pod.sidecar("t-msg", "--termination-message-path", str(message))
    assert primary.wait(timeout=30) == 0
    assert sidecar.wait(timeout=30) == 0
    data = json.loads(message.read_text())
    assert data["exit_code"] == 0 and data["metric_counts"] == {"accuracy": 2, "loss": 2}


def test_wrapper_copies_its_result_to_the_termination_message(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    storage, address = dbmanager
    message = tmp_path / "termination-log"
    env = {**os.environ, "KATIB_TERMINATION_MESSAGE_PATH": str(message)}
    done = subprocess.run(
        [
            sys.executable, "-m", "metrics_collector",
            "--trial-name", "t-wrap", "--metric-names", "accuracy",
            "--trial-dir", str(tmp_path / "trial"), "--db-manager-address", address,
            "--", sys.executable, "-c", "print('accuracy=0.75'); raise SystemExit(4)",
        ],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4
    data = json.loads(message.read_text())
    assert data["exit_code"] == 4 and data["objective_seen"] is True
    assert _values(storage, "t-wrap", "accuracy") == ["0.75"]


def test_termination_message_stays_small_and_valid(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"exit_code": 1, "reason": "x" * 10_000, "error": "e" * 3000}))
    target = tmp_path / "message"
    assert write_termination_message(result, target)
    text = target.read_text()
    assert len(text.encode()) <= 4096
    data = json.loads(text)
    assert data["exit_code"] == 1 and data["reason"].startswith("xxx")
    assert not write_termination_message(tmp_path / "missing.json", target)


def test_a_restarted_container_is_collected_once(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    """restartPolicy OnFailure: the primary fails, both containers restart in the same pod
    (same volumes); the second sidecar starts before the second attempt and reports only it."""
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    first = pod.primary(steps=2, code=3)
    sidecar = pod.sidecar("t-restart")
    assert first.wait(timeout=30) == 3
    assert sidecar.wait(timeout=30) == 3
    again = pod.sidecar("t-restart")  # restarted first: must not take attempt 1 again
    time.sleep(0.5)
    assert again.poll() is None
    second = pod.primary(steps=3, code=0)
    assert second.wait(timeout=30) == 0
    assert again.wait(timeout=30) == 0, pod.sidecar_output()
    assert _values(storage, "t-restart", "accuracy") == ["0.50", "0.51", "0.50", "0.51", "0.52"]
    assert (pod.control / "exit").read_text().split() == ["0", "2"]
    assert (pod.control / "collected").read_text().split() == ["1", "2"]


def test_primary_that_never_starts(tmp_path: Path, dbmanager: tuple[SQLStorage, str]) -> None:
    _, address = dbmanager
    pod = Pod(tmp_path, address)
    sidecar = pod.sidecar("t-never", "--start-timeout", "1")
    assert sidecar.wait(timeout=30) == 137
    assert "did not start within 1s" in str(pod.result()["error"])


def test_failed_primary_code_is_passed_on(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    primary = pod.primary(steps=2, code=3)
    sidecar = pod.sidecar("t-fail")
    assert primary.wait(timeout=30) == 3
    assert sidecar.wait(timeout=30) == 3
    assert _values(storage, "t-fail", "accuracy") == ["0.50", "0.51"]
    assert pod.result()["exit_code"] == 3


def test_early_stopping_rule_stops_the_primary(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    primary = pod.primary(steps=100_000, pause=0.05)
    sidecar = pod.sidecar(
        "t-stop", "--stop-rule", "loss;0.2;less;2", "--objective-type", "maximize"
    )
    assert primary.wait(timeout=60) == 0, pod.primary_output()[-500:]
    assert b"Training Container was Early Stopped" in pod.primary_output()
    assert sidecar.wait(timeout=30) == 0
    assert (pod.control / "exit").read_text().split()[0] == "early-stopped"
    result = pod.result()
    assert result["early_stopped"] is True
    assert "loss" in str(result["early_stopped_reason"])
    losses = [float(v) for v in _values(storage, "t-stop", "loss")]
    assert losses and losses[-1] < 0.2 and len(losses) < 1000


def test_killed_primary_is_noticed_by_its_heartbeat(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    primary = pod.primary(steps=100_000, pause=0.05)
    sidecar = pod.sidecar("t-oom", "--alive-timeout", "2")
    deadline = time.monotonic() + 20
    while not _values(storage, "t-oom", "accuracy") and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(primary.pid, signal.SIGKILL)  # the whole container dies (e.g. out of memory)
    primary.wait(timeout=10)
    assert sidecar.wait(timeout=30) == 137
    assert not (pod.control / "exit").exists()
    result = pod.result()
    assert "without an exit marker" in str(result["error"])
    assert _values(storage, "t-oom", "accuracy")


def test_sigterm_finishes_at_once(tmp_path: Path, dbmanager: tuple[SQLStorage, str]) -> None:
    storage, address = dbmanager
    pod = Pod(tmp_path, address)
    primary = pod.primary(steps=100_000, pause=0.05)
    sidecar = pod.sidecar("t-term")
    try:
        deadline = time.monotonic() + 20
        while not _values(storage, "t-term", "accuracy") and time.monotonic() < deadline:
            time.sleep(0.1)
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=20) == 128 + signal.SIGTERM
        assert pod.result()["signal"] == signal.SIGTERM
    finally:
        os.killpg(primary.pid, signal.SIGKILL)
        primary.wait(timeout=10)


def test_bad_arguments_are_one_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "metrics_collector", "--sidecar", "--control-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "the following arguments are required" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_manifests_own_containers_run_as_a_pod(
    tmp_path: Path, dbmanager: tuple[SQLStorage, str]
) -> None:
    """The primary and sidecar argv/env exactly as build_trial_manifest writes them, with
    the two volumes mapped to local directories and python to this interpreter."""
    from katib.api.loading import load_experiment
    from katib.api.models import EXPERIMENT_LABEL, ObjectMeta, ParameterAssignment, Trial, TrialSpec
    from katib.controller.templating import render_run_spec
    from katib.executors.kubernetes_manifest import build_trial_manifest

    storage, address = dbmanager
    examples = Path(__file__).resolve().parents[2] / "examples"
    exp = load_experiment(examples / "grid-numpy.yaml")
    values = {"lr": "0.25", "num-epochs": "10", "batch-size": "32"}
    trial = Trial(
        metadata=ObjectMeta(
            name="grid-pod1", namespace="kubeflow", labels={EXPERIMENT_LABEL: exp.name}
        ),
        spec=TrialSpec(
            parameter_assignments=[ParameterAssignment(name=k, value=v) for k, v in values.items()],
            run_spec=render_run_spec(exp, "grid-pod1", values),
            primary_container_name="training-container",
        ),
    )
    manifest = build_trial_manifest(exp, trial, db_manager_address=address)
    primary, sidecar = manifest["spec"]["template"]["spec"]["containers"]
    volumes = {
        "/var/run/katib": str(tmp_path / "control"),
        "/var/log/katib": str(tmp_path / "logs"),
    }

    def local(text: str) -> str:
        for path, directory in volumes.items():
            text = text.replace(path, directory)
        return text

    def argv(container: dict[str, object]) -> list[str]:
        parts = [local(str(a)) for a in [*container["command"], *container["args"]]]  # type: ignore[misc]
        return [sys.executable if p in ("python", "python3") else p for p in parts]

    def env(container: dict[str, object]) -> dict[str, str]:
        items = container["env"]
        assert isinstance(items, list)
        return {**os.environ, **{e["name"]: local(e["value"]) for e in items if "value" in e}}

    sidecar_argv = argv(sidecar)
    sidecar_argv[sidecar_argv.index("--termination-message-path") + 1] = str(tmp_path / "term")
    with open(tmp_path / "sidecar.out", "wb") as out:
        side = subprocess.Popen(
            sidecar_argv, env=env(sidecar), stdout=out, stderr=subprocess.STDOUT
        )
    with open(tmp_path / "primary.out", "wb") as out:
        main = subprocess.Popen(
            argv(primary), env=env(primary), cwd=examples, stdout=out, stderr=subprocess.STDOUT
        )
    assert main.wait(timeout=120) == 0, (tmp_path / "primary.out").read_text()
    assert side.wait(timeout=60) == 0, (tmp_path / "sidecar.out").read_text()
    losses = _values(storage, "grid-pod1", "loss")
    assert len(losses) == 10  # one per epoch
    assert json.loads((tmp_path / "term").read_text())["exit_code"] == 0
    assert b"loss=" in (tmp_path / "primary.out").read_bytes()  # still in the trial's own log
