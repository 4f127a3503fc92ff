"""Early stopping end to end: real gRPC servers, a real DBManager, real trial processes.

- the EarlyStopping service over gRPC (contract suite, DBManager reads, errors, health,
  SetTrialStatus);
- the metrics collector applying rules to a live trial (process group, SIGKILL after
  the grace period, observations flushed, result.json, SetTrialStatus);
- `katib run` of an experiment where poor trials are stopped and good ones are not,
  SetTrialStatus through the embedded runtime, and bad settings refused at submit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from katib import errors
from katib.api.loading import load_experiment_dict
from katib.api.models import TrialConditionType
from katib.apis.grpc_errors import error_from_rpc
from katib.apis.v1beta1 import api_pb2, api_pb2_grpc
from katib.controller.early_stopping_client import EarlyStoppingClient
from katib.controller.runtime import RunOptions, Runtime
from katib.storage.base import MetricLogEntry
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.engine import resolve_url
from katib.storage.sql import SQLStorage
from katib.storage.tables import parse_rfc3339
from katib.testing.algorithms import trial_to_proto
from katib.testing.early_stopping import METRIC, EarlyStoppingContract, Logs, stamp
from suggestion_services.base import ObjectiveType, TrialCondition, TrialRecord
from suggestion_services.early_stopping import (
    Comparison,
    EarlyStoppingExperiment,
    EarlyStoppingRule,
)
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.server import EarlyStoppingServicer, serve, serve_early_stopping

KATIB = [sys.executable, "-m", "katib.cli.main"]
_OBJECTIVES = {ObjectiveType.MAXIMIZE: api_pb2.MAXIMIZE, ObjectiveType.MINIMIZE: api_pb2.MINIMIZE}
_FROM_WIRE = {
    api_pb2.EQUAL: Comparison.EQUAL,
    api_pb2.LESS: Comparison.LESS,
    api_pb2.GREATER: Comparison.GREATER,
}


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLStorage]:
    store = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    yield store
    store.close()


@pytest.fixture
def dbmanager(storage: SQLStorage) -> Iterator[str]:
    server, port = serve_dbmanager(storage, "127.0.0.1", 0)
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(5)


@pytest.fixture
def servicer() -> Iterator[EarlyStoppingServicer]:
    servicer = EarlyStoppingServicer()
    yield servicer
    servicer.close()


@pytest.fixture
def address(servicer: EarlyStoppingServicer) -> Iterator[str]:
    """The full service (Suggestion + EarlyStopping on one port), as `python -m` runs it."""
    server, port = serve(None, "127.0.0.1", 0, early_stopping=servicer)
    yield f"127.0.0.1:{port}"
    server.stop(None).wait(5)


@pytest.fixture
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> api_pb2_grpc.EarlyStoppingStub:
    return api_pb2_grpc.EarlyStoppingStub(channel)


def experiment_pb(experiment: EarlyStoppingExperiment) -> api_pb2.Experiment:
    message = api_pb2.Experiment(name=experiment.name)
    objective = message.spec.objective
    objective.type = _OBJECTIVES.get(experiment.objective_type, api_pb2.UNKNOWN)
    objective.objective_metric_name = experiment.objective_metric_name
    objective.additional_metric_names.extend(experiment.additional_metric_names)
    message.spec.early_stopping.algorithm_name = experiment.algorithm_name
    for key, value in experiment.settings.items():
        message.spec.early_stopping.algorithm_settings.add(name=key, value=value)
    return message


def report(db_address: str, logs: Mapping[str, Sequence[tuple[str, str]]]) -> None:
    """Replace each trial's objective log in the DBManager (delete, then report)."""
    with grpc.insecure_channel(db_address) as ch:
        db = api_pb2_grpc.DBManagerStub(ch)
        for trial, rows in logs.items():
            db.DeleteObservationLog(api_pb2.DeleteObservationLogRequest(trial_name=trial))
            db.ReportObservationLog(
                api_pb2.ReportObservationLogRequest(
                    trial_name=trial,
                    observation_log=api_pb2.ObservationLog(
                        metric_logs=[
                            api_pb2.MetricLog(
                                time_stamp=ts, metric=api_pb2.Metric(name=METRIC, value=v)
                            )
                            for ts, v in rows
                        ]
                    ),
                ),
                timeout=10,
            )


class TestContractOverGrpc(EarlyStoppingContract):
    """The contract through a real server that reads a real DBManager."""

    observes_reads = False

    @pytest.fixture(params=["medianstop"])
    def algorithm_name(
        self, request: pytest.FixtureRequest, stub: api_pb2_grpc.EarlyStoppingStub, dbmanager: str
    ) -> str:
        self.stub = stub
        self.db_address = dbmanager
        return str(request.param)

    def call_validate(self, algorithm_name: str, settings: Mapping[str, str]) -> None:
        spec = api_pb2.EarlyStoppingSpec(
            algorithm_name=algorithm_name,
            algorithm_settings=[
                api_pb2.EarlyStoppingSetting(name=k, value=v) for k, v in settings.items()
            ],
        )
        try:
            self.stub.ValidateEarlyStoppingSettings(
                api_pb2.ValidateEarlyStoppingSettingsRequest(early_stopping=spec), timeout=10
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "ValidateEarlyStoppingSettings") from None

    def call_rules(
        self, experiment: EarlyStoppingExperiment, trials: Sequence[TrialRecord], logs: Logs
    ) -> list[EarlyStoppingRule]:
        report(self.db_address, logs)
        request = api_pb2.GetEarlyStoppingRulesRequest(
            experiment=experiment_pb(experiment),
            trials=[trial_to_proto(t) for t in trials],
            db_manager_address=self.db_address,
        )
        try:
            reply = self.stub.GetEarlyStoppingRules(request, timeout=10)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, "GetEarlyStoppingRules") from None
        return [
            EarlyStoppingRule(r.name, r.value, _FROM_WIRE[r.comparison], r.start_step)
            for r in reply.early_stopping_rules
        ]


# --- the service over gRPC ------------------------------------------------------------


def test_rules_read_from_dbmanager_in_time_order(
    stub: api_pb2_grpc.EarlyStoppingStub, dbmanager: str
) -> None:
    clear_all_caches()
    # Reported out of order, with ties: DBManager orders by time, then insertion.
    report(
        dbmanager,
        {
            "t1": [(stamp(9), "100"), (stamp(1), "0.2"), (stamp(2), "0.4")],
            "t2": [(stamp(1), "0.5"), (stamp(1), "0.7"), (stamp(1), "100")],
            "t3": [(stamp(3), "0.9"), (stamp(4), "0.9"), (stamp(5), "0.9")],
            "t4": [(stamp(1), "0.0"), (stamp(2), "0.0")],
        },
    )
    experiment = EarlyStoppingExperiment(
        "exp", "medianstop", ObjectiveType.MINIMIZE, METRIC, (), {"start_step": "2"}
    )
    trials = [
        TrialRecord("t1", {"x": "1"}, TrialCondition.SUCCEEDED, 0.2),
        TrialRecord("t2", {"x": "2"}, TrialCondition.SUCCEEDED, 0.5),
        TrialRecord("t3", {"x": "3"}, TrialCondition.SUCCEEDED, 0.9),
        TrialRecord("t4", {"x": "4"}, TrialCondition.RUNNING, None),
    ]
    reply = stub.GetEarlyStoppingRules(
        api_pb2.GetEarlyStoppingRulesRequest(
            experiment=experiment_pb(experiment),
            trials=[trial_to_proto(t) for t in trials],
            db_manager_address=dbmanager,
        ),
        timeout=10,
    )
    # Averages 0.3, 0.6, 0.9 (t4 is running): median 0.6, GREATER for minimize.
    assert list(reply.early_stopping_rules) == [
        api_pb2.EarlyStoppingRule(
            name=METRIC, value="0.6", comparison=api_pb2.GREATER, start_step=2
        )
    ]


def test_dbmanager_down_is_unavailable(stub: api_pb2_grpc.EarlyStoppingStub) -> None:
    experiment = EarlyStoppingExperiment("exp", "medianstop", objective_metric_name=METRIC)
    trial = TrialRecord("t1", {"x": "1"}, TrialCondition.SUCCEEDED, 0.2)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetEarlyStoppingRules(
            api_pb2.GetEarlyStoppingRulesRequest(
                experiment=experiment_pb(experiment),
                trials=[trial_to_proto(trial)],
                db_manager_address="127.0.0.1:1",
            ),
            timeout=20,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "DBManager at 127.0.0.1:1" in (info.value.details() or "")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_trials_required": "0"}, "min_trials_required must be greater than zero (>0)"),
        ({"start_step": "0"}, "start_step must be greater or equal than one (>=1)"),
        ({"warmup": "1"}, "unknown setting warmup for algorithm medianstop"),
    ],
)
def test_validate_is_invalid_argument_with_katibs_message(
    stub: api_pb2_grpc.EarlyStoppingStub, settings: dict[str, str], message: str
) -> None:
    spec = api_pb2.EarlyStoppingSpec(algorithm_name="medianstop")
    for key, value in settings.items():
        spec.algorithm_settings.add(name=key, value=value)
    with pytest.raises(grpc.RpcError) as info:
        stub.ValidateEarlyStoppingSettings(
            api_pb2.ValidateEarlyStoppingSettingsRequest(early_stopping=spec), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message


def test_controller_client_against_the_service(address: str, dbmanager: str) -> None:
    experiment = load_experiment_dict(
        experiment_doc("exp", ["0.5"], {"min_trials_required": "-1"})
    )
    client = EarlyStoppingClient(address)
    try:
        assert experiment.spec.early_stopping is not None
        with pytest.raises(errors.InvalidArgumentError) as info:
            client.validate(experiment.spec.early_stopping)
        assert str(info.value) == (
            "ValidateEarlyStoppingSettings Error: "
            "min_trials_required must be greater than zero (>0)"
        )
        experiment.spec.early_stopping.algorithm_settings = []
        client.validate(experiment.spec.early_stopping)
        assert client.get_rules(experiment, [], dbmanager) == []
    finally:
        client.close()


def test_health_names(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "api.v1.beta1.EarlyStopping", "api.v1.beta1.Suggestion"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    server, port = serve_early_stopping("127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as only:
            check = health_pb2_grpc.HealthStub(only).Check
            reply = check(
                health_pb2.HealthCheckRequest(service="api.v1.beta1.EarlyStopping"), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                check(health_pb2.HealthCheckRequest(service="api.v1.beta1.Suggestion"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(None).wait(5)


def test_set_trial_status_standalone_records(
    stub: api_pb2_grpc.EarlyStoppingStub, servicer: EarlyStoppingServicer
) -> None:
    stub.SetTrialStatus(api_pb2.SetTrialStatusRequest(trial_name="exp-abc"), timeout=5)
    assert list(servicer.stopped_trials) == ["exp-abc"]
    with pytest.raises(grpc.RpcError) as info:
        stub.SetTrialStatus(api_pb2.SetTrialStatusRequest(trial_name=""), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_set_trial_status_callback_errors_keep_their_code() -> None:
    def unknown(name: str) -> None:
        raise errors.NotFoundError(f"trial {name} not found")

    servicer = EarlyStoppingServicer(on_trial_stopped=unknown)
    server, port = serve_early_stopping("127.0.0.1", 0, servicer)
    try:
        client = EarlyStoppingClient(f"127.0.0.1:{port}")
        with pytest.raises(errors.NotFoundError, match="trial ghost not found"):
            client.set_trial_status("ghost")
        client.close()
        assert list(servicer.stopped_trials) == []
    finally:
        server.stop(None).wait(5)


# --- the collector applying rules to a live trial ----------------------------------------

CURVE_PROGRAM = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    level, steps = float(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(sys.argv[4], "w") as f:
        f.write(str(child.pid))
    for step in range(1, steps + 1):
        print(f"step {step}: accuracy={level * (1 - 0.5 ** step):.4f}", flush=True)
        time.sleep(0.05)
    child.kill()
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def run_collector(
    tmp_path: Path,
    db_address: str,
    level: float,
    rule: str,
    mode: str = "",
    es_address: str | None = None,
    steps: int = 40,
) -> tuple[int, dict[str, Any], int]:
    """Run `python -m metrics_collector` as the executor does; (exit code, result, child pid)."""
    script = tmp_path / "curve.py"
    script.write_text(CURVE_PROGRAM)
    trial_dir = tmp_path / "trial"
    pid_file = tmp_path / "child.pid"
    argv = [
        sys.executable,
        "-m",
        "metrics_collector",
        "--trial-name=trial-1",
        "--metric-names=accuracy",
        f"--trial-dir={trial_dir}",
        f"--db-manager-address={db_address}",
        "--grace-period=0.5",
        "--flush-interval=0.1",
        f"--stop-rule={rule}",
        "--objective-type=maximize",
    ]
    if es_address:
        argv.append(f"--early-stopping-address={es_address}")
    argv += ["--", sys.executable, str(script), str(level), str(steps), mode or "-", str(pid_file)]
    done = subprocess.run(argv, start_new_session=True, timeout=60, check=False)
    result = json.loads((trial_dir / "result.json").read_text())
    return done.returncode, result, int(pid_file.read_text())


def test_collector_stops_a_poor_trial_and_its_whole_group(
    tmp_path: Path, storage: SQLStorage, dbmanager: str
) -> None:
    received: list[str] = []
    es = EarlyStoppingServicer(on_trial_stopped=received.append)
    server, port = serve_early_stopping("127.0.0.1", 0, es)
    try:
        code, result, child = run_collector(
            tmp_path, dbmanager, 0.4, "accuracy;0.5;less;3", es_address=f"127.0.0.1:{port}"
        )
    finally:
        server.stop(None).wait(5)
    assert code == 0
    assert result["early_stopped"] is True
    assert result["signal"] == 15
    assert "accuracy best so far" in result["early_stopped_reason"]
    assert "less than 0.5 after 3 reports" in result["early_stopped_reason"]
    assert not alive(child), "the trial's child process was stopped with it"
    rows = storage.get_observation_log("trial-1", "accuracy")
    assert 3 <= len(rows) < 40  # flushed up to the stop, far short of the full run
    assert result["metrics_count"] == len(rows)
    assert received == ["trial-1"]  # SetTrialStatus reached the service


def test_collector_kills_a_trial_that_ignores_sigterm(
    tmp_path: Path, storage: SQLStorage, dbmanager: str
) -> None:
    code, result, child = run_collector(
        tmp_path, dbmanager, 0.4, "accuracy;0.5;less;2", mode="ignore-term"
    )
    assert code == 0 and result["early_stopped"] is True
    assert result["signal"] == 9  # SIGKILL after the 0.5 s grace period
    assert not alive(child)
    assert len(storage.get_observation_log("trial-1")) < 40


def test_collector_lets_a_good_trial_finish(
    tmp_path: Path, storage: SQLStorage, dbmanager: str
) -> None:
    code, result, _ = run_collector(tmp_path, dbmanager, 0.9, "accuracy;0.5;less;3", steps=12)
    assert code == 0
    assert result["early_stopped"] is False and result["exit_code"] == 0
    assert len(storage.get_observation_log("trial-1")) == 12


# --- katib run and the embedded runtime ---------------------------------------------------

TRIAL_PROGRAM = textwrap.dedent(
    """
    import sys, time
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    x, steps = float(args["x"]), int(args["steps"])
    for step in range(1, steps + 1):
        print(f"epoch {step}: accuracy={x * (1 - 0.5 ** step):.5f}", flush=True)
        time.sleep(float(args["sleep"]))
    """
)


def experiment_doc(
    name: str,
    values: list[str],
    settings: dict[str, str],
    steps: int = 12,
    sleep: float = 0.05,
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "grid"},
            "earlyStopping": {
                "algorithmName": "medianstop",
                "algorithmSettings": [{"name": k, "value": v} for k, v in settings.items()],
            },
            "parallelTrialCount": 1,
            "maxTrialCount": len(values),
            "maxFailedTrialCount": 0,
            "parameters": [
                {"name": "x", "parameterType": "categorical", "feasibleSpace": {"list": values}}
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "x", "reference": "x"}],
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
                                        "image": "python:3.11",
                                        "command": [
                                            "python3",
                                            "trial.py",
                                            "--x=${trialParameters.x}",
                                            f"--steps={steps}",
                                            f"--sleep={sleep}",
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


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    path = tmp_path / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def katib_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KATIB_")}
    env["KATIB_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_katib_run_stops_poor_trials_only(tmp_path: Path) -> None:
    # parallel 1, grid in list order: 0.9, 0.8 and 0.7 run without rules; their first-2-step
    # averages 0.5625, 0.5, 0.4375 give the rule "accuracy < 0.5 at step >= 2".
    values = ["0.9", "0.8", "0.7", "0.1", "0.95", "0.2"]
    path = write(
        tmp_path,
        experiment_doc("es", values, {"min_trials_required": "3", "start_step": "2"}, steps=20),
    )
    done = subprocess.run(
        [*KATIB, "run", "-q", str(path)],
        env=katib_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Succeeded" in done.stdout
    storage = SQLStorage(resolve_url(None, tmp_path / "data"))
    try:
        trials = {t.assignments["x"]: t for t in storage.list_trials("es")}
        experiment = storage.get_experiment("es")
        rows = {x: len(storage.get_observation_log(t.name, "accuracy")) for x, t in trials.items()}
    finally:
        storage.close()
    conditions = {x: t.condition for x, t in trials.items()}
    assert conditions == {
        "0.9": TrialConditionType.SUCCEEDED,
        "0.8": TrialConditionType.SUCCEEDED,
        "0.7": TrialConditionType.SUCCEEDED,
        "0.1": TrialConditionType.EARLY_STOPPED,
        "0.95": TrialConditionType.SUCCEEDED,
        "0.2": TrialConditionType.EARLY_STOPPED,
    }
    assert [x for x, t in trials.items() if t.spec.early_stopping_rules] == values[3:]
    rule = trials["0.1"].spec.early_stopping_rules
    assert rule is not None and rule[0].to_dict() == {
        "name": "accuracy",
        "value": "0.5",
        "comparison": "less",
        "startStep": 2,
    }
    for x in ("0.9", "0.8", "0.7", "0.95"):
        assert rows[x] == 20, (x, rows)
    for x in ("0.1", "0.2"):
        assert 2 <= rows[x] < 20, (x, rows)  # stopped before their natural end
        observation = trials[x].status.observation
        assert observation is not None and observation.metrics[0].max != "unavailable"
        assert trials[x].status.conditions[-1].reason == "TrialEarlyStopped"
    assert experiment.status is not None
    assert experiment.status.trials_early_stopped == 2
    assert experiment.status.trials_succeeded == 4
    best = experiment.status.current_optimal_trial
    assert best is not None and best.parameter_assignments[0].value == "0.95"


def test_katib_run_refuses_bad_settings(tmp_path: Path) -> None:
    path = write(tmp_path, experiment_doc("bad", ["0.5"], {"min_trials_required": "0"}))
    env = katib_env(tmp_path)
    done = subprocess.run(
        [*KATIB, "run", "-q", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "min_trials_required must be greater than zero (>0)" in done.stderr
    listed = subprocess.run(
        [*KATIB, "get", "experiments", "-o", "json"], env=env, capture_output=True, text=True
    )
    assert '"bad"' not in listed.stdout  # nothing was stored


def test_set_trial_status_through_the_runtime(tmp_path: Path) -> None:
    doc = experiment_doc("sts", ["0.5"], {}, steps=600, sleep=0.05)
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    experiment = load_experiment_dict(doc)
    with Runtime(data_dir=tmp_path / "data") as runtime:
        runtime.submit(experiment, experiment_dir=tmp_path)
        finished: list[Any] = []
        worker = threading.Thread(
            target=lambda: finished.append(
                runtime.run("sts", options=RunOptions(poll_interval=0.05))
            ),
            daemon=True,
        )
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            trials = runtime.storage.list_trials("sts")
            if trials and len(runtime.storage.get_observation_log(trials[0].name)) >= 3:
                break
            time.sleep(0.05)
        (trial,) = runtime.storage.list_trials("sts")
        assert trial.condition == TrialConditionType.RUNNING
        client = EarlyStoppingClient(runtime.early_stopping_address)
        try:
            with pytest.raises(errors.NotFoundError):
                client.set_trial_status("sts-nosuchtrial")
            client.set_trial_status(trial.name)
        finally:
            client.close()
        worker.join(60)
        assert finished, "the experiment did not complete"
        (trial,) = runtime.storage.list_trials("sts")
        rows = runtime.storage.get_observation_log(trial.name)
    assert trial.condition == TrialConditionType.EARLY_STOPPED
    assert 3 <= len(rows) < 600
    assert trial.status.observation is not None
    assert trial.status.observation.metrics[0].max == max(
        (r.value for r in rows), key=float
    )
    assert finished[0].status.trials_early_stopped == 1


def test_rows_with_equal_times_keep_their_order(storage: SQLStorage) -> None:
    """What medianstop's tie rule relies on: the store returns ties in insertion order."""
    at = parse_rfc3339(stamp(1))
    storage.report_observation_log(
        "t", [MetricLogEntry(METRIC, v, at) for v in ("3", "1", "2")]
    )
    assert [e.value for e in storage.get_observation_log("t", METRIC)] == ["3", "1", "2"]
