"""From a trial's metricsCollectorSpec to the metrics collector wrapper's flags.

Katib's pod webhook mounts an emptyDir ("metrics-volume") at the metrics path, so
every trial of an Experiment writes ``/var/log/katib/metrics.log`` (or ``/katib/
mnist.log``, or an event directory) into a volume of its own. A local process cannot
mount anything without privileges, and parallel trials would write the same file, so
the local executor gives each trial its own copy of the path instead:

    <trial dir>/metrics-volume/<the absolute path without its leading '/'>

and rewrites the path wherever the trial's command line or environment names it, as
a whole path token: the path itself, a path below it (``<dir>/train``) or a directory
above it (Katib's TF example passes ``--log-path=/mnist-with-summaries-logs`` and
collects ``/mnist-with-summaries-logs/test``). The trial, and a Custom collector, also
find the local path in ``KATIB_METRICS_PATH``. A relative path (Katib's validation
rejects them) is taken relative to the trial's working directory, unchanged.

``remap=False`` keeps the paths as written, for an executor that gives each trial
private mounts instead.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from katib.api.defaults import DEFAULT_FILE_PATH, DEFAULT_TF_EVENT_DIR
from katib.api.models import CollectorKind, FileFormat, MetricsCollectorSpec
from katib.errors import ExecutorError

METRICS_VOLUME = "metrics-volume"
ENV_METRICS_PATH = "KATIB_METRICS_PATH"

_WRAPPER_KIND = {
    CollectorKind.STDOUT: "stdout",
    CollectorKind.FILE: "file",
    CollectorKind.TENSORFLOW_EVENT: "tfevent",
    CollectorKind.PUSH: "push",
    CollectorKind.NONE: "none",
    CollectorKind.CUSTOM: "custom",
}
# An absolute path inside an argument: at its start or after '=', ':', ',', a quote or a
# space, up to the next such character.
_PATH_TOKEN = re.compile(r"(?:^|(?<=[=\s:,'\"]))/[^\s:,'\"=]*")


def collector_kind(spec: MetricsCollectorSpec | None) -> CollectorKind:
    """The Experiment's collector kind (StdOut when unset); ExecutorError if unsupported."""
    raw = spec.collector.kind if spec and spec.collector and spec.collector.kind else "StdOut"
    try:
        kind = CollectorKind(str(raw))
    except ValueError:
        raise ExecutorError(f"unknown metrics collector kind {raw}") from None
    if kind not in _WRAPPER_KIND:
        raise ExecutorError(
            f"metrics collector kind {kind.value} is not supported by the local executor "
            "(it needs an HTTP endpoint scraped inside a pod)"
        )
    return kind


@dataclass
class CollectorPlan:
    """The wrapper flags for a trial, and its command and environment after remapping."""

    kind: CollectorKind
    args: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: Directories to create before the trial starts (the "volume").
    dirs: list[Path] = field(default_factory=list)
    metrics_path: Path | None = None


class PathMapper:
    """Maps one metrics path (and the paths around it) into a trial directory."""

    def __init__(self, path: str, trial_dir: Path, work_dir: Path, remap: bool) -> None:
        self.path = path
        self.remap = remap and posixpath.isabs(path)
        self._root = trial_dir / METRICS_VOLUME
        self._target = posixpath.normpath(path) if posixpath.isabs(path) else ""
        if not posixpath.isabs(path):
            self.local = work_dir / path
        elif self.remap:
            self.local = self._root / self._target.lstrip("/")
        else:
            self.local = Path(path)

    def _related(self, token: str) -> bool:
        norm = posixpath.normpath(token)
        if norm == "/":
            return False
        target = self._target
        return norm == target or target.startswith(norm + "/") or norm.startswith(target + "/")

    def text(self, value: str) -> str:
        """``value`` with every path token at, above or below the metrics path remapped."""
        if not self.remap or "/" not in value:
            return value

        def swap(m: re.Match[str]) -> str:
            token = m.group(0)
            if not self._related(token):
                return token
            mapped = str(self._root / posixpath.normpath(token).lstrip("/"))
            return mapped + "/" if token.endswith("/") else mapped

        return _PATH_TOKEN.sub(swap, value)


def plan_collector(
    spec: MetricsCollectorSpec | None,
    *,
    trial_dir: Path,
    work_dir: Path,
    argv: list[str],
    env: dict[str, str],
    container_argv: Callable[[dict[str, Any], str], list[str]],
    remap: bool = True,
) -> CollectorPlan:
    """Wrapper flags for ``spec``; ``container_argv(container, what)`` builds the custom
    collector's argv the way the trial's own is built (python, relative scripts)."""
    kind = collector_kind(spec)
    plan = CollectorPlan(kind=kind, argv=list(argv), env=dict(env))
    plan.args = ["--source-kind", _WRAPPER_KIND[kind]]
    source = spec.source if spec else None
    fsp = source.file_system_path if source else None
    filters = list(source.filter.metrics_format or []) if source and source.filter else []
    path: str | None = fsp.path if fsp is not None and fsp.path else None
    if kind == CollectorKind.FILE:
        path = path or DEFAULT_FILE_PATH
    elif kind == CollectorKind.TENSORFLOW_EVENT:
        path = path or DEFAULT_TF_EVENT_DIR
    elif kind != CollectorKind.CUSTOM:
        path = None
    mapper = PathMapper(path, trial_dir, work_dir, remap) if path else None
    if mapper is not None:
        plan.metrics_path = mapper.local
        plan.argv = [mapper.text(a) for a in plan.argv]
        plan.env = {k: mapper.text(v) for k, v in plan.env.items()}
        plan.env[ENV_METRICS_PATH] = str(mapper.local)
        is_dir = kind == CollectorKind.TENSORFLOW_EVENT or (
            fsp is not None and str(fsp.kind or "") == "Directory"
        )
        plan.dirs.append(mapper.local if is_dir else mapper.local.parent)

    if kind == CollectorKind.STDOUT:
        for regex in filters:
            plan.args += ["--filter", regex]
    elif kind == CollectorKind.FILE:
        assert mapper is not None
        fmt = str(fsp.format) if fsp is not None and fsp.format else FileFormat.TEXT.value
        plan.args += ["--file-path", str(mapper.local), "--file-format", fmt]
        for regex in filters:
            plan.args += ["--filter", regex]
    elif kind == CollectorKind.TENSORFLOW_EVENT:
        assert mapper is not None
        plan.args += ["--tfevent-dir", str(mapper.local)]
    elif kind == CollectorKind.CUSTOM:
        container = spec.collector.custom_collector if spec and spec.collector else None
        if not isinstance(container, dict):
            raise ExecutorError("metrics collector kind Custom needs collector.customCollector")
        custom_argv = container_argv(container, "customCollector")
        if mapper is not None:
            custom_argv = [mapper.text(a) for a in custom_argv]
        plan.args += ["--custom-command", json.dumps(custom_argv)]
        for name, value in container_env(container, "customCollector").items():
            plan.args += ["--custom-env", f"{name}={mapper.text(value) if mapper else value}"]
        if mapper is not None:
            plan.args += ["--metrics-path", str(mapper.local)]
    return plan


def container_env(container: dict[str, Any], what: str) -> dict[str, str]:
    """A container's literal env entries; valueFrom cannot be resolved locally."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        if "valueFrom" in item:
            raise ExecutorError(
                f"{what} env {item['name']} uses valueFrom, which the local executor cannot resolve"
            )
        env[str(item["name"])] = str(item.get("value", ""))
    return env
