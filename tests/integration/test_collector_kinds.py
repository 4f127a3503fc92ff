"""Every collector kind, end to end at the trial level, with good and bad trial output.

Each test runs one small Experiment through the real reconcile loop, the local
executor (so the metrics collector wrapper, real trial processes and the path
remapping of Katib's absolute metrics paths) and a real DBManager over SQLite. A
categorical parameter ``mode`` picks what the trial does; each trial's final
condition, its message (the MetricsUnavailable reason) and its observation logs are
checked. Bad inputs must never crash anything: they end in the right condition with
a reason naming the cause.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from katib.api.loading import load_experiment_dict
from katib.api.models import Experiment, Trial
from katib.controller.reconcile import Controller
from katib.controller.suggestion_client import SuggestionReply
from katib.executors.base import LaunchContext
from katib.executors.local import LocalExecutor
from katib.storage.base import MetricLogEntry
from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage

TRIAL_PROGRAM = r"""
import json, os, sys, threading, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
mode, path = args["mode"], args.get("path", "")

def write(data, mode_="ab"):
    with open(path, mode_) as f:
        f.write(data)

def wait_reported(count):
    # until the collector has delivered `count` accuracy values (so it has read them)
    from katib.apis.dbmanager_client import get_observation_log
    address, trial = os.environ["KATIB_DB_MANAGER_ADDRESS"], os.environ["KATIB_TRIAL_NAME"]
    deadline = time.monotonic() + 60
    while len(get_observation_log(address, trial, "accuracy")) < count:
        assert time.monotonic() < deadline, "the collector never reported"
        time.sleep(0.05)

def events(tags):
    from tensorboardX import SummaryWriter
    w = SummaryWriter(path)
    for step, (tag, value) in enumerate(tags):
        w.add_scalar(tag, value, step)
    w.close()

if mode == "out-ok":
    print("epoch 1: accuracy=0.25", flush=True)
    time.sleep(0.2)
    print("2024-03-04T17:55:08Z INFO epoch 2: accuracy=0.5 loss=0.1", flush=True)
elif mode == "out-crlf":
    sys.stdout.buffer.write(b"epoch 1\r\naccuracy=0.6\r\n")
elif mode == "out-garbage":
    out = sys.stdout.buffer
    out.write(bytes(range(256)) * 64 + b"\n")
    out.write(b"\xff\xfe accuracy=\xff\xc3 not utf-8\n")
    out.write(b"x" * 3_000_000)  # one 3 MB line
    out.write(b"\naccuracy=0.7\n")
elif mode == "out-interleaved":
    def noise():
        for i in range(200):
            sys.stderr.write(f"warning {i}: accuracy might be low\n")
            sys.stderr.flush()
    t = threading.Thread(target=noise)
    t.start()
    for i in range(200):
        print(f"accuracy={i / 1000:.3f}", flush=True)
    t.join()
elif mode == "out-nan":
    print("accuracy=nan")
elif mode == "out-inf":
    print("accuracy=inf")
elif mode == "out-text":
    print("accuracy=abc")
elif mode == "out-none":
    print("hello")
elif mode == "file-ok":
    print("training; metrics go to", path, flush=True)
    time.sleep(0.3)  # the file appears late
    write(b"2024-03-04T17:55:08Z accuracy=0.3\n")
    write(b"accu")  # half a line, finished later
    time.sleep(0.3)
    write(b"racy=0.4\n")
elif mode == "file-never":
    print("accuracy=0.9 (on stdout, which File does not parse)")
elif mode == "file-rotated":
    write(b"accuracy=0.1\n")
    wait_reported(1)
    os.rename(path, path + ".1")
    write(b"accuracy=0.2\n")
elif mode == "file-truncated":
    write(b"accuracy=0.9\n" * 50)
    wait_reported(50)
    os.truncate(path, 0)
    write(b"accuracy=0.5\n")
elif mode == "file-dir":
    os.makedirs(path)
elif mode == "file-binary":
    write(bytes(range(256)) * 16 + b"\r\n" + b"\xff accuracy=\xfe\r\n")
    write(b"accuracy=0.1 " + b"y" * 2_000_000 + b"\n")  # one 2 MB line: only its head is read
    write(b"accuracy=0.8\r\n")
elif mode == "file-nan":
    write(b"accuracy=nan\naccuracy=-\n")
elif mode == "json-ok":
    write(b'{"accuracy": 0.5, "timestamp": 1638422847.5}\n{"accuracy": "0.6"}\n')
elif mode == "json-bad":
    write(b'{"accuracy": 0.5\n{"accuracy": true}\n["accuracy"]\n{"accuracy": null}\n')
    write(b'not json\n{"loss": 1}\n')
elif mode == "json-nan":
    write(b'{"accuracy": NaN}\n{"accuracy": Infinity}\n')
elif mode == "tf-ok":
    events([("accuracy", 0.5), ("accuracy", 0.75), ("loss", 0.1)])
elif mode == "tf-wrongtag":
    events([("acc", 0.5), ("val_loss", 0.1)])
elif mode == "tf-empty":
    print("no events written")
elif mode == "tf-corrupt":
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "events.out.tfevents.1.host"), "wb") as f:
        f.write(bytes(range(256)) * 40)
elif mode == "push-ok":
    import katib
    katib.report_metrics({"accuracy": 0.5})
    katib.report_metrics({"accuracy": 0.75})
elif mode == "push-none":
    print("accuracy=0.9 (on stdout, which Push does not parse)")
elif mode == "custom-ok":
    write(b"epoch,accuracy\n1,0.5\n2,0.75\n")
elif mode == "custom-fail":
    write(b"epoch,accuracy\n1,fail\n")
elif mode == "custom-nothing":
    print("no csv")
else:
    raise SystemExit(f"unknown mode {mode}")
"""

CUSTOM_COLLECTOR = r"""
import os, sys
import katib
sys.stdin.read()  # EOF: the trial has ended
path = os.environ["KATIB_METRICS_PATH"]
assert os.environ["KATIB_TRIAL_NAME"] and os.environ["KATIB_METRIC_NAMES"] == "accuracy,loss"
assert os.path.isfile(os.environ["KATIB_TRIAL_LOG"])
if not os.path.exists(path):
    print("no metrics file", path)
    raise SystemExit(0)
for row in open(path).read().splitlines()[1:]:
    epoch, value = row.split(",")
    try:
        katib.report_metrics({"accuracy": float(value)})
    except ValueError:
        print(f"cannot parse row {row!r}")
        raise SystemExit(3)
"""


class ModeSuggestions:
    """Hands out the modes in order."""

    def __init__(self, modes: Sequence[str]) -> None:
        self.modes = list(modes)

    def validate(self, experiment: Experiment) -> None:
        return None

    def get_suggestions(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        count: int,
        total: int,
        settings: Sequence[tuple[str, str]] = (),
        **_: Any,
    ) -> SuggestionReply:
        picked = self.modes[len(trials) : len(trials) + count]
        values = [{"mode": m} for m in picked]
        return SuggestionReply(values, [None] * len(values), [{}] * len(values))


@dataclass
class Outcome:
    condition: str
    message: str
    logs: list[MetricLogEntry]

    def values(self, name: str = "accuracy") -> list[str]:
        return [e.value for e in self.logs if e.metric_name == name]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SQLStorage]:
    store = SQLStorage(f"sqlite:///{tmp_path / 'k.db'}")
    yield store
    store.close()


@pytest.fixture
def address(storage: SQLStorage) -> Iterator[str]:
    server, port = serve_dbmanager(storage)
    yield f"127.0.0.1:{port}"
    server.stop(None)


def experiment_doc(
    modes: Sequence[str], collector: dict[str, Any], extra_args: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "kinds"},
        "spec": {
            "objective": {
                "type": "maximize",
                "objectiveMetricName": "accuracy",
                "additionalMetricNames": ["loss"],
            },
            "algorithm": {"algorithmName": "random"},
            "parallelTrialCount": min(4, len(modes)),
            "maxTrialCount": len(modes),
            "metricsCollectorSpec": collector,
            "parameters": [
                {
                    "name": "mode",
                    "parameterType": "categorical",
                    "feasibleSpace": {"list": list(modes)},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "mode", "reference": "mode"}],
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
                                            "--mode=${trialParameters.mode}",
                                            *extra_args,
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


def run_modes(
    tmp_path: Path,
    storage: SQLStorage,
    address: str,
    modes: Sequence[str],
    collector: dict[str, Any],
    extra_args: Sequence[str] = (),
) -> dict[str, Outcome]:
    """Run one trial per mode to the end; mode -> (condition, message, logs)."""
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    (tmp_path / "collector.py").write_text(textwrap.dedent(CUSTOM_COLLECTOR))
    experiment = load_experiment_dict(experiment_doc(modes, collector, extra_args))
    storage.create_experiment(experiment)
    executor = LocalExecutor(tmp_path / "trials")
    suggestions = ModeSuggestions(modes)
    controller = Controller(
        storage,
        executor,
        lambda name: suggestions,  # type: ignore[arg-type,return-value]
        lambda exp: LaunchContext(
            experiment=exp, db_manager_address=address, experiment_dir=tmp_path
        ),
    )
    deadline = time.monotonic() + 90
    try:
        while not controller.reconcile("kinds").completed:
            assert time.monotonic() < deadline, "experiment did not complete"
            time.sleep(0.05)
    finally:
        executor.close()
    out: dict[str, Outcome] = {}
    for trial in storage.list_trials("kinds"):
        mode = trial.spec.parameter_assignments[0].value
        last = trial.status.conditions[-1]
        out[mode] = Outcome(
            str(last.type), last.message or "", storage.get_observation_log(trial.name)
        )
    assert sorted(out) == sorted(modes)
    return out


def local_path(tmp_path: Path, outcome_dir: str, path: str) -> str:
    return str(tmp_path / "trials" / "default" / outcome_dir / "metrics-volume" / path.lstrip("/"))


def test_stdout_kind_good_and_bad_output(tmp_path: Path, storage: SQLStorage, address: str) -> None:
    modes = ["out-ok", "out-crlf", "out-garbage", "out-interleaved"]
    modes += ["out-nan", "out-inf", "out-text", "out-none"]
    got = run_modes(tmp_path, storage, address, modes, {"collector": {"kind": "StdOut"}})
    for mode in ("out-ok", "out-crlf", "out-garbage", "out-interleaved"):
        assert got[mode].condition == "Succeeded", (mode, got[mode])
    ok = got["out-ok"]
    # logs come back in time order: the line's leading RFC 3339 time is the metric's
    # time (2024 here), else the time it was read
    assert ok.values() == ["0.5", "0.25"] and ok.values("loss") == ["0.1"]
    stamped = next(e for e in ok.logs if e.value == "0.5")
    assert stamped.timestamp == datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)
    read_at = next(e for e in ok.logs if e.value == "0.25")
    assert abs((datetime.now(UTC) - read_at.timestamp).total_seconds()) < 120
    assert got["out-crlf"].values() == ["0.6"]
    assert got["out-garbage"].values() == ["0.7"]
    interleaved = got["out-interleaved"].values()
    assert interleaved == [f"{i / 1000:.3f}" for i in range(200)]
    # one step per report, per metric, in order
    steps = [e.step for e in got["out-interleaved"].logs if e.metric_name == "accuracy"]
    assert steps == list(range(1, 201))
    for mode, line in (("out-nan", "nan"), ("out-inf", "inf"), ("out-text", "abc")):
        outcome = got[mode]
        assert outcome.condition == "MetricsUnavailable", (mode, outcome)
        assert outcome.message == (
            "Metrics are not available: objective metric accuracy was not reported: the "
            "trial's output (1 line(s)) has no value for accuracy; 1 line(s) mention accuracy "
            f"without a value the parser accepts, e.g. 'accuracy={line}'"
        )
    none = got["out-none"]
    assert none.condition == "MetricsUnavailable"
    assert "the trial's output (1 line(s)) has no value for accuracy" in none.message


def test_file_text_kind(tmp_path: Path, storage: SQLStorage, address: str) -> None:
    modes = ["file-ok", "file-never", "file-rotated", "file-truncated"]
    modes += ["file-dir", "file-binary", "file-nan"]
    collector = {
        "collector": {"kind": "File"},
        "source": {"fileSystemPath": {"path": "/katib/out/metrics.log", "kind": "File"}},
    }
    got = run_modes(tmp_path, storage, address, modes, collector, ["--path=/katib/out/metrics.log"])
    ok = got["file-ok"]
    assert ok.condition == "Succeeded", ok
    assert ok.values() == ["0.3", "0.4"]
    assert ok.logs[0].timestamp == datetime(2024, 3, 4, 17, 55, 8, tzinfo=UTC)
    assert got["file-rotated"].condition == "Succeeded"
    assert got["file-rotated"].values() == ["0.1", "0.2"]
    truncated = got["file-truncated"]
    assert truncated.condition == "Succeeded"
    assert truncated.values()[-1] == "0.5" and len(truncated.values()) == 51
    assert got["file-binary"].condition == "Succeeded"
    assert got["file-binary"].values() == ["0.1", "0.8"]

    never = got["file-never"]
    assert never.condition == "MetricsUnavailable"
    assert "metrics file" in never.message and "was never created" in never.message
    assert (
        never.message.rstrip().endswith("katib/out/metrics.log was never created")
        and "metrics-volume" in never.message
    )
    assert "could not be read" in got["file-dir"].message
    assert got["file-dir"].condition == "MetricsUnavailable"
    nan = got["file-nan"]
    assert nan.condition == "MetricsUnavailable"
    assert "(24 bytes read) has no value for accuracy" in nan.message
    assert "2 line(s) mention accuracy" in nan.message


def test_file_json_kind(tmp_path: Path, storage: SQLStorage, address: str) -> None:
    collector = {
        "collector": {"kind": "File"},
        "source": {
            "fileSystemPath": {"path": "/katib/metrics.json", "kind": "File", "format": "JSON"}
        },
    }
    modes = ["json-ok", "json-bad", "json-nan"]
    got = run_modes(tmp_path, storage, address, modes, collector, ["--path=/katib/metrics.json"])
    ok = got["json-ok"]
    assert ok.condition == "Succeeded"
    assert sorted(ok.values()) == ["0.5", "0.6"]
    first = next(e for e in ok.logs if e.value == "0.5")
    assert first.timestamp == datetime(2021, 12, 2, 5, 27, 27, 500000, tzinfo=UTC)
    bad = got["json-bad"]
    assert bad.condition == "MetricsUnavailable"
    for text in ("1 invalid JSON", "1 not a JSON object", "2 value is not a number or string"):
        assert text in bad.message, bad.message
    nan = got["json-nan"]
    assert nan.condition == "MetricsUnavailable"
    assert "had no finite value" in nan.message
    assert "never as a finite number (values: NaN, Infinity)" in nan.message


def test_tfevent_kind(tmp_path: Path, storage: SQLStorage, address: str) -> None:
    pytest.importorskip("tensorboardX")
    collector = {
        "collector": {"kind": "TensorFlowEvent"},
        "source": {"fileSystemPath": {"path": "/katib/tfevent/", "kind": "Directory"}},
    }
    modes = ["tf-ok", "tf-wrongtag", "tf-empty", "tf-corrupt"]
    got = run_modes(tmp_path, storage, address, modes, collector, ["--path=/katib/tfevent/"])
    ok = got["tf-ok"]
    assert ok.condition == "Succeeded", ok
    assert ok.values() == ["0.5", "0.75"] and ok.values("loss") == ["0.1"]
    wrong = got["tf-wrongtag"]
    assert wrong.condition == "MetricsUnavailable"
    assert "no scalar tag matched metric 'accuracy'; scalar tags seen: acc (in .)" in wrong.message
    empty = got["tf-empty"]
    assert empty.condition == "MetricsUnavailable"
    assert "no TensorFlow event file" in empty.message
    corrupt = got["tf-corrupt"]
    assert corrupt.condition == "MetricsUnavailable"
    assert "no scalar summaries" in corrupt.message and "skipped:" in corrupt.message


@pytest.mark.parametrize("kind", ["Push", "None"])
def test_push_kinds(tmp_path: Path, storage: SQLStorage, address: str, kind: str) -> None:
    got = run_modes(
        tmp_path, storage, address, ["push-ok", "push-none"], {"collector": {"kind": kind}}
    )
    assert got["push-ok"].condition == "Succeeded"
    assert got["push-ok"].values() == ["0.5", "0.75"]
    none = got["push-none"]
    assert none.condition == "MetricsUnavailable"
    assert none.values() == []  # stdout is not parsed
    assert f"collector kind {kind}: metrics come only from the trial's own" in none.message


def test_custom_kind(tmp_path: Path, storage: SQLStorage, address: str) -> None:
    collector = {
        "collector": {
            "kind": "Custom",
            "customCollector": {
                "name": "csv-collector",
                "image": "example/csv-collector",
                "command": ["python3", "collector.py"],
            },
        },
        "source": {"fileSystemPath": {"path": "/katib/metrics.csv", "kind": "File"}},
    }
    modes = ["custom-ok", "custom-fail", "custom-nothing"]
    got = run_modes(tmp_path, storage, address, modes, collector, ["--path=/katib/metrics.csv"])
    ok = got["custom-ok"]
    assert ok.condition == "Succeeded", ok
    assert ok.values() == ["0.5", "0.75"]
    fail = got["custom-fail"]
    assert fail.condition == "Failed"
    assert "custom metrics collector exited with code 3" in fail.message
    assert "cannot parse row" in fail.message
    nothing = got["custom-nothing"]
    assert nothing.condition == "MetricsUnavailable"
    assert "collector kind Custom" in nothing.message


def test_prometheus_kind_is_refused_clearly(
    tmp_path: Path, storage: SQLStorage, address: str
) -> None:
    collector = {"collector": {"kind": "PrometheusMetric"}}
    got = run_modes(tmp_path, storage, address, ["out-ok"], collector)
    assert got["out-ok"].condition == "Failed"
    assert "PrometheusMetric is not supported by the local executor" in got["out-ok"].message


def test_result_file_names_the_kind_and_counts(tmp_path: Path) -> None:
    """The wrapper's result.json for a File trial: reason, counts, kind."""
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    metrics = tmp_path / "m.log"
    out = _wrapper(
        tmp_path,
        ["--source-kind", "file", "--file-path", str(metrics)],
        ["--mode=file-nan", f"--path={metrics}"],
    )
    assert out["collector_kind"] == "file"
    assert out["metric_counts"] == {}
    assert out["objective_seen"] is False
    assert out["reason"].startswith(f"metrics file {metrics} (24 bytes read) has no value")


def _wrapper(tmp_path: Path, flags: Sequence[str], trial_args: Sequence[str]) -> dict[str, Any]:
    import subprocess

    trial_dir = tmp_path / "t"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "metrics_collector",
            "--trial-name",
            "t",
            "--metric-names",
            "accuracy",
            "--trial-dir",
            str(trial_dir),
            "--db-manager-address",
            "127.0.0.1:9",
            "--final-flush-timeout",
            "0.5",
            *flags,
            "--",
            sys.executable,
            str(tmp_path / "trial.py"),
            *trial_args,
        ],
        timeout=60,
        check=False,
        start_new_session=True,
    )
    data: dict[str, Any] = json.loads((trial_dir / "result.json").read_text())
    return data


# -- the wrapper alone: early stopping on File/TFEvent sources, Custom failures --------

SLOW_FILE_WRITER = r"""
import os, sys, time
path = sys.argv[1]
for i in range(200):
    with open(path, "a") as f:
        f.write(f"accuracy=0.{i % 3}\n")
    time.sleep(0.05)
open(path + ".done", "w").close()
"""

SLOW_EVENT_WRITER = r"""
import sys, time
from tensorboardX import SummaryWriter
w = SummaryWriter(sys.argv[1])
for i in range(200):
    w.add_scalar("accuracy", 0.1, i)
    w.flush()
    time.sleep(0.05)
w.close()
open(sys.argv[1] + ".done", "w").close()
"""


@pytest.mark.parametrize("kind", ["file", "tfevent"])
def test_early_stopping_rules_apply_to_file_and_event_sources(tmp_path: Path, kind: str) -> None:
    if kind == "tfevent":
        pytest.importorskip("tensorboardX")
    target = tmp_path / ("metrics.log" if kind == "file" else "events")
    program = SLOW_FILE_WRITER if kind == "file" else SLOW_EVENT_WRITER
    (tmp_path / "trial.py").write_text(program)
    flag = ["--file-path"] if kind == "file" else ["--tfevent-dir"]
    out = _wrapper(
        tmp_path,
        [
            "--source-kind",
            kind,
            *flag,
            str(target),
            "--poll-interval",
            "0.05",
            "--stop-rule",
            "accuracy;0.5;less;3",
            "--objective-type",
            "maximize",
            "--grace-period",
            "1",
        ],
        [str(target)],
    )
    assert out["early_stopped"] is True, out
    assert "accuracy best so far" in out["early_stopped_reason"]
    assert out["metric_counts"]["accuracy"] >= 3
    assert not Path(str(target) + ".done").exists()  # stopped long before its end


def test_custom_collector_that_never_exits_is_stopped_and_fails_the_trial(
    tmp_path: Path,
) -> None:
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    hang = "import time\nprint('collecting forever', flush=True)\ntime.sleep(60)\n"
    out = _wrapper(
        tmp_path,
        [
            "--source-kind",
            "custom",
            "--custom-timeout",
            "0.5",
            "--grace-period",
            "1",
            "--custom-command",
            json.dumps([sys.executable, "-c", hang]),
        ],
        ["--mode=out-none"],
    )
    assert out["exit_code"] == 0
    assert out["error"] == (
        "custom metrics collector did not exit within 0.5s after the trial ended and was "
        "stopped (last output: 'collecting forever')"
    )


def test_custom_collector_that_cannot_start_fails_before_the_trial(tmp_path: Path) -> None:
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    out = _wrapper(
        tmp_path,
        ["--source-kind", "custom", "--custom-command", '["/nonexistent/collector"]'],
        ["--mode=out-none"],
    )
    assert out["error"].startswith("custom metrics collector cannot start:")
    assert out["exit_code"] is None
    assert not (tmp_path / "t" / "trial.pid").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--source-kind", "file", "--file-path", "m", "--file-format", "json", "--filter", "x"],
            "filter must be nil when format of metrics file is json",
        ),
        (["--source-kind", "file", "--file-path", "m", "--file-format", "XML"], "XML"),
        (["--source-kind", "file"], "collector kind File needs --file-path"),
        (["--source-kind", "tfevent"], "collector kind TensorFlowEvent needs --tfevent-dir"),
    ],
)
def test_bad_source_flags_are_reported_without_running_the_trial(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "trial.py").write_text(TRIAL_PROGRAM)
    out = _wrapper(tmp_path, flags, ["--mode=out-none"])
    assert message in out["error"]
    assert out["exit_code"] is None and out["reason"] is None


def test_line_flushed_burst_then_exit_loses_nothing(tmp_path: Path) -> None:
    """Read coalescing must not drop the output written just before the command exits."""
    (tmp_path / "trial.py").write_text(
        "import sys\n"
        "for i in range(20000):\n"
        "    print(f'step {i} accuracy=0.{i}' if i % 100 == 0 else f'noise {i}', flush=True)\n"
        "sys.stdout.write('accuracy=0.99')  # no newline, then exit\n"
    )
    out = _wrapper(tmp_path, [], [])
    log = (tmp_path / "t" / "trial.log").read_bytes()
    assert log.count(b"\n") == 20000 and log.endswith(b"accuracy=0.99")
    assert out["metric_counts"] == {"accuracy": 201}
