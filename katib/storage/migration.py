"""Schema migrations: alembic run in code (no alembic.ini), safe when processes race.

The first start of several servers (or `katib run`s) on one database migrates once:
SQLite files are guarded by a file lock, PostgreSQL and MySQL/MariaDB by a named
lock on the server. A database already at `HEAD_REVISION` needs neither: one query
says so, and alembic is not even imported (its import and the loading of its
scripts cost about a tenth of a second, which every `tune()` and `katib run` paid).
A database without any of our tables gets the newest schema from the table
definitions directly, stamped with HEAD_REVISION: the schema the migrations build
(tests/unit/test_storage_sql.py compares the two), again without alembic.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from katib.errors import KatibError, StorageError
from katib.storage.engine import redact, sqlite_path, unavailable
from katib.storage.tables import Base

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The newest revision in migrations/versions (tests/unit/test_storage_sql.py checks it
#: against alembic's own head): update it with every new migration.
HEAD_REVISION = "0002"
VERSION_TABLE = "katib_alembic_version"  # not alembic_version: the DB may be shared (Optuna)
_MIGRATION_LOCK_NAME = "katib_migrate"
_MIGRATION_LOCK_TIMEOUT_S = 60
# Serialises migrations of SQLite files within one process (flock covers other processes).
_PROCESS_MIGRATION_LOCK = threading.Lock()


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An alembic Config built in code (no alembic.ini): our script location and connection."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Exclusive lock on `<db>.lock` so two processes don't migrate one SQLite file at once."""
    with _PROCESS_MIGRATION_LOCK:
        if path is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: BEGIN IMMEDIATE still serialises
            yield
            return
        lock_path = path.with_name(path.name + ".lock")
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _server_lock(conn: Connection, acquire: bool) -> None:
    """A named lock on the database server, so concurrent first starts migrate once."""
    name = conn.dialect.name
    if name == "postgresql":
        fn = "pg_advisory_lock" if acquire else "pg_advisory_unlock"
        conn.execute(sa.text(f"SELECT {fn}(hashtext(:n))"), {"n": _MIGRATION_LOCK_NAME})
    elif name in ("mysql", "mariadb"):
        # GET_LOCK is server-wide: name it after the database so other databases don't wait.
        lock = "CONCAT(:n, '_', COALESCE(DATABASE(), ''))"
        if acquire:
            got = conn.execute(
                sa.text(f"SELECT GET_LOCK(LEFT({lock}, 64), :t)"),
                {"n": _MIGRATION_LOCK_NAME, "t": _MIGRATION_LOCK_TIMEOUT_S},
            ).scalar()
            if got != 1:
                raise StorageError("timed out waiting for another process to migrate the database")
        else:
            conn.execute(sa.text(f"SELECT RELEASE_LOCK(LEFT({lock}, 64))"),
                         {"n": _MIGRATION_LOCK_NAME})


def at_head(engine: Engine) -> bool:
    """Is the schema at HEAD_REVISION already? False when unsure (no version table yet,
    or any error: `migrate` then takes the full path, which reports errors)."""
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
    except sa.exc.DBAPIError:
        return False
    return [row[0] for row in versions] == [HEAD_REVISION]


def version_table() -> sa.Table:
    """The version table as alembic defines it (its default, with a primary key)."""
    return sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )


def _create_fresh(conn: Connection) -> bool:
    """Create the newest schema and stamp it, if the database has none of our tables."""
    existing = set(sa.inspect(conn).get_table_names())
    if existing & ({VERSION_TABLE} | set(Base.metadata.tables)):
        return False
    Base.metadata.create_all(conn)
    table = version_table()
    table.create(conn)
    conn.execute(table.insert().values(version_num=HEAD_REVISION))
    return True


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`); safe concurrently."""
    if at_head(engine):
        return
    lock_file = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    try:
        with _file_lock(lock_file), engine.connect() as conn:
            _server_lock(conn, acquire=True)
            try:
                if not conn.in_transaction():
                    conn.begin()
                if not _create_fresh(conn):
                    _upgrade(conn, engine)
                conn.commit()
            finally:
                if conn.in_transaction():
                    conn.rollback()
                _server_lock(conn, acquire=False)
                conn.commit()
    except KatibError:
        raise
    except sa.exc.OperationalError as exc:
        raise unavailable(engine.url, exc) from None
    except sa.exc.DBAPIError as exc:
        raise StorageError(f"migrating database {redact(engine.url)} failed: {exc.orig}") from None


def _upgrade(conn: Connection, engine: Engine) -> None:
    """`alembic upgrade head` on `conn` (the only place alembic is imported to migrate)."""
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(conn), "head")
    except CommandError as exc:  # e.g. a revision from a newer katib we don't know
        raise StorageError(
            f"database {redact(engine.url)} has a schema this version cannot migrate: {exc}"
        ) from None
