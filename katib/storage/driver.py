"""Hot statements run on the driver's cursor, compiled once per dialect.

SQLAlchemy's execution path (compile-cache lookup, parameter processing, result
objects) costs more than SQLite itself for the few small statements a reconcile
pass writes per trial. `DriverRunner` executes those prebuilt statements with the
SQL text and bind processing that `statements.Prepared` took from SQLAlchemy's own
compiler, and turns driver errors into the exceptions SQLAlchemy would raise, so
the storage's error handling is the same on both paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from katib.storage import statements as q


def _plain(conn: Connection) -> bool:
    """Whether no event listener watches `conn`: then a statement may skip SQLAlchemy.

    Listeners (tests recording statements, instrumentation) see every statement
    because, with one installed, statements go through `Connection.execute` as before;
    so do statements on a connection with execution options, which `Prepared` ignores.
    """
    return not (
        getattr(conn, "_has_events", True)
        or getattr(conn.engine, "_has_events", True)
        or getattr(conn.dialect, "_has_events", True)
        or conn.get_execution_options()  # e.g. a schema_translate_map
    )


def _driver_error(
    conn: Connection, exc: Exception, sql: str, args: Any, cursor: Any
) -> sa.exc.StatementError:
    """A driver's error as SQLAlchemy would raise it from `Connection.execute`.

    The same exception class (IntegrityError, OperationalError, ...) around the same
    driver error, and a connection the driver says is gone is invalidated, so `_tx`
    translates it exactly as before and the pool does not hand the connection out again.
    """
    dialect = conn.dialect
    invalidated = False
    with contextlib.suppress(Exception):
        invalidated = bool(
            dialect.is_disconnect(cast(Any, exc), conn.connection.dbapi_connection, cursor)
        )
    if invalidated:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        sql, args, exc, dialect.loaded_dbapi.Error,
        connection_invalidated=invalidated, dialect=dialect,
    )


@contextlib.contextmanager
def _cursor(conn: Connection, sql: str, args: Any) -> Iterator[Any]:
    """The driver's cursor for one statement; its errors raised as SQLAlchemy's."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(conn, exc, sql, args, cursor) from exc
    finally:
        with contextlib.suppress(Exception):
            cursor.close()


class DriverRunner:
    """Runs prebuilt statements of one storage (it caches their compiled forms)."""

    def __init__(self) -> None:
        self._prepared: dict[tuple[Any, tuple[str, ...]], q.Prepared] = {}

    def run(
        self,
        conn: Connection,
        stmt: q.Statement,
        params: Mapping[str, Any],
        *,
        fetch: bool = False,
        columns: tuple[str, ...] = (),
    ) -> tuple[int, Any]:
        """Execute a prebuilt statement: (rows matched, first row returned if `fetch`).

        Straight through the driver's cursor with the statement compiled once (see
        statements.Prepared) unless an event listener is installed. `columns`: the
        columns an INSERT sets (the keys of `params`).
        """
        if not _plain(conn):
            result = conn.execute(stmt, params)
            return (0, result.first()) if fetch else (result.rowcount, None)
        prepared = self._prepare(conn, stmt, columns)
        args = prepared.args(params)
        with _cursor(conn, prepared.sql, args) as cursor:
            cursor.execute(prepared.sql, args)
            row = cursor.fetchone() if fetch else None
            return cursor.rowcount, row

    def run_many(
        self,
        conn: Connection,
        stmt: q.Statement,
        rows: Sequence[Mapping[str, Any]],
        columns: tuple[str, ...],
    ) -> None:
        """Execute a prebuilt INSERT for every row (`columns`: the keys of each row)."""
        if len(rows) == 1:
            self.run(conn, stmt, rows[0], columns=columns)
            return
        if not _plain(conn):
            conn.execute(stmt, list(rows))
            return
        prepared = self._prepare(conn, stmt, columns)
        args: list[Any] = [prepared.args(r) for r in rows]
        with _cursor(conn, prepared.sql, args) as cursor:
            cursor.executemany(prepared.sql, args)

    def _prepare(
        self, conn: Connection, stmt: q.Statement, columns: tuple[str, ...]
    ) -> q.Prepared:
        key = (stmt, columns)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = q.Prepared(stmt, conn.dialect, columns)
        return prepared
