"""tune() end to end: real storage, suggestion services, controller and worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

import katib
from katib import errors, search
from katib.api.models import TrialConditionType
from katib.controller.time_budget import WARM_START_LABEL
from katib.sdk.tune import tune
from katib.storage.sql import SQLStorage

_LEAK: list[bytes] = []


def _storage(data_dir: Path) -> SQLStorage:
    return SQLStorage(f"sqlite:///{data_dir / 'katib.db'}")


def printing(params: dict[str, Any]) -> None:
    print("epoch 1 loss=9.5")
    print(f"loss={params['x'] * 2}")


def writing_to_fd(params: dict[str, Any]) -> None:
    """Output that bypasses sys.stdout (as from C code or a child process)."""
    os.write(1, f"loss={params['x'] * 5}\n".encode())


def reporting(params: dict[str, Any]) -> None:
    katib.report_metrics({"loss": params["x"] * 3, "extra": 1})


def returning(params: dict[str, Any]) -> dict[str, float]:
    return {"loss": params["x"] * 4, "accuracy": 0.5}


@pytest.mark.parametrize(
    ("objective", "factor"),
    [(printing, 2), (reporting, 3), (returning, 4), (writing_to_fd, 5)],
)
def test_printed_reported_and_returned_metrics(
    tmp_path: Path, objective: Any, factor: int
) -> None:
    result = tune(
        "metrics",
        objective,
        {"x": search.double(0.0, 1.0)},
        objective_metric_name="loss",
        objective_type="minimize",
        max_trial_count=3,
        data_dir=tmp_path,
        progress=False,
        additional_metric_names=["accuracy"] if objective is returning else (),
    )
    assert result.condition == "Succeeded", result.message
    assert len(result.trials) == 3
    for row in result.trials:
        assert row.condition == "Succeeded", row.message
        assert row.value == pytest.approx(row.params["x"] * factor)
    assert isinstance(result.best_params, dict) and set(result.best_params) == {"x"}
    assert result.best_value == min(r.value for r in result.trials if r.value is not None)
    if objective is returning:
        assert all(r.metrics["accuracy"] == 0.5 for r in result.trials)
    if objective is printing:  # the trial's output is its log
        log = tmp_path / "trials" / "default" / result.trials[0].name / "trial.log"
        assert "epoch 1 loss=9.5" in log.read_text()


def test_closures_constants_and_a_plain_number(tmp_path: Path) -> None:
    offset = 10.0
    seen_types: list[str] = []

    def objective(params: dict[str, Any]) -> float:
        seen_types.append("called in a worker, not here")
        assert isinstance(params["n"], int) and isinstance(params["kind"], str)
        return offset + params["n"] + params["scale"]

    result = tune(
        "closure",
        objective,
        {"n": search.int(1, 5), "kind": search.categorical(["a", "b"]), "scale": 100},
        max_trial_count=4,
        parallel_trial_count=2,
        algorithm_settings={"random_state": 7},
        data_dir=tmp_path,
        progress=False,
    )
    assert seen_types == []  # the calls ran in worker processes
    settings = result.experiment.spec.algorithm
    assert settings is not None and settings.algorithm_settings is not None
    assert [(s.name, s.value) for s in settings.algorithm_settings] == [("random_state", "7")]
    assert [r.condition for r in result.trials] == ["Succeeded"] * 4
    for row in result.trials:
        assert row.value == 110.0 + row.params["n"]
        assert "scale" not in row.params  # a constant, not a tuned parameter


def misbehaving(params: dict[str, Any]) -> float:
    mode = params["mode"]
    if mode == "raise":
        raise ValueError("boom in the objective")
    if mode == "abort":
        print("objective=0.25", flush=True)
        os.abort()
    if mode == "hang":
        time.sleep(120)
    if mode == "leak":
        _LEAK.append(b"x" * (400 * 2**20))
    return 1.0


@pytest.mark.slow
def test_each_failure_fails_its_trial_only(tmp_path: Path) -> None:
    modes = ["ok", "raise", "abort", "hang", "leak", "ok2"]
    result = tune(
        "failures",
        misbehaving,
        {"mode": search.categorical(modes)},
        algorithm_name="grid",
        max_trial_count=len(modes),
        max_failed_trial_count=len(modes),
        parallel_trial_count=2,
        trial_timeout=3,
        memory_limit_mb=300,
        data_dir=tmp_path,
        progress=False,
    )
    by_mode = {row.params["mode"]: row for row in result.trials}
    assert set(by_mode) == set(modes)
    assert by_mode["ok"].condition == by_mode["ok2"].condition == "Succeeded"
    assert by_mode["raise"].condition == "Failed"
    assert "ValueError: boom in the objective" in by_mode["raise"].message
    assert by_mode["abort"].condition == "Failed"
    assert "SIGABRT" in by_mode["abort"].message
    assert by_mode["abort"].metrics == {"objective": 0.25}  # printed before it died
    assert by_mode["hang"].condition == "Failed"
    assert "killed after" in by_mode["hang"].message
    assert by_mode["leak"].condition == "Failed"
    assert "RSS exceeded" in by_mode["leak"].message
    assert result.condition == "Succeeded" and result.reason == "ExperimentMaxTrialsReached"


@pytest.mark.slow
def test_warm_start_reaches_the_algorithm_and_counts_toward_nothing(tmp_path: Path) -> None:
    space = {"letter": search.categorical(["a", "b", "c", "d"])}

    def score(params: dict[str, Any]) -> float:
        return {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}[params["letter"]]

    first = tune(
        "source", score, space, algorithm_name="grid", max_trial_count=2,
        data_dir=tmp_path, progress=False,
    )
    tried = {r.params["letter"] for r in first.trials}
    assert tried == {"a", "b"}
    second = tune(
        "warm", score, space, algorithm_name="grid", max_trial_count=2,
        data_dir=tmp_path, progress=False, warm_start="source",
    )
    # grid skips points in its history: the warm-start points were seen
    assert {r.params["letter"] for r in second.trials} == {"c", "d"}
    assert second.reason == "ExperimentMaxTrialsReached"
    storage = _storage(tmp_path)
    try:
        stored = storage.list_trials("warm", "default")
        warm = [t for t in stored if (t.metadata.labels or {}).get(WARM_START_LABEL) == "true"]
        assert len(stored) == 4 and len(warm) == 2
        assert all(t.condition == TrialConditionType.SUCCEEDED for t in warm)
        experiment = storage.get_experiment("warm", "default")
        assert experiment.status is not None and experiment.status.trials == 2
    finally:
        storage.close()

    third = tune(
        "listed", score, space, algorithm_name="grid", max_trial_count=1,
        data_dir=tmp_path, progress=False,
        warm_start=[({"letter": "a"}, 1.0), ({"letter": "b"}, 2.0), ({"letter": "c"}, 3.0)],
    )
    assert [r.params["letter"] for r in third.trials] == ["d"]
    with pytest.raises(errors.InvalidArgumentError, match=r"warm_start\[0\]: letter='z'"):
        tune(
            "bad-warm", score, space, max_trial_count=1, data_dir=tmp_path, progress=False,
            warm_start=[({"letter": "z"}, 1.0)],
        )


def sleeper(params: dict[str, Any]) -> float:
    time.sleep(params["seconds"])
    return params["seconds"]


@pytest.mark.slow
def test_timeout_wait_lets_running_trials_finish(tmp_path: Path) -> None:
    start = time.monotonic()
    result = tune(
        "budget-wait", sleeper, {"seconds": search.double(0.8, 1.0)},
        max_trial_count=50, timeout=2.5, on_timeout="wait",
        data_dir=tmp_path, progress=False,
    )
    assert result.reason == "ExperimentTimeoutReached", result.message
    assert result.condition == "Succeeded"
    assert "time budget of 2.5 s" in result.message
    assert 1 <= len(result.trials) < 10
    assert all(r.condition == "Succeeded" for r in result.trials)
    assert time.monotonic() - start < 30


def test_timeout_kill_stops_running_trials(tmp_path: Path) -> None:
    start = time.monotonic()
    result = tune(
        "budget-kill", sleeper, {"seconds": search.double(60.0, 61.0)},
        max_trial_count=5, parallel_trial_count=2, timeout=2, on_timeout="kill",
        data_dir=tmp_path, progress=False,
    )
    assert result.reason == "ExperimentTimeoutReached"
    assert result.condition == "Failed"  # no trial succeeded
    assert [r.condition for r in result.trials] == ["Killed", "Killed"]
    assert time.monotonic() - start < 30


def test_results_are_persisted_and_a_finished_experiment_is_returned(tmp_path: Path) -> None:
    result = tune(
        "persisted", returning, {"x": search.double(0.0, 1.0)},
        objective_metric_name="loss", objective_type="minimize", max_trial_count=2,
        data_dir=tmp_path, progress=False,
    )
    storage = _storage(tmp_path)
    try:
        experiment = storage.get_experiment("persisted", "default")
        trials = storage.list_trials("persisted", "default")
        assert [t.name for t in trials] == [r.name for r in result.trials]
        assert experiment.status is not None and experiment.status.current_optimal_trial
        best = experiment.status.current_optimal_trial.best_trial_name
        assert result.best_trial is not None and best == result.best_trial.name
        log = storage.get_observation_log(best, "loss")
        assert float(log[0].value) == result.best_value
    finally:
        storage.close()
    client = katib.KatibClient(data_dir=tmp_path)
    try:
        assert client.is_experiment_succeeded("persisted")
        names = [t.name for t in client.list_trials("persisted")]
        assert names == [r.name for r in result.trials]
        logs = client.get_trial_logs(result.trials[0].name)
        assert isinstance(logs, str)
        # the client's tune() passes through to this one: same stored experiment, same result
        again = client.tune(
            "persisted", returning, {"x": search.double(0.0, 1.0)},
            objective_metric_name="loss", objective_type="minimize", max_trial_count=2,
            progress=False,
        )
    finally:
        client.close()
    assert [r.name for r in again.trials] == [r.name for r in result.trials]
    assert again.best_value == result.best_value


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="objective"):
        tune("bad", 42, {"x": search.double(0, 1)}, max_trial_count=1, data_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError, match="max_trial_count"):
        tune("bad", printing, {"x": search.double(0, 1)}, data_dir=tmp_path)
    with pytest.raises(errors.InvalidArgumentError, match="on_timeout"):
        tune(
            "bad", printing, {"x": search.double(0, 1)}, max_trial_count=1,
            timeout=1, on_timeout="later", data_dir=tmp_path,
        )
    with pytest.raises(errors.InvalidSpecError, match=r"objective_type \(spec\.objective\.type\)"):
        tune(
            "bad", printing, {"x": search.double(0, 1)}, max_trial_count=1,
            objective_type="maximise", data_dir=tmp_path,
        )
    bad_space = {"parameterType": "int", "feasibleSpace": {"min": "5", "max": "1"}}
    with pytest.raises(errors.InvalidSpecError, match=r"parameters\['y'\] \(spec\.parameters"):
        tune(
            "bad", printing, {"x": search.double(0, 1), "y": bad_space}, max_trial_count=1,
            data_dir=tmp_path,
        )
    with pytest.raises(errors.KatibError, match=r"collector\.kind"):
        tune(
            "bad", printing, {"x": search.double(0, 1)}, max_trial_count=1,
            metrics_collector_config={"kind": "File"}, data_dir=tmp_path,
        )


def test_progress_bar_shows_trials_and_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune(
        "progress", returning, {"x": search.double(0.0, 1.0)},
        objective_metric_name="loss", objective_type="minimize", max_trial_count=3,
        data_dir=tmp_path, progress=True,
    )
    shown = capsys.readouterr().err
    assert "progress" in shown and "3/3" in shown
    assert "best loss=" in shown
    tune(
        "quiet", returning, {"x": search.double(0.0, 1.0)},
        objective_metric_name="loss", max_trial_count=1, data_dir=tmp_path, progress=False,
    )
    assert capsys.readouterr().err == ""


def test_the_collector_gets_back_what_tune_froze(tmp_path: Path) -> None:
    import gc

    seen: list[int] = []
    gc.unfreeze()
    before = gc.get_freeze_count()

    def objective(params: dict[str, Any]) -> float:
        return float(params["x"])

    import katib.sdk.tune as tune_module

    real = tune_module.TuneResult

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_freeze_count())  # built inside the call, before unfreeze
        return real(*args, **kwargs)

    tune_module.TuneResult = spy  # type: ignore[assignment,misc]
    try:
        result = tune(
            "frozen", objective, {"x": search.double(0.0, 1.0)}, max_trial_count=2,
            data_dir=tmp_path, progress=False,
        )
    finally:
        tune_module.TuneResult = real  # type: ignore[misc]
    assert len(result.trials) == 2
    assert seen and seen[0] > before  # what was alive stayed out of the scans meanwhile
    assert gc.get_freeze_count() == before  # and is the collector's again


def test_objects_the_caller_froze_stay_frozen(tmp_path: Path) -> None:
    import gc

    gc.freeze()  # as a pre-forking server does before serving
    frozen = gc.get_freeze_count()
    try:
        tune(
            "caller-froze", lambda p: float(p["x"]), {"x": search.double(0.0, 1.0)},
            max_trial_count=1, data_dir=tmp_path, progress=False,
        )
        # Still frozen (objects freed meanwhile leave the count): tune() did not unfreeze.
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
