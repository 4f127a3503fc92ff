"""Private metrics paths: which path is shared, when it can be isolated, locks and cleanup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from katib.api.models import (
    CollectorSpec,
    FileSystemKind,
    FileSystemPath,
    MetricsCollectorSpec,
    SourceSpec,
)
from katib.executors.base import LaunchDeferredError
from katib.executors.private_paths import (
    MetricsPath,
    PrivatePaths,
    metrics_path_of,
    registry_dir,
)
from metrics_collector.isolation import shim_argv


def spec(kind: str, path: str | None = None, fs_kind: str | None = None) -> MetricsCollectorSpec:
    source = None
    if path is not None:
        source = SourceSpec(file_system_path=FileSystemPath(path=path, kind=fs_kind))
    return MetricsCollectorSpec(collector=CollectorSpec(kind=kind), source=source)


def test_metrics_path_of_each_kind() -> None:
    assert metrics_path_of(None) is None
    assert metrics_path_of(spec("StdOut")) is None
    assert metrics_path_of(spec("Push")) is None
    assert metrics_path_of(spec("File")) == MetricsPath("/var/log/katib/metrics.log", False)
    assert metrics_path_of(spec("File", "/katib/mnist.log")) == MetricsPath(
        "/katib/mnist.log", False
    )
    assert metrics_path_of(spec("File", "logs/m.log")) is None  # relative: already private
    tf = metrics_path_of(spec("TensorFlowEvent"))
    assert tf == MetricsPath("/var/log/katib/tfevent", True)
    assert tf.mount_point == "/var/log/katib/tfevent"
    assert metrics_path_of(spec("Custom")) is None
    custom = metrics_path_of(spec("Custom", "/out/dir/", FileSystemKind.DIRECTORY.value))
    assert custom == MetricsPath("/out/dir", True)
    assert MetricsPath("/katib/mnist.log", False).mount_point == "/katib"


def test_shim_argv() -> None:
    argv = shim_argv([(Path("/t/metrics-volume/katib"), "/katib")], ["python3", "x.py"])
    assert argv == [
        sys.executable,
        *("-m", "metrics_collector.isolation", "--bind", "/t/metrics-volume/katib", "/katib"),
        *("--", "python3", "x.py"),
    ]


def make(tmp_path: Path, reason: str | None = None, **kw: bool) -> tuple[PrivatePaths, list[str]]:
    notices: list[str] = []
    paths = PrivatePaths(
        tmp_path / "root", notices.append, probe=lambda: reason, registry=tmp_path / "reg", **kw
    )
    return paths, notices


def test_mounts_that_would_hide_what_the_trial_needs_are_refused(tmp_path: Path) -> None:
    paths, notices = make(tmp_path)
    assert not paths.decide(MetricsPath("/metrics.log", False)).isolated
    hidden = MetricsPath(str(Path(sys.executable).parent / "m.log"), False)
    assert "would hide" in paths.decide(hidden).reason
    script_dir = tmp_path / "exp"
    script_dir.mkdir()
    beside_script = MetricsPath(str(script_dir / "m.log"), False)
    assert not paths.decide(beside_script, [script_dir / "train.py"]).isolated
    assert len(notices) == 3 and all("one at a time" in n for n in notices)
    ok = MetricsPath(str(tmp_path / "elsewhere" / "m.log"), False)
    assert paths.decide(ok).isolated
    assert paths.parallel_limit(spec("File", ok.path), ()) is None
    assert paths.parallel_limit(spec("File", "/metrics.log"), ()) == 1


def test_no_namespaces_means_one_at_a_time_with_one_notice(tmp_path: Path) -> None:
    paths, notices = make(tmp_path, reason="unshare: Operation not permitted")
    target = MetricsPath(str(tmp_path / "shared" / "m.log"), False)
    for _ in range(3):
        assert paths.parallel_limit(spec("File", target.path), ()) == 1
    assert len(notices) == 1 and "Operation not permitted" in notices[0]
    disabled, said = make(tmp_path, enabled=False)
    assert not disabled.decide(target).isolated and "turned off" in said[0]


def test_exclusive_lock_defers_the_second_trial_and_sets_old_output_aside(tmp_path: Path) -> None:
    paths, _ = make(tmp_path, enabled=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    target = MetricsPath(str(shared / "m.log"), False)
    (shared / "m.log").write_text("accuracy=0.9\n")  # left by an earlier trial
    first = paths.acquire(target, tmp_path / "t1", "t1")
    try:
        assert not (shared / "m.log").exists(), "the old file was set aside"
        moved = list((tmp_path / "root" / ".private-paths" / "set-aside").glob("*-t1/m.log"))
        assert len(moved) == 1 and moved[0].read_text() == "accuracy=0.9\n"
        assert first.binds == [] and first.wrap(["a"]) == ["a"]
        with pytest.raises(LaunchDeferredError, match="another trial is using"):
            paths.acquire(target, tmp_path / "t2", "t2")
    finally:
        first.close()
    second = paths.acquire(target, tmp_path / "t2", "t2")  # the first one's lock is gone
    second.close()


def test_created_mount_points_are_removed_when_the_last_user_ends(tmp_path: Path) -> None:
    paths, _ = make(tmp_path)
    target = MetricsPath(str(tmp_path / "a" / "b" / "m.log"), False)
    one = paths.acquire(target, tmp_path / "t1", "t1")
    two = paths.acquire(target, tmp_path / "t2", "t2")
    assert (tmp_path / "a" / "b").is_dir()
    assert one.binds == [
        (tmp_path / "t1" / "metrics-volume" / target.mount_point[1:], str(tmp_path / "a" / "b"))
    ]
    assert one.binds[0][0].is_dir()
    assert one.wrap(["x"])[1:3] == ["-m", "metrics_collector.isolation"]
    one.close()
    assert not paths.release(), "t2 still holds it"
    assert (tmp_path / "a" / "b").is_dir()
    two.close()
    assert paths.release()
    assert not (tmp_path / "a").exists(), "both created levels removed"
    assert paths.release(), "idempotent"


def test_nothing_is_removed_while_a_nested_mount_point_is_in_use(tmp_path: Path) -> None:
    paths, _ = make(tmp_path)
    inner = MetricsPath(str(tmp_path / "k" / "out" / "m.log"), False)  # creates k and k/out
    outer = MetricsPath(str(tmp_path / "k" / "m.json"), False)  # k exists by then
    paths.acquire(inner, tmp_path / "t1", "t1").close()
    running = paths.acquire(outer, tmp_path / "t2", "t2")
    assert not paths.release(), "k is a mount point in t2's namespace"
    assert (tmp_path / "k").is_dir()
    running.close()
    assert paths.release() and not (tmp_path / "k").exists()


def test_a_created_directory_someone_wrote_to_is_kept(tmp_path: Path) -> None:
    paths, _ = make(tmp_path)
    target = MetricsPath(str(tmp_path / "w" / "m.log"), False)
    paths.acquire(target, tmp_path / "t1", "t1").close()
    (tmp_path / "w" / "user-file").write_text("x")
    assert not paths.release()
    assert (tmp_path / "w" / "user-file").exists()
    (tmp_path / "w" / "user-file").unlink()
    assert paths.release() and not (tmp_path / "w").exists()


def test_a_mount_point_that_was_there_is_left_alone(tmp_path: Path) -> None:
    paths, _ = make(tmp_path)
    existing = tmp_path / "existing"
    existing.mkdir()
    target = MetricsPath(str(existing / "m.log"), False)
    paths.acquire(target, tmp_path / "t1", "t1").close()
    paths.release()
    assert existing.is_dir()


def test_the_registry_is_shared_by_executors_of_this_user(tmp_path: Path) -> None:
    one = PrivatePaths(tmp_path / "a", lambda _: None)
    two = PrivatePaths(tmp_path / "b", lambda _: None)
    assert one.state == two.state == registry_dir(tmp_path / "unused")
    assert one.state.stat().st_mode & 0o777 == 0o700


def test_a_mount_point_that_cannot_be_created_falls_back(tmp_path: Path) -> None:
    paths, notices = make(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = MetricsPath(str(blocker / "sub" / "m.log"), False)
    assert not paths.decide(target).isolated
    assert f"{blocker} is not a directory" in notices[0]
