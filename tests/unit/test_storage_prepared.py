"""The write path's prepared statements do on each backend what Connection.execute does.

SQLStorage runs its hot statements through the driver's cursor (statements.Prepared)
unless an event listener is installed. These tests pin that down: the same SQL and
driver parameters as SQLAlchemy's own execution, the same statements in the same
transaction, and driver errors (a lost connection) handled as SQLAlchemy handles them.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from katib.api.models import Condition, ExperimentStatus
from katib.errors import UnavailableError
from katib.storage import statements as q
from katib.storage.base import MetricLogEntry, WriteBatch
from katib.storage.sql import SQLStorage
from katib.storage.tables import ZERO_TIME
from katib.testing.storage import make_experiment, make_trial

AWARE = datetime(2024, 3, 4, 17, 55, 8, 123456, tzinfo=timezone(timedelta(hours=2)))
STATUS = {"conditions": [{"type": "Running", "message": "naïve ✓"}], "trials": 3}


def _normalised(params: Any) -> Any:
    """Driver parameters comparable across runs (psycopg's Json wrapper has no ==)."""

    def one(value: Any) -> Any:
        return ("json", value.obj) if hasattr(value, "obj") else value

    if isinstance(params, dict):
        return {k: one(v) for k, v in params.items()}
    return tuple(one(v) for v in params)


def _cases(dialect: sa.engine.Dialect, exp_id: int) -> Iterator[tuple[Any, dict[str, Any], tuple]]:
    """(statement, parameters, INSERT columns) for every hot statement the dialect runs."""
    named = {"e_name": "exp", "e_namespace": "default", "e_owner": "me", "e_count": 0,
             "e_status": STATUS, "e_condition": "Running", "e_updated": AWARE}
    for owned, with_status, counted in itertools.product((False, True), repeat=3):
        for returning in {False, dialect.update_returning}:
            yield q.fenced_bump(owned, with_status, counted, returning), named, ()
    yield q.SELECT_ID_REVISION, named, ()
    yield q.COUNT_TRIALS, {"e_id": exp_id}, ()
    trial = {"t_name": "t1", "t_namespace": "default", "t_status": STATUS,
             "t_condition": "Running", "t_start": ZERO_TIME, "t_completion": None}
    yield q.UPDATE_TRIAL_STATUS, trial, ()
    yield q.UPDATE_TRIAL_STATUS_OF, {**trial, "e_id": exp_id}, ()
    row = {"name": "t-new", "namespace": "default", "experiment_id": exp_id,
           "document": {"metadata": {"name": "t-new"}}, "status": None,
           "condition_type": None, "assignments": {"lr": "0.1"}, "created_at": AWARE,
           "start_time": None, "completion_time": datetime(2024, 1, 1, tzinfo=UTC)}
    yield q.INSERT_TRIALS, row, q.TRIAL_COLUMNS
    observation = {"trial_name": "t1", "metric_name": "acc", "value": "0.5",
                   "time": ZERO_TIME, "step": None}
    yield q.INSERT_OBSERVATIONS, observation, q.OBSERVATION_COLUMNS


def test_prepared_statements_send_what_sqlalchemy_sends(storage: SQLStorage) -> None:
    """Same SQL text and the same driver parameters (JSON, times, literals) per backend."""
    storage.create_experiment(make_experiment())
    storage.create_trials("exp", "default", [make_trial("t1")])
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(storage.engine, "before_cursor_execute", record)
    try:
        with storage.engine.connect() as conn:
            exp_id = conn.execute(
                q.SELECT_EXPERIMENT_ID, {"e_name": "exp", "e_namespace": "default"}
            ).scalar_one()
        checked = 0
        dialect = storage.engine.dialect
        for stmt, params, columns in _cases(dialect, exp_id):
            sent.clear()
            with storage.engine.connect() as conn:
                conn.execute(stmt, params)
                conn.rollback()
            prepared = q.Prepared(stmt, dialect, columns)
            assert [(prepared.sql, _normalised(prepared.args(params)))] == [
                (s, _normalised(p)) for s, p in sent
            ], str(stmt)
            checked += 1
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", record)
    assert checked >= 13


def test_prepared_refuses_what_it_cannot_run() -> None:
    """An expanding IN needs SQLAlchemy's rendering per call: not preparable, loudly."""
    with pytest.raises(ValueError, match="cannot be prepared"):
        q.Prepared(q.EXISTING_TRIALS, sa.create_engine("sqlite://").dialect)


def test_sqlite_batches_run_prepared_in_one_immediate_transaction(sqlite_url: str) -> None:
    """What SQLite runs for the controller's two batches: the same statements as before,
    between BEGIN IMMEDIATE and COMMIT, and nothing else."""
    with SQLStorage(sqlite_url) as storage:
        storage.create_experiment(make_experiment())
        storage.create_trials("exp", "default", [make_trial("t1")])
        assert storage.acquire_experiment("exp", "default", "me")
        trial = storage.get_trial("t1")
        trial.status.conditions.append(Condition(type="Succeeded", status="True", reason="R"))
        storage.engine.dispose()
        ran: list[str] = []

        # A pool event, unlike a statement event, leaves the prepared path in use.
        @sa.event.listens_for(storage.engine, "connect")
        def trace(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.set_trace_callback(lambda sql: ran.append(" ".join(sql.split()[:3])))

        finish = WriteBatch(
            observations={"t1": [MetricLogEntry("acc", "0.5", AWARE, step=1)]},
            trial_updates=[trial],
        )
        revision = storage.experiment_revision("exp")
        ran.clear()
        assert storage.write_batch("exp", "default", finish, owner="me") == revision + 1
        assert storage.write_batch(
            "exp", "default", WriteBatch(new_trials=[make_trial("t2")]), owner="me",
            expected_count=1,
        ) == revision + 2
        assert ran == [
            "BEGIN IMMEDIATE",
            "UPDATE experiments SET",
            "INSERT INTO observation_logs",
            "UPDATE trials SET",
            "COMMIT",
            "BEGIN IMMEDIATE",
            "UPDATE experiments SET",
            "INSERT INTO trials",
            "COMMIT",
        ]
        assert storage._driver._prepared, "the batches did not take the prepared path"
        assert storage.get_trial("t1").condition == "Succeeded"
        got = storage.get_observation_log("t1")
        assert [(e.value, e.timestamp, e.step) for e in got] == [("0.5", AWARE, 1)]


def _kill_statement(storage: SQLStorage, dbapi_conn: Any) -> str:
    """SQL that ends this driver connection's server session, run from another one."""
    cursor = dbapi_conn.cursor()
    try:
        if storage.engine.dialect.name == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
            return f"SELECT pg_terminate_backend({int(cursor.fetchone()[0])}, 5000)"
        cursor.execute("SELECT CONNECTION_ID()")
        return f"KILL {int(cursor.fetchone()[0])}"
    finally:
        cursor.close()


@pytest.mark.parametrize(
    "backend",
    [pytest.param("postgres", marks=pytest.mark.postgres),
     pytest.param("mysql", marks=pytest.mark.mysql)],
)
def test_connection_lost_mid_batch_is_unavailable_and_invalidated(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The server drops the connection under a batch's first statement: the batch fails
    as UnavailableError, writes nothing, the pool discards that connection, and the
    next batch succeeds on a new one."""
    url = str(request.getfixturevalue(f"{backend}_url"))
    with SQLStorage(url) as storage:
        storage.create_experiment(make_experiment())
        assert storage.acquire_experiment("exp", "default", "me")
        before = storage.experiment_revision("exp")
        armed = [True]
        invalidated: list[BaseException | None] = []

        @sa.event.listens_for(storage.engine, "checkout")
        def kill(dbapi_conn: Any, _record: object, _proxy: object) -> None:
            if armed and armed.pop():
                statement = _kill_statement(storage, dbapi_conn)
                admin = sa.create_engine(url)
                try:
                    with admin.connect() as other:
                        other.exec_driver_sql(statement)
                finally:
                    admin.dispose()

        @sa.event.listens_for(storage.engine, "invalidate")
        def seen(_dbapi_conn: Any, _record: object, exc: BaseException | None) -> None:
            invalidated.append(exc)

        status = ExperimentStatus(conditions=[Condition(type="Running", status="True")])
        with pytest.raises(UnavailableError, match="cannot reach database"):
            storage.write_batch(
                "exp", "default", WriteBatch(new_trials=[make_trial("t1")], status=status),
                owner="me", expected_count=0,
            )
        assert len(invalidated) == 1 and invalidated[0] is not None
        assert storage.experiment_revision("exp") == before
        assert storage.list_trials("exp") == []
        assert storage.write_batch(
            "exp", "default", WriteBatch(new_trials=[make_trial("t1")], status=status),
            owner="me", expected_count=0,
        ) == before + 1
        assert [t.name for t in storage.list_trials("exp")] == ["t1"]
        assert len(invalidated) == 1
        assert storage._driver._prepared, "the batches did not take the prepared path"
