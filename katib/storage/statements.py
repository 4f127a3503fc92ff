"""Statements of the reconcile loop's hot path, built once.

Building a SQLAlchemy statement costs more than SQLite takes to run it, so the
statements SQLStorage runs on every pass are module constants with bind parameters.
Running one through `Connection.execute` still costs about 30 µs of Python per
statement (cache lookup, execution context, parameter processing, result setup), as
much as SQLite takes to run it: `Prepared` compiles such a statement once per dialect
and keeps what the driver needs (its SQL, the parameters' order and bind processors),
so the write path can hand it to the driver's cursor directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from katib.storage.tables import experiments, observation_logs
from katib.storage.tables import trials as trials_table

_EC, _TC = experiments.c, trials_table.c
#: The experiment named by the e_name and e_namespace parameters.
_NAMED = (_EC.name == sa.bindparam("e_name"), _EC.namespace == sa.bindparam("e_namespace"))
SELECT_EXPERIMENT_ID = sa.select(_EC.id).where(*_NAMED)
SELECT_EXPERIMENT_OWNER = sa.select(_EC.id, _EC.owner).where(*_NAMED)
SELECT_REVISION = sa.select(_EC.revision).where(*_NAMED)
BUMP_REVISION = sa.update(experiments).where(_EC.id == sa.bindparam("e_id")).values(
    revision=_EC.revision + 1
)
BUMP_REVISION_RETURNING = BUMP_REVISION.returning(_EC.revision)
SELECT_ID_REVISION = sa.select(_EC.id, _EC.revision).where(*_NAMED)
SELECT_REVISION_BY_ID = sa.select(_EC.revision).where(_EC.id == sa.bindparam("e_id"))
UPDATE_TRIAL_STATUS = (
    sa.update(trials_table)
    .where(_TC.name == sa.bindparam("t_name"), _TC.namespace == sa.bindparam("t_namespace"))
    .values(
        status=sa.bindparam("t_status", type_=sa.JSON),
        condition_type=sa.bindparam("t_condition"),
        start_time=sa.bindparam("t_start"),
        completion_time=sa.bindparam("t_completion"),
    )
)
UPDATE_TRIAL_STATUS_OF = UPDATE_TRIAL_STATUS.where(_TC.experiment_id == sa.bindparam("e_id"))
COUNT_TRIALS = sa.select(sa.func.count()).select_from(trials_table).where(
    _TC.experiment_id == sa.bindparam("e_id")
)
EXISTING_TRIALS = sa.select(_TC.name, _TC.namespace).where(
    _TC.name.in_(sa.bindparam("t_names", expanding=True))
)
# inline(): no implicit RETURNING of the new id (PostgreSQL adds one otherwise); nobody
# reads it, and it would make a single row's INSERT differ from a batch's.
#: What `Prepared` compiles: the statement kinds of the write path.
Statement: TypeAlias = sa.Update | sa.Insert | sa.Select[Any]

INSERT_TRIALS = sa.insert(trials_table).inline()
INSERT_OBSERVATIONS = sa.insert(observation_logs).inline()
#: The columns the write path's INSERTs set (every other column is the database's).
TRIAL_COLUMNS = (
    "name", "namespace", "experiment_id", "document", "status", "condition_type",
    "assignments", "created_at", "start_time", "completion_time",
)
OBSERVATION_COLUMNS = ("trial_name", "metric_name", "value", "time", "step")


@functools.cache
def fenced_bump(owned: bool, with_status: bool, counted: bool, returning: bool) -> sa.Update:
    """UPDATE bumping the revision of the experiment named by e_name/e_namespace.

    It matches no row unless the experiment exists and, if `owned`, e_owner holds it,
    and, if `counted`, it has e_count trials: the fencing checks and the write in one
    statement. `counted` is for SQLite only, where the transaction holds the database's
    write lock: a server re-checks a locked row's WHERE against its snapshot of the
    trials table and would miss trials committed meanwhile.
    """
    stmt = sa.update(experiments).where(*_NAMED).values(revision=_EC.revision + 1)
    if owned:
        stmt = stmt.where(_EC.owner == sa.bindparam("e_owner"))
    if counted:
        count = (
            sa.select(sa.func.count())
            .select_from(trials_table)
            .where(_TC.experiment_id == _EC.id)
            .scalar_subquery()
        )
        stmt = stmt.where(count == sa.bindparam("e_count"))
    if with_status:
        stmt = stmt.values(
            status=sa.bindparam("e_status", type_=sa.JSON),
            condition_type=sa.bindparam("e_condition"),
            updated_at=sa.bindparam("e_updated"),
        )
    if returning:
        stmt = stmt.returning(_EC.id, _EC.revision)
    return stmt


class Prepared:
    """A statement compiled for one dialect, ready for the driver's `cursor.execute`.

    `args` turns the parameters `Connection.execute` would take into the driver's
    (a tuple for positional paramstyles, a dict for named ones), applying the same
    bind processors SQLAlchemy applies (JSON serialisation, UTCDateTime and SQLite's
    datetime text), and filling in the values of literal binds such as `revision + 1`.
    """

    __slots__ = ("_named", "_slots", "sql")

    def __init__(
        self, stmt: Statement, dialect: Dialect, column_keys: Collection[str] = ()
    ) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys))
        if (
            compiled.escaped_bind_names
            or getattr(compiled, "insert_prefetch", None)
            or getattr(compiled, "update_prefetch", None)
        ):
            # Parameter names needing escapes or Python-side column defaults: this
            # class does not do what SQLAlchemy would; keep such statements off it.
            raise ValueError(f"statement cannot be prepared: {compiled.string}")
        by_name: dict[str, tuple[str, Callable[[Any], Any] | None, bool, Any]] = {}
        for bind, name in compiled.bind_names.items():
            if bind.callable is not None or bind.expanding:
                raise ValueError(f"statement cannot be prepared: {compiled.string}")
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            # A bind the caller does not give (e.g. the 1 of revision + 1) is a literal.
            literal = not bind.required
            by_name[name] = (bind.key, processor, literal, bind.effective_value)
        order = compiled.positiontup if compiled.positional else list(by_name)
        if order is None:  # pragma: no cover - positional compilations always have it
            raise ValueError(f"statement cannot be prepared: {compiled.string}")
        self.sql: str = compiled.string
        self._named = not compiled.positional
        self._slots = tuple((name, *by_name[name]) for name in order)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for one execution (KeyError if one is missing)."""
        values = []
        for _name, key, processor, literal, fixed in self._slots:
            value = fixed if literal else params[key]
            values.append(value if processor is None else processor(value))
        if self._named:
            return {slot[0]: v for slot, v in zip(self._slots, values, strict=True)}
        return tuple(values)
