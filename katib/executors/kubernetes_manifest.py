"""The resource a trial creates on Kubernetes, as a plain dict (no `kubernetes` import).

`build_trial_manifest` takes the trial's rendered run spec (any kind, see
katib.executors.pod_templates) and adds what the cluster-side parts need:

* ``metadata``: name = trial, namespace = the Experiment's, labels
  ``katib.kubeflow.org/experiment``, ``katib.kubeflow.org/trial`` and
  ``app.kubernetes.io/managed-by``, and the owner annotation ``katib.kubeflow.org/owner``
  (``<namespace>/<experiment>/<trial>``): there is no Trial object to own it, so these
  are what find and clean up a trial's resources (`label_selector`);
* the same labels on every pod template, so the trial's pods can be listed;
* on the primary container (``primaryContainerName`` in the pod templates whose pods
  will carry ``primaryPodLabels``): ``KATIB_TRIAL_NAME``, ``KATIB_DB_MANAGER_ADDRESS``
  and ``KATIB_TOKEN`` (from a Secret) in its environment, and the metrics collector:

  - ``collector="wrapper"``: the command becomes ``python -m metrics_collector ... --
    <command>``; the image must contain this package;
  - ``collector="sidecar"`` (Katib's approach): the command runs under a small POSIX
    shell script (`PRIMARY_SCRIPT`) that copies its output to the shared metrics log
    (StdOut), heartbeats, and writes an *exit marker* with the exit code to a shared
    emptyDir when it ends. A sidecar container of ``collector_image`` follows the log or
    metrics file (``python -m metrics_collector --sidecar``), reports to the DBManager,
    and ends when the marker appears (or when the heartbeat stops: the primary was
    killed). It waits for nothing else, so a service-mesh proxy or any other
    long-running container cannot keep the trial alive. Early stopping writes a stop file
    that the script turns into SIGTERM; an early-stopped command exits 0, as in Katib.

Either way the collector copies its result (JSON: exit code, early stop, why metrics are
missing) into its container's termination message, where the executor reads it.

TrainJob pods come from their runtime and cannot get a sidecar: its ``spec.trainer``
command is wrapped instead, on node 0 only (``JOB_COMPLETION_INDEX``). Collector kinds
Push/None add only the environment; Custom adds the user's collector container as the
sidecar (as in Katib), with the shared volume at its ``fileSystemPath``.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from katib.api.defaults import DEFAULT_FILE_PATH, DEFAULT_TF_EVENT_DIR, is_push_collector
from katib.api.models import (
    EXPERIMENT_LABEL,
    CollectorKind,
    Experiment,
    FileFormat,
    MetricsCollectorSpec,
    Trial,
)
from katib.errors import InvalidArgumentError
from katib.executors.pod_templates import PodTemplate, matches, pod_templates

TRIAL_LABEL = "katib.kubeflow.org/trial"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "katib-local"
OWNER_ANNOTATION = "katib.kubeflow.org/owner"
COLLECTOR_ANNOTATION = "katib.kubeflow.org/metrics-collector"

METRICS_VOLUME = "metrics-volume"
CONTROL_VOLUME = "katib-control"
CONTROL_DIR = "/var/run/katib"
EXIT_MARKER = "exit"
STOP_MARKER = "stop"
ALIVE_FILE = "alive"
STDOUT_LOG = "/var/log/katib/metrics.log"
COLLECTORS = ("sidecar", "wrapper")
#: The collector copies its result (JSON) into the container's termination message, which
#: the executor reads from the pod status: exit code, early stop, why metrics are missing.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_ENV = "KATIB_TERMINATION_MESSAGE_PATH"
TOKEN_SECRET_KEY = "token"

#: Run "$@" (the original command) with its output copied to $KATIB_METRICS_LOG when set;
#: number the attempt in $KATIB_CONTROL_DIR/attempt (a container restarted in place starts a
#: new one, with a fresh log); keep .../alive fresh; turn .../stop into SIGTERM; when done,
#: write .../exit: the exit code ("early-stopped" when stopped), then the attempt number.
PRIMARY_SCRIPT = r"""set -u
m="${KATIB_CONTROL_DIR}"
mkdir -p "$m"
rm -f "$m/exit" "$m/exit.tmp" "$m/out" "$m/stop"
n=$(cat "$m/attempt" 2>/dev/null || true)
case "$n" in ''|*[!0-9]*) n=0 ;; esac
n=$((n + 1))
if [ -n "${KATIB_METRICS_LOG:-}" ]; then
  mkdir -p "$(dirname "$KATIB_METRICS_LOG")"
  : > "$KATIB_METRICS_LOG"
fi
echo "$n" > "$m/attempt.tmp"
mv "$m/attempt.tmp" "$m/attempt"
if [ -n "${KATIB_METRICS_LOG:-}" ]; then
  mkfifo "$m/out"
  tee -a "$KATIB_METRICS_LOG" < "$m/out" &
  tee_pid=$!
  "$@" > "$m/out" 2>&1 &
else
  tee_pid=""
  "$@" &
fi
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
(
  while kill -0 "$pid" 2>/dev/null; do
    : > "$m/alive"
    if [ -e "$m/stop" ]; then kill -TERM "$pid" 2>/dev/null; fi
    sleep 1
  done
) &
watcher=$!
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do rc=0; wait "$pid" || rc=$?; done
if [ -n "$tee_pid" ]; then wait "$tee_pid" || true; rm -f "$m/out"; fi
kill "$watcher" 2>/dev/null || true
if [ -e "$m/stop" ]; then
  echo "Training Container was Early Stopped"
  printf 'early-stopped\n%s\n' "$n" > "$m/exit.tmp"
  rc=0
else
  printf '%s\n%s\n' "$rc" "$n" > "$m/exit.tmp"
fi
mv "$m/exit.tmp" "$m/exit"
exit "$rc"
"""


# --- labels ------------------------------------------------------------------------------


def _experiment_of(trial: Trial) -> str:
    return (trial.metadata.labels or {}).get(EXPERIMENT_LABEL, "")


def trial_labels(trial: Trial, experiment: str | None = None) -> dict[str, str]:
    """The labels every resource and pod of the trial carries."""
    return {
        EXPERIMENT_LABEL: experiment or _experiment_of(trial),
        TRIAL_LABEL: trial.name,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def label_selector(experiment: str | None = None, trial: str | None = None) -> str:
    """A label selector for what this service created: all of it, an experiment's, a trial's."""
    parts = [f"{MANAGED_BY_LABEL}={MANAGED_BY}"]
    if experiment:
        parts.append(f"{EXPERIMENT_LABEL}={experiment}")
    if trial:
        parts.append(f"{TRIAL_LABEL}={trial}")
    return ",".join(parts)


def pod_label_selector(manifest: Mapping[str, Any]) -> str:
    """The selector of the pods a built manifest creates (TrainJob: its JobSet's pods)."""
    name = str((manifest.get("metadata") or {}).get("name", ""))
    if manifest.get("kind") == "TrainJob":
        return f"jobset.sigs.k8s.io/jobset-name={name}"
    return f"{TRIAL_LABEL}={name}"


# --- collector configuration ----------------------------------------------------------------


def _kind(spec: MetricsCollectorSpec | None) -> str:
    if spec is None or spec.collector is None or not spec.collector.kind:
        return CollectorKind.STDOUT.value
    return str(spec.collector.kind)


def _metric_names(experiment: Experiment) -> list[str]:
    objective = experiment.spec.objective
    if objective is None:
        return []
    names = [objective.objective_metric_name or ""]
    names += list(objective.additional_metric_names or [])
    return [n for n in names if n]


def _source_args(spec: MetricsCollectorSpec | None, kind: str) -> tuple[list[str], str | None]:
    """(collector flags for reading the metrics, the path the trial writes them at)."""
    source = spec.source if spec else None
    fsp = source.file_system_path if source else None
    filters = list(source.filter.metrics_format or []) if source and source.filter else []
    filter_args = [a for regex in filters for a in ("--filter", regex)]
    if kind == CollectorKind.STDOUT:
        return filter_args, None
    if kind == CollectorKind.FILE:
        path = fsp.path if fsp and fsp.path else DEFAULT_FILE_PATH
        fmt = str(fsp.format) if fsp and fsp.format else FileFormat.TEXT.value
        return ["--file-path", path, "--file-format", fmt, *filter_args], path
    if kind == CollectorKind.TENSORFLOW_EVENT:
        path = fsp.path if fsp and fsp.path else DEFAULT_TF_EVENT_DIR
        return ["--tfevent-dir", path], path
    return [], fsp.path if fsp and fsp.path else None


def _rule_args(
    experiment: Experiment, trial: Trial, early_stopping_address: str | None
) -> list[str]:
    rules = trial.spec.early_stopping_rules or []
    if not rules:
        return []
    objective = experiment.spec.objective
    args = ["--objective-type", str(objective.type if objective else "") or "maximize"]
    for rule in rules:
        args += [
            "--stop-rule",
            f"{rule.name};{rule.value};{rule.comparison};{rule.start_step or 1}",
        ]
    if early_stopping_address:
        args += ["--early-stopping-address", early_stopping_address]
    return args


def _env(container: dict[str, Any], name: str, value: str | None = None, **source: Any) -> None:
    env = container.get("env")
    if not isinstance(env, list):
        env = container["env"] = []
    env[:] = [e for e in env if not (isinstance(e, dict) and e.get("name") == name)]
    env.append({"name": name, "value": value} if value is not None else {"name": name, **source})


def _mount(container: dict[str, Any], volume: str, path: str) -> None:
    mounts = container.get("volumeMounts")
    if not isinstance(mounts, list):
        mounts = container["volumeMounts"] = []
    if not any(isinstance(m, dict) and m.get("mountPath") == path for m in mounts):
        mounts.append({"name": volume, "mountPath": path})


def _add_volume(template: PodTemplate, name: str) -> None:
    if not any(isinstance(v, dict) and v.get("name") == name for v in template.volumes):
        template.volumes.append({"name": name, "emptyDir": {}})


def _existing_mount(container: dict[str, Any], directory: str) -> dict[str, Any] | None:
    """The user's own mount at `directory` or above it, if any (reused, not shadowed)."""
    best: dict[str, Any] | None = None
    for mount in container.get("volumeMounts") or []:
        if not isinstance(mount, dict):
            continue
        path = str(mount.get("mountPath", "")).rstrip("/") or "/"
        inside = directory == path or directory.startswith(path.rstrip("/") + "/")
        if inside and (best is None or len(path) > len(str(best.get("mountPath", "")))):
            best = mount
    return best


def _share_directory(
    template: PodTemplate, primary: dict[str, Any], sidecar: dict[str, Any], directory: str
) -> None:
    """Make `directory` of the primary container visible in the sidecar."""
    existing = _existing_mount(primary, directory)
    if existing is not None:
        mount = {"name": existing["name"], "mountPath": existing["mountPath"]}
        if existing.get("subPath"):
            mount["subPath"] = existing["subPath"]
        sidecar.setdefault("volumeMounts", []).append(mount)
        return
    _add_volume(template, METRICS_VOLUME)
    _mount(primary, METRICS_VOLUME, directory)
    _mount(sidecar, METRICS_VOLUME, directory)


def _termination_path(container: dict[str, Any]) -> str:
    return str(container.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH)


def _original_argv(container: dict[str, Any], where: str) -> list[str]:
    argv = [str(a) for a in container.get("command") or []]
    argv += [str(a) for a in container.get("args") or []]
    if not container.get("command"):
        raise InvalidArgumentError(
            f"the primary container in {where} has no command: the collector wraps the "
            "command, and an image's entrypoint cannot be read without a registry; give "
            "`command` in the trial template (or use collector kind Push)"
        )
    return argv


# --- building ----------------------------------------------------------------------------


def _primary_templates(
    templates: list[PodTemplate], wanted: Mapping[str, str] | None, container: str
) -> list[PodTemplate]:
    chosen = [t for t in templates if matches(t, wanted)]
    if not chosen:  # no template's pods will carry the labels: every one with the container
        chosen = [t for t in templates if t.container_named(container) is not None]
    return chosen


def build_trial_manifest(
    experiment: Experiment,
    trial: Trial,
    *,
    db_manager_address: str,
    collector: str = "sidecar",
    collector_image: str = "katib-local:latest",
    token_secret: str | None = None,
    early_stopping_address: str | None = None,
    image_pull_policy: str | None = None,
) -> dict[str, Any]:
    """The resource to create for `trial` (its rendered run spec plus labels and collector).

    InvalidArgumentError says what cannot be built (no primary container, no command to
    wrap, an unsupported collector kind) and where.
    """
    if collector not in COLLECTORS:
        raise InvalidArgumentError(
            f"collector must be one of {', '.join(COLLECTORS)}, got {collector!r}"
        )
    run_spec = trial.spec.run_spec
    if run_spec is None:
        from katib.controller.templating import render_run_spec

        run_spec = render_run_spec(experiment, trial.name, trial.assignments)
    manifest: dict[str, Any] = copy.deepcopy(dict(run_spec))
    labels = trial_labels(trial, experiment.name)
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict):
        metadata = manifest["metadata"] = {}
    metadata["name"] = trial.name
    metadata["namespace"] = experiment.namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    annotations = dict(metadata.get("annotations") or {})
    annotations[OWNER_ANNOTATION] = f"{experiment.namespace}/{experiment.name}/{trial.name}"
    metadata["annotations"] = annotations

    spec = experiment.spec.metrics_collector_spec or trial.spec.metrics_collector
    kind = _kind(spec)
    if kind == CollectorKind.PROMETHEUS:
        raise InvalidArgumentError(
            "metrics collector kind PrometheusMetric is not supported (no collector scrapes "
            "it); use StdOut, File, TensorFlowEvent, Custom or Push"
        )
    primary_name = trial.spec.primary_container_name
    if primary_name is None and experiment.spec.trial_template is not None:
        primary_name = experiment.spec.trial_template.primary_container_name
    wanted = trial.spec.primary_pod_labels
    if wanted is None and experiment.spec.trial_template is not None:
        wanted = experiment.spec.trial_template.primary_pod_labels
    builder = _Builder(
        experiment,
        trial,
        kind=kind,
        spec=spec,
        db_manager_address=db_manager_address,
        collector_image=collector_image,
        token_secret=token_secret,
        early_stopping_address=early_stopping_address,
        image_pull_policy=image_pull_policy,
    )
    if manifest.get("kind") == "TrainJob":
        builder.train_job(manifest, primary_name or "node")
        annotations[COLLECTOR_ANNOTATION] = "wrapper" if builder.collects else "none"
        return _ordered(manifest)

    templates = pod_templates(manifest)
    if not templates:
        raise InvalidArgumentError(
            f"no pod template found in the {manifest.get('kind') or 'trial'} resource: "
            "the collector and the trial labels cannot reach its pods"
        )
    _label_pods(manifest, templates, labels)
    primaries = _primary_templates(templates, wanted, primary_name or "")
    done = 0
    for template in primaries:
        container = (
            template.container_named(primary_name)
            if primary_name
            else (template.containers[0] if template.containers else None)
        )
        if container is None:
            continue
        builder.instrument(template, container, collector)
        done += 1
    if not done:
        where = ", ".join(t.where for t in primaries or templates)
        names = sorted({n for t in primaries or templates for n in t.container_names})
        raise InvalidArgumentError(
            f"primary container {primary_name!r} not found in {where} "
            f"(containers: {', '.join(names) or 'none'})"
        )
    annotations[COLLECTOR_ANNOTATION] = collector if builder.collects else "none"
    return _ordered(manifest)


def _ordered(manifest: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata, spec first, as people write them."""
    head = ("apiVersion", "kind", "metadata", "spec")
    out = {k: manifest[k] for k in head if k in manifest}
    out.update((k, v) for k, v in manifest.items() if k not in out)
    return out


def _label_pods(
    manifest: dict[str, Any], templates: list[PodTemplate], labels: Mapping[str, str]
) -> None:
    kind = manifest.get("kind")
    if kind == "Workflow":  # every pod of the workflow, through spec.podMetadata
        spec = manifest.setdefault("spec", {})
        pod_meta = spec.setdefault("podMetadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
        return
    if kind == "PipelineRun":  # Tekton copies the PipelineRun's labels to its pods
        return
    for template in templates:
        template.labels.update(labels)


class _Builder:
    def __init__(
        self,
        experiment: Experiment,
        trial: Trial,
        *,
        kind: str,
        spec: MetricsCollectorSpec | None,
        db_manager_address: str,
        collector_image: str,
        token_secret: str | None,
        early_stopping_address: str | None,
        image_pull_policy: str | None,
    ) -> None:
        self.experiment = experiment
        self.trial = trial
        self.kind = kind
        self.spec = spec
        self.address = db_manager_address
        self.image = collector_image
        self.token_secret = token_secret
        self.pull = image_pull_policy
        self.source_args, self.metrics_path = _source_args(spec, kind)
        self.rule_args = _rule_args(experiment, trial, early_stopping_address)
        #: Does a collector of ours (or Custom's) read metrics? False for Push/None.
        self.collects = not is_push_collector(kind)

    def _common_env(self, container: dict[str, Any]) -> None:
        _env(container, "KATIB_TRIAL_NAME", self.trial.name)
        _env(container, "KATIB_DB_MANAGER_ADDRESS", self.address)
        if self.token_secret:
            _env(
                container,
                "KATIB_TOKEN",
                valueFrom={"secretKeyRef": {"name": self.token_secret, "key": TOKEN_SECRET_KEY}},
            )

    def _collector_args(self, trial_dir: str) -> list[str]:
        return [
            "--trial-name",
            self.trial.name,
            "--metric-names",
            ",".join(_metric_names(self.experiment)),
            "--trial-dir",
            trial_dir,
            "--db-manager-address",
            self.address,
        ]

    def _wrapper_argv(
        self, argv: Sequence[str], trial_dir: str = f"{CONTROL_DIR}/collector"
    ) -> list[str]:
        source = {
            CollectorKind.STDOUT: "stdout",
            CollectorKind.FILE: "file",
            CollectorKind.TENSORFLOW_EVENT: "tfevent",
        }[CollectorKind(self.kind)]
        return [
            "python",
            "-m",
            "metrics_collector",
            *self._collector_args(trial_dir),
            "--source-kind",
            source,
            *self.source_args,
            *self.rule_args,
            "--echo",
            "--",
            *argv,
        ]

    def instrument(self, template: PodTemplate, container: dict[str, Any], collector: str) -> None:
        self._common_env(container)
        if not self.collects:
            return
        if self.kind == CollectorKind.CUSTOM:
            self._custom(template, container)
            return
        if collector == "wrapper":
            argv = _original_argv(container, template.where)
            _env(container, TERMINATION_ENV, _termination_path(container))
            _add_volume(template, CONTROL_VOLUME)
            _mount(container, CONTROL_VOLUME, CONTROL_DIR)
            self._set_argv(template, container, self._wrapper_argv(argv))
            return
        self._sidecar(template, container)

    @staticmethod
    def _set_argv(template: PodTemplate, container: dict[str, Any], argv: list[str]) -> None:
        """Argo script templates keep `source`: Argo appends its file to the command."""
        del template
        container["command"] = argv[:1]
        container["args"] = argv[1:]

    def _sidecar(self, template: PodTemplate, container: dict[str, Any]) -> None:
        argv = _original_argv(container, template.where)
        kind = self.kind
        sidecar_name = (
            "metrics-logger-and-collector"
            if kind in (CollectorKind.STDOUT, CollectorKind.FILE)
            else "metrics-collector"
        )
        if kind == CollectorKind.STDOUT:
            path, directory = STDOUT_LOG, posixpath.dirname(STDOUT_LOG)
            reading = ["--source-kind", "file", "--file-path", path, "--file-format", "TEXT"]
            reading += self.source_args
            _env(container, "KATIB_METRICS_LOG", path)
        elif kind == CollectorKind.FILE:
            assert self.metrics_path is not None
            directory = posixpath.dirname(self.metrics_path.rstrip("/")) or "/"
            reading = ["--source-kind", "file", *self.source_args]
        else:  # TensorFlowEvent
            assert self.metrics_path is not None
            directory = self.metrics_path.rstrip("/") or "/"
            reading = ["--source-kind", "tfevent", *self.source_args]
        _env(container, "KATIB_CONTROL_DIR", CONTROL_DIR)
        self._set_argv(template, container, ["sh", "-c", PRIMARY_SCRIPT, "katib-trial", *argv])
        sidecar: dict[str, Any] = {
            "name": sidecar_name,
            "image": self.image,
            "command": ["python", "-m", "metrics_collector"],
            "args": [
                "--sidecar",
                "--control-dir",
                CONTROL_DIR,
                *self._collector_args(f"{CONTROL_DIR}/collector"),
                *reading,
                *self.rule_args,
                "--termination-message-path",
                TERMINATION_MESSAGE_PATH,
            ],
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
        }
        if self.pull:
            sidecar["imagePullPolicy"] = self.pull
        self._common_env(sidecar)
        _add_volume(template, CONTROL_VOLUME)
        _mount(container, CONTROL_VOLUME, CONTROL_DIR)
        _mount(sidecar, CONTROL_VOLUME, CONTROL_DIR)
        _share_directory(template, container, sidecar, directory)
        template.sidecars.append(sidecar)

    def _custom(self, template: PodTemplate, container: dict[str, Any]) -> None:
        """Katib's Custom kind: the user's container runs beside the trial as is."""
        custom = self.spec.collector.custom_collector if self.spec and self.spec.collector else None
        if not isinstance(custom, dict):
            raise InvalidArgumentError(
                "metrics collector kind Custom needs metricsCollectorSpec.collector.customCollector"
            )
        sidecar = copy.deepcopy(custom)
        sidecar.setdefault("name", "metrics-collector")
        self._common_env(sidecar)
        if self.metrics_path:
            path = self.metrics_path.rstrip("/") or "/"
            fsp = self.spec.source.file_system_path if self.spec and self.spec.source else None
            is_dir = fsp is not None and str(fsp.kind or "") == "Directory"
            directory = path if is_dir else posixpath.dirname(path) or "/"
            _share_directory(template, container, sidecar, directory)
        if template.pod_spec is not None:
            template.pod_spec["shareProcessNamespace"] = True
        template.sidecars.append(sidecar)

    def train_job(self, manifest: dict[str, Any], primary_name: str) -> None:
        """TrainJob: environment and, for collecting kinds, the wrapper on node 0."""
        spec = manifest.setdefault("spec", {})
        trainer = spec.setdefault("trainer", {})
        labels = manifest["metadata"]["labels"]
        spec["labels"] = {**(spec.get("labels") or {}), **labels}
        self._common_env(trainer)
        if not self.collects:
            return
        if self.kind == CollectorKind.CUSTOM:
            raise InvalidArgumentError(
                "metrics collector kind Custom cannot be used with a TrainJob: its pods come "
                "from the training runtime, which a trial cannot add a container to"
            )
        argv = _original_argv(trainer, "spec.trainer")
        _env(trainer, TERMINATION_ENV, TERMINATION_MESSAGE_PATH)
        wrapped = self._wrapper_argv(["-"], trial_dir="/tmp/katib-trial")[:-1]
        script = (
            'if [ "${JOB_COMPLETION_INDEX:-0}" = 0 ]; then exec '
            + " ".join(_sh_quote(a) for a in wrapped)
            + ' "$@"; else exec "$@"; fi'
        )
        trainer["command"] = ["sh", "-c", script, "katib-trial"]
        trainer["args"] = argv
        del primary_name


def _sh_quote(text: str) -> str:
    if text and all(c.isalnum() or c in "@%+=:,./-_" for c in text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"
