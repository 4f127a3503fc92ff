"""Shared fixtures: database URLs for SQLite, PostgreSQL and MySQL/MariaDB, and `storage`.

Server databases come from env vars (a skip with the reason when unset):
  KATIB_TEST_POSTGRES_URL  e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test
  KATIB_TEST_MYSQL_URL     e.g. mysql+pymysql://root@127.0.0.1:3306/test
The URL only names a server and an account allowed to CREATE DATABASE. Databases
named `katib_t_<random>` are created there and dropped afterwards, so tests run in
parallel under pytest-xdist without seeing each other's rows:
- `postgres_url` / `mysql_url`: a fresh, empty database per test (for migration tests);
- `storage`: one migrated database per worker process, emptied before each test
  (creating and migrating a database per test would cost ~0.5 s on the servers).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from katib.storage.engine import redact, resolve_url
from katib.storage.sql import SQLStorage

POSTGRES_ENV = "KATIB_TEST_POSTGRES_URL"
MYSQL_ENV = "KATIB_TEST_MYSQL_URL"

STORAGE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


def _admin_engine(env: str, label: str) -> Iterator[Engine]:
    raw = os.environ.get(env)
    if not raw:
        pytest.skip(f"{env} not set: {label} storage tests skipped")
    engine = sa.create_engine(resolve_url(raw), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        pytest.fail(f"{env}={redact(raw)} is set but the server is unreachable: {exc.orig}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[Engine]:
    yield from _admin_engine(POSTGRES_ENV, "PostgreSQL")


@pytest.fixture(scope="session")
def _mysql_admin() -> Iterator[Engine]:
    yield from _admin_engine(MYSQL_ENV, "MySQL/MariaDB")


def _fresh_database(admin: Engine, create: str, drop: str) -> Iterator[str]:
    name = f"katib_t_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(create.format(name=name))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop.format(name=name))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'katib.db'}"


@pytest.fixture
def postgres_url(_postgres_admin: Engine) -> Iterator[str]:
    """A fresh PostgreSQL database for this test."""
    yield from _fresh_database(
        _postgres_admin,
        'CREATE DATABASE "{name}"',
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


@pytest.fixture
def mysql_url(_mysql_admin: Engine) -> Iterator[str]:
    """A fresh MySQL/MariaDB database for this test."""
    yield from _fresh_database(
        _mysql_admin,
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "DROP DATABASE IF EXISTS `{name}`",
    )


@pytest.fixture(scope="session")
def _postgres_worker_storage(_postgres_admin: Engine) -> Iterator[SQLStorage]:
    """One migrated PostgreSQL database (and storage) for this worker process."""
    yield from _worker_storage(
        _postgres_admin,
        'CREATE DATABASE "{name}"',
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


@pytest.fixture(scope="session")
def _mysql_worker_storage(_mysql_admin: Engine) -> Iterator[SQLStorage]:
    """One migrated MySQL/MariaDB database (and storage) for this worker process."""
    yield from _worker_storage(
        _mysql_admin,
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "DROP DATABASE IF EXISTS `{name}`",
    )


def _worker_storage(admin: Engine, create: str, drop: str) -> Iterator[SQLStorage]:
    for url in _fresh_database(admin, create, drop):
        store = SQLStorage(url)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture(params=STORAGE_BACKENDS)
def storage(request: pytest.FixtureRequest) -> Iterator[SQLStorage]:
    """An empty, migrated SQLStorage on each backend in turn."""
    if request.param == "sqlite":
        store = SQLStorage(str(request.getfixturevalue("sqlite_url")))
        try:
            yield store
        finally:
            store.close()
        return
    store = request.getfixturevalue(f"_{request.param}_worker_storage")
    with store.engine.begin() as conn:
        for table in ("observation_logs", "trials", "experiments"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    yield store
    store.close()  # drop pooled connections a test may have left in a bad state
