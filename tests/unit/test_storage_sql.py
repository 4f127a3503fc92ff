"""SQLStorage details beyond the contract: migrations, concurrency, raw column values."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from katib.api.models import Condition, ExperimentStatus
from katib.errors import AlreadyExistsError, ConflictError, NotFoundError, UnavailableError
from katib.storage.base import MetricLogEntry, WriteBatch
from katib.storage.engine import sqlite_path
from katib.storage.sql import SQLStorage
from katib.storage.tables import ZERO_TIME, ZERO_TIME_SENTINEL
from katib.testing.storage import make_experiment, make_trial


def _versions(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM katib_alembic_version")
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def test_migration_is_idempotent(sqlite_url: str) -> None:
    SQLStorage(sqlite_url).close()
    SQLStorage(sqlite_url).close()
    assert _versions(sqlite_url) == ["0002"]


def test_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from katib.storage.migration import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]


@pytest.mark.parametrize("exists", [True, False])
def test_a_new_or_up_to_date_database_opens_without_alembic(sqlite_url: str,
                                                            exists: bool) -> None:
    """The schema check is one query, and a database without our tables gets the schema
    directly: neither imports alembic (a tenth of a second per tune() or katib run)."""
    if exists:
        SQLStorage(sqlite_url).close()
    code = (
        "import sys; from katib.storage.sql import SQLStorage; s = SQLStorage(sys.argv[1]); "
        "s.list_experiments(); s.close(); print(sorted(m for m in sys.modules "
        "if m == 'alembic' or m.startswith('alembic.')))"
    )
    done = subprocess.run([sys.executable, "-c", code, sqlite_url], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert _versions(sqlite_url) == ["0002"]


def test_concurrent_first_open_in_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            SQLStorage(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert _versions(url) == ["0002"]


def test_concurrent_first_open_in_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    code = (
        "import sys; from katib.storage.sql import SQLStorage; s = SQLStorage(sys.argv[1]); "
        "s.report_observation_log('t', []); s.close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, url]) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert _versions(url) == ["0002"]


def test_two_storages_on_one_sqlite_file_write_concurrently(sqlite_url: str) -> None:
    a, b = SQLStorage(sqlite_url), SQLStorage(sqlite_url)
    try:
        a.create_experiment(make_experiment())
        errors: list[BaseException] = []

        def work(store: SQLStorage, prefix: str) -> None:
            try:
                for i in range(10):
                    store.create_trials("exp", "default", [make_trial(f"{prefix}{i}")])
                    store.report_observation_log(
                        f"{prefix}{i}", [MetricLogEntry("acc", "1", datetime.now(UTC))]
                    )
                    store.acquire_experiment("exp", "default", prefix, stale_after_seconds=0)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s, p)) for s, p in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(a.list_trials("exp")) == 20
    finally:
        a.close()
        b.close()


def test_zero_time_is_stored_as_sentinel(storage: SQLStorage) -> None:
    storage.report_observation_log("t", [MetricLogEntry("acc", "unavailable", ZERO_TIME)])
    with storage.engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT time FROM observation_logs").scalar()
    if isinstance(raw, str):  # SQLite keeps text
        raw = datetime.fromisoformat(raw)
    assert isinstance(raw, datetime)
    assert raw.replace(tzinfo=None) == ZERO_TIME_SENTINEL
    assert storage.get_observation_log("t")[0].timestamp == ZERO_TIME


def test_trial_columns_follow_status(storage: SQLStorage) -> None:
    storage.create_experiment(make_experiment())
    storage.create_trials("exp", "default", [make_trial("t1")])
    trial = storage.get_trial("t1")
    trial.status = trial.status.model_validate(
        {"startTime": "2024-03-04T17:55:08Z", "conditions": [{"type": "Running"}]}
    )
    storage.update_trial_status(trial)
    with storage.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT condition_type, assignments FROM trials WHERE name = 't1'")
        ).one()
    assert row.condition_type == "Running"
    raw = row.assignments
    assert (json.loads(raw) if isinstance(raw, str) else raw) == {"lr": "0.01"}


def test_adopts_a_katib_observation_logs_table(sqlite_url: str) -> None:
    """A database Katib's DBManager created keeps its rows."""
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE observation_logs (trial_name VARCHAR(255) NOT NULL, "
            "id INTEGER PRIMARY KEY AUTOINCREMENT, time DATETIME(6), "
            "metric_name VARCHAR(255) NOT NULL, value TEXT NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO observation_logs (trial_name, time, metric_name, value) "
            "VALUES ('old', '2024-03-04 17:55:08.250000', 'acc', '0.5')"
        )
    engine.dispose()
    with SQLStorage(sqlite_url) as store:
        (old,) = store.get_observation_log("old")
        assert old.value == "0.5" and old.step is None
        assert old.timestamp == datetime(2024, 3, 4, 17, 55, 8, 250000, tzinfo=UTC)
        store.report_observation_log("old", [MetricLogEntry("acc", "0.6", datetime.now(UTC))])
        assert store.get_observation_log("old")[-1].step == 1


@pytest.mark.parametrize("name", ["", "x" * 256])
def test_bad_names_are_invalid_argument(storage: SQLStorage, name: str) -> None:
    from katib.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        storage.report_observation_log(name, [MetricLogEntry("acc", "1", datetime.now(UTC))])
    with pytest.raises(InvalidArgumentError):
        storage.create_experiment(make_experiment(name or ""))


def _schema_diff(engine: sa.Engine) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from katib.storage.tables import Base

    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "katib_alembic_version"}
        )
        return list(compare_metadata(ctx, Base.metadata))


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "postgres_url", "mysql_url"])
def test_migrations_and_a_fresh_schema_match_the_models(
    request: pytest.FixtureRequest, url_fixture: str
) -> None:
    """`alembic upgrade head` from nothing builds what tables.py declares (nothing for
    autogenerate to add), and so does the direct creation SQLStorage uses on a database
    without our tables; both are stamped with the head revision."""
    from alembic import command

    from katib.storage.migration import alembic_config, version_table
    from katib.storage.tables import Base

    url = str(request.getfixturevalue(url_fixture))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert _schema_diff(engine) == []
        assert _versions(url) == ["0002"]
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            version_table().drop(conn)
        with SQLStorage(url):
            pass
        assert _schema_diff(engine) == []
        assert _versions(url) == ["0002"]
    finally:
        engine.dispose()


def test_schema_from_a_newer_version_is_a_clear_error(sqlite_url: str) -> None:
    from katib.errors import StorageError

    SQLStorage(sqlite_url).close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE katib_alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(StorageError, match="9999"):
        SQLStorage(sqlite_url)


def test_upgrade_from_0001_keeps_experiments_and_starts_revisions_at_zero(
    sqlite_url: str,
) -> None:
    from alembic import command

    from katib.storage.migration import alembic_config

    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.exec_driver_sql(
            "INSERT INTO experiments (name, namespace, spec, created_at, updated_at) "
            "VALUES ('old', 'default', '{\"metadata\": {\"name\": \"old\"}, \"spec\": {}}', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    engine.dispose()
    assert _versions(sqlite_url) == ["0001"]
    with SQLStorage(sqlite_url) as storage:
        assert _versions(sqlite_url) == ["0002"]
        assert storage.experiment_revision("old") == 0
        assert storage.get_experiment("old").name == "old"
        storage.create_trials("old", "default", [make_trial("t1")])
        assert storage.experiment_revision("old") == 1


def _finish_batch(storage: SQLStorage, name: str) -> WriteBatch:
    """A batch shaped like the controller's for a finished trial."""
    trial = storage.get_trial(name)
    trial.status.conditions.append(Condition(type="Succeeded", status="True", reason="R"))
    now = datetime.now(UTC)
    return WriteBatch(
        observations={name: [MetricLogEntry("acc", "0.5", now, step=1)]},
        trial_updates=[trial],
        status=ExperimentStatus(conditions=[Condition(type="Running", status="True")]),
    )


def test_write_batch_failures_say_why_and_write_nothing(storage: SQLStorage) -> None:
    """Fencing and duplicate names are found out only once a write fails: same messages."""
    storage.create_experiment(make_experiment())
    storage.create_experiment(make_experiment(namespace="a"))
    storage.create_trials("exp", "a", [make_trial("taken", "a")])
    storage.create_trials("exp", "default", [make_trial("t1")])
    before = storage.experiment_revision("exp")
    finish = _finish_batch(storage, "t1")

    def attempt() -> WriteBatch:
        return WriteBatch(
            observations=finish.observations, trial_updates=finish.trial_updates,
            status=finish.status, new_trials=[make_trial("t2")],
        )

    with pytest.raises(NotFoundError, match='experiment "nope" not found in namespace "default"'):
        storage.write_batch("nope", "default", attempt(), owner="a", expected_count=1)
    with pytest.raises(ConflictError, match=r"no longer owned by a \(owner now: nobody\)"):
        storage.write_batch("exp", "default", attempt(), owner="a", expected_count=1)
    assert storage.acquire_experiment("exp", "default", "b")
    with pytest.raises(ConflictError, match=r"no longer owned by a \(owner now: b\)"):
        storage.write_batch("exp", "default", attempt(), owner="a", expected_count=1)
    with pytest.raises(ConflictError, match="has 1 trials, not the 0 these new trials"):
        storage.write_batch("exp", "default", attempt(), owner="b", expected_count=0)
    taken = attempt()
    taken.new_trials = [make_trial("t2"), make_trial("taken")]
    with pytest.raises(
        AlreadyExistsError,
        match=r'trial "taken" already exists \(in namespace "a"; trial names are global\)',
    ):
        storage.write_batch("exp", "default", taken, owner="b", expected_count=1)
    taken.new_trials = [make_trial("t1")]
    with pytest.raises(AlreadyExistsError, match=r'^trial "t1" already exists$'):
        storage.write_batch("exp", "default", taken, owner="b", expected_count=1)

    assert storage.experiment_revision("exp") == before
    assert storage.get_experiment("exp").status is None
    assert storage.get_trial("t1").condition == "Created"
    assert storage.get_observation_log("t1") == []
    assert [t.name for t in storage.list_trials("exp")] == ["t1"]
    # The failed transactions left nothing locked or half-done behind them.
    assert storage.write_batch("exp", "default", attempt(), owner="b", expected_count=1) == (
        before + 1
    )
    assert [t.name for t in storage.list_trials("exp")] == ["t1", "t2"]
    assert storage.get_trial("t1").condition == "Succeeded"
    assert [e.value for e in storage.get_observation_log("t1")] == ["0.5"]


def test_write_batch_without_fencing_needs_the_experiment(storage: SQLStorage) -> None:
    with pytest.raises(NotFoundError, match='experiment "nope" not found'):
        storage.write_batch("nope", "default", WriteBatch(new_trials=[make_trial("t1")]))
    with pytest.raises(NotFoundError, match='experiment "nope" not found'):
        storage.update_experiment_status("nope", "default", ExperimentStatus())


def test_sqlite_controller_batches_ask_no_questions(sqlite_url: str) -> None:
    """On SQLite, a successful batch only writes: fencing rides on the experiment's UPDATE."""
    with SQLStorage(sqlite_url) as storage:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        assert storage.acquire_experiment("exp", "default", "me")
        finish = _finish_batch(storage, "t1")
        statements: list[str] = []

        @sa.event.listens_for(storage.engine, "before_cursor_execute")
        def record(conn: object, cursor: object, statement: str, *args: object) -> None:
            statements.append(" ".join(statement.split()[:3]))

        storage.write_batch("exp", "default", finish, owner="me")
        storage.write_batch(
            "exp", "default", WriteBatch(new_trials=[make_trial("t2")]), owner="me",
            expected_count=1,
        )
        assert statements == [
            "UPDATE experiments SET",
            "INSERT INTO observation_logs",
            "UPDATE trials SET",
            "UPDATE experiments SET",
            "INSERT INTO trials",
        ]


def test_sqlite_transactions_take_the_write_lock_at_begin(sqlite_url: str) -> None:
    """BEGIN IMMEDIATE: a transaction holds the write lock before its first statement."""
    with SQLStorage(sqlite_url) as storage:
        path = sqlite_path(sqlite_url)
        other = sqlite3.connect(str(path), timeout=0, isolation_level=None)
        try:
            with (
                storage.engine.begin(),
                pytest.raises(sqlite3.OperationalError, match="locked"),
            ):
                other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


def test_sqlite_write_lock_timeout_is_unavailable(sqlite_url: str) -> None:
    """A writer that cannot get the lock in time gets the retryable UnavailableError."""
    with SQLStorage(sqlite_url) as storage:
        storage.create_experiment(make_experiment())
        storage.engine.dispose()

        @sa.event.listens_for(storage.engine, "connect")
        def short_timeout(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 50")

        holder = sqlite3.connect(str(sqlite_path(sqlite_url)), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(UnavailableError, match="locked"):
                storage.write_batch("exp", "default", WriteBatch(new_trials=[make_trial("t")]))
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        storage.write_batch("exp", "default", WriteBatch(new_trials=[make_trial("t")]))
        assert [t.name for t in storage.list_trials("exp")] == ["t"]
