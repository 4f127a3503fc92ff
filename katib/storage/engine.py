"""Where the database is and how we connect to it.

One place turns what a user typed (nothing, a file path, `postgresql://...`,
`mysql://...`) into a SQLAlchemy URL with a driver we ship, and builds an engine
tuned for that backend: SQLite gets WAL, a busy timeout, foreign keys and
`BEGIN IMMEDIATE` (so concurrent writers queue instead of failing mid-transaction);
servers get pre-ping and a connect timeout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

from katib.errors import InvalidArgumentError, UnavailableError

ENV_DATA_DIR = "KATIB_DATA_DIR"
ENV_DB = "KATIB_DB"
SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 10

# Scheme prefixes users write → the driver we install (SQLAlchemy 2.1 maps bare
# `postgresql://` to psycopg 3 already, but `mysql://` would need MySQLdb).
_SCHEME_ALIASES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def default_data_dir() -> Path:
    """The directory for the default SQLite file: $KATIB_DATA_DIR, else ~/.katib."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser() if env else Path.home() / ".katib"


def resolve_url(url: str | None = None, data_dir: Path | None = None) -> str:
    """Turn a user's database setting into a full SQLAlchemy URL.

    None → $KATIB_DB → `sqlite:///<data_dir>/katib.db`. A string without `://` is
    taken as a SQLite file path. Bare `postgresql://`/`mysql://` get our drivers.
    """
    if not url:
        url = os.environ.get(ENV_DB) or None
    if not url:
        base = data_dir if data_dir is not None else default_data_dir()
        return f"sqlite:///{(Path(base).expanduser() / 'katib.db').resolve()}"
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    scheme, rest = url.split("://", 1)
    if scheme.lower() in _SCHEME_ALIASES:
        scheme = _SCHEME_ALIASES[scheme.lower()]
    try:
        make_url(f"{scheme}://{rest}")
    except sa.exc.ArgumentError as exc:
        raise InvalidArgumentError(f"invalid database URL {redact(url)!r}: {exc}") from None
    return f"{scheme}://{rest}"


def redact(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: str | URL) -> bool:
    """Whether the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    parsed = make_url(url)
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        return None
    return Path(db)


def create_engine_for(url: str) -> Engine:
    """An engine for `url` with the per-backend settings described in the module docstring."""
    url = resolve_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        path = sqlite_path(parsed)
        connect_args: dict[str, Any] = {
            "check_same_thread": False,
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        }
        if path is None:
            # One shared connection, or every checkout would see an empty database.
            kwargs["poolclass"] = StaticPool
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InvalidArgumentError(
                    f"database URL {redact(parsed)!r}: cannot create the directory "
                    f"{path.parent}: {exc.strerror or exc}"
                ) from None
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        _install_sqlite_hooks(engine, wal=path is not None)
        return engine
    connect_args = {}
    if backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if backend in ("mysql", "mariadb"):
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    try:
        return sa.create_engine(
            parsed, pool_pre_ping=True, connect_args=connect_args, **kwargs
        )
    except sa.exc.NoSuchModuleError:
        raise InvalidArgumentError(
            f"database URL {redact(parsed)!r}: unknown kind of database {backend!r} "
            "(use sqlite, postgresql or mysql/mariadb)"
        ) from None
    except ModuleNotFoundError as exc:
        raise UnavailableError(
            f"cannot use database {redact(parsed)}: driver not installed ({exc.name}); "
            "install the 'postgres' or 'mysql' extra"
        ) from None


def _install_sqlite_hooks(engine: Engine, *, wal: bool) -> None:
    """Per-connection pragmas, and our own BEGIN IMMEDIATE instead of pysqlite's lazy BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" hook below decides when
        # a transaction starts, which also makes DDL transactional.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    def _begin_immediate(dbapi_conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then
        # writes fails with SQLITE_BUSY (no waiting) if another writer got in between.
        dbapi_conn.execute("BEGIN IMMEDIATE")

    # The dialect's BEGIN (pysqlite's does nothing) rather than a "begin" event: any
    # connection-event listener sends every statement through SQLAlchemy's event
    # dispatch, which cost about a third of a short transaction. A failure here is
    # wrapped like a statement's (sa.exc.OperationalError when the lock times out).
    engine.dialect.do_begin = _begin_immediate  # type: ignore[method-assign,assignment]


def check_connection(engine: Engine) -> None:
    """Connect once; UnavailableError naming the (redacted) URL if the database is unreachable."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        raise unavailable(engine.url, exc) from None


def unavailable(url: URL, exc: BaseException) -> UnavailableError:
    """An UnavailableError for `url` that never shows the password."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    if url.password:
        first = first.replace(str(url.password), "***")
    return UnavailableError(f"cannot reach database {redact(url)}: {first}")
