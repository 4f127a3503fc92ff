"""From metricsCollectorSpec to the wrapper's flags, and Katib's absolute paths made local."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from katib.api.models import MetricsCollectorSpec
from katib.errors import ExecutorError
from katib.executors.collector_args import PathMapper, plan_collector


def spec(data: dict[str, Any]) -> MetricsCollectorSpec:
    return MetricsCollectorSpec.model_validate(data)


def custom_argv(container: dict[str, Any], what: str) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def plan(data: dict[str, Any] | None, argv: list[str] | None = None, **env: str) -> Any:
    return plan_collector(
        spec(data) if data is not None else None,
        trial_dir=Path("/t/trial"),
        work_dir=Path("/t/trial/work"),
        argv=argv or ["python", "train.py"],
        env=dict(env),
        container_argv=custom_argv,
    )


VOLUME = "/t/trial/metrics-volume"


def test_stdout_is_the_default_and_keeps_filters() -> None:
    assert plan(None).args == ["--source-kind", "stdout"]
    p = plan({"source": {"filter": {"metricsFormat": ["a=(b)(c)"]}}})
    assert p.args == ["--source-kind", "stdout", "--filter", "a=(b)(c)"]
    assert p.metrics_path is None and p.dirs == []


def test_file_kind_maps_the_path_into_the_trial_and_rewrites_the_command() -> None:
    p = plan(
        {
            "collector": {"kind": "File"},
            "source": {
                "fileSystemPath": {"path": "/katib/mnist.log", "kind": "File", "format": "TEXT"},
                "filter": {"metricsFormat": ["x"]},
            },
        },
        ["python3", "mnist.py", "--log-path=/katib/mnist.log", "--data=/data/mnist"],
        LOG_FILE="/katib/mnist.log",
        OTHER="/katib-other/x",
    )
    local = f"{VOLUME}/katib/mnist.log"
    assert p.args == [
        "--source-kind", "file", "--file-path", local, "--file-format", "TEXT", "--filter", "x",
    ]  # fmt: skip
    assert p.argv == ["python3", "mnist.py", f"--log-path={local}", "--data=/data/mnist"]
    assert p.env == {
        "LOG_FILE": local,
        "OTHER": "/katib-other/x",
        "KATIB_METRICS_PATH": local,
    }
    assert p.dirs == [Path(f"{VOLUME}/katib")]


def test_file_kind_defaults_to_katibs_path_and_json_keeps_its_format() -> None:
    p = plan({"collector": {"kind": "File"}})
    assert p.args[:4] == [
        "--source-kind",
        "file",
        "--file-path",
        f"{VOLUME}/var/log/katib/metrics.log",
    ]
    p = plan(
        {
            "collector": {"kind": "File"},
            "source": {"fileSystemPath": {"path": "/m.json", "kind": "File", "format": "JSON"}},
        }
    )
    assert p.args[-2:] == ["--file-format", "JSON"]


def test_tfevent_maps_the_directory_its_parents_and_children() -> None:
    # Katib's tf-mnist-with-summaries passes the parent directory and collects test/.
    p = plan(
        {
            "collector": {"kind": "TensorFlowEvent"},
            "source": {
                "fileSystemPath": {"path": "/mnist-with-summaries-logs/test", "kind": "Directory"}
            },
        },
        [
            "python3",
            "mnist.py",
            "--log-path=/mnist-with-summaries-logs",
            "--test-dir",
            "/mnist-with-summaries-logs/test/",
            "--mnist-data=/mnist-data",
            "/",
        ],
    )
    local = f"{VOLUME}/mnist-with-summaries-logs"
    assert p.args == ["--source-kind", "tfevent", "--tfevent-dir", f"{local}/test"]
    assert p.argv[2:] == [
        f"--log-path={local}",
        "--test-dir",
        f"{local}/test/",
        "--mnist-data=/mnist-data",
        "/",
    ]
    assert p.dirs == [Path(f"{local}/test")]


@pytest.mark.parametrize("kind,flag", [("Push", "push"), ("None", "none")])
def test_push_kinds_take_no_source(kind: str, flag: str) -> None:
    p = plan({"collector": {"kind": kind}, "source": {"filter": {"metricsFormat": ["x"]}}})
    assert p.args == ["--source-kind", flag]
    assert "KATIB_METRICS_PATH" not in p.env


def test_custom_collector_gets_its_command_env_and_the_path() -> None:
    p = plan(
        {
            "collector": {
                "kind": "Custom",
                "customCollector": {
                    "name": "c",
                    "image": "x",
                    "command": ["python3", "collect.py"],
                    "args": ["--file=/katib/metrics.csv"],
                    "env": [
                        {"name": "MODE", "value": "csv"},
                        {"name": "F", "value": "/katib/metrics.csv"},
                    ],
                },
            },
            "source": {"fileSystemPath": {"path": "/katib/metrics.csv", "kind": "File"}},
        }
    )
    local = f"{VOLUME}/katib/metrics.csv"
    i = p.args.index("--custom-command")
    assert json.loads(p.args[i + 1]) == ["python3", "collect.py", f"--file={local}"]
    assert p.args[i + 2 : i + 4] == ["--custom-env", "MODE=csv"]
    assert p.args[i + 4 : i + 6] == ["--custom-env", f"F={local}"]
    assert p.args[-2:] == ["--metrics-path", local]


def test_custom_without_container_and_prometheus_are_errors() -> None:
    with pytest.raises(ExecutorError, match="customCollector"):
        plan({"collector": {"kind": "Custom"}})
    with pytest.raises(ExecutorError, match="PrometheusMetric is not supported"):
        plan({"collector": {"kind": "PrometheusMetric"}})
    with pytest.raises(ExecutorError, match="valueFrom"):
        plan(
            {
                "collector": {
                    "kind": "Custom",
                    "customCollector": {"command": ["c"], "env": [{"name": "A", "valueFrom": {}}]},
                }
            }
        )


def test_path_mapper_leaves_unrelated_paths_and_can_be_turned_off() -> None:
    mapper = PathMapper("/var/log/katib/metrics.log", Path("/t"), Path("/t/work"), remap=True)
    assert mapper.local == Path("/t/metrics-volume/var/log/katib/metrics.log")
    for text in ("/var/log/katib/metrics.log.1", "/var/lib", "relative/var/log", "x/var/log/katib"):
        assert mapper.text(text) == text
    assert mapper.text("a:/var/log/katib,b") == "a:/t/metrics-volume/var/log/katib,b"
    assert mapper.text("/var/log/katib/./metrics.log") == str(mapper.local)
    off = PathMapper("/var/log/katib/metrics.log", Path("/t"), Path("/t/work"), remap=False)
    assert off.local == Path("/var/log/katib/metrics.log")
    assert off.text("--p=/var/log/katib/metrics.log") == "--p=/var/log/katib/metrics.log"
    relative = PathMapper("logs/m.log", Path("/t"), Path("/t/work"), remap=True)
    assert relative.local == Path("/t/work/logs/m.log")
