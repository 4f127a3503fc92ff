"""URL resolution, engine settings and unreachable-database errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from katib.errors import UnavailableError
from katib.storage.engine import create_engine_for, default_data_dir, redact, resolve_url
from katib.storage.sql import SQLStorage


def test_default_url_is_sqlite_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATIB_DB", raising=False)
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'katib.db'}"
    monkeypatch.setenv("KATIB_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    assert resolve_url(None) == f"sqlite:///{(tmp_path / 'd' / 'katib.db').resolve()}"


def test_default_data_dir_is_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATIB_DATA_DIR", raising=False)
    assert default_data_dir() == Path.home() / ".katib"


def test_env_katib_db_wins_over_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATIB_DB", "postgresql://u:p@h/db")
    assert resolve_url(None, tmp_path) == "postgresql+psycopg://u:p@h/db"
    assert resolve_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@h:3306/db", "mysql+pymysql://root@h:3306/db"),
        ("mariadb://root@h/db", "mariadb+pymysql://root@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("mysql+pymysql://root@h/db", "mysql+pymysql://root@h/db"),
        ("sqlite:////tmp/k.db", "sqlite:////tmp/k.db"),
    ],
)
def test_scheme_aliases(given: str, expected: str) -> None:
    assert resolve_url(given) == expected


def test_bare_path_is_sqlite(tmp_path: Path) -> None:
    assert resolve_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path.resolve() / 'x.db'}"


def test_redact_hides_password() -> None:
    assert "s3cret" not in redact("postgresql+psycopg://u:s3cret@h/db")
    assert "u:***@h" in redact("postgresql+psycopg://u:s3cret@h/db")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'a' / 'k.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        engine.dispose()


def test_in_memory_sqlite_works() -> None:
    with SQLStorage("sqlite://") as store:
        store.delete_observation_log("t")
        assert store.get_observation_log("t") == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://katib:s3cret@127.0.0.1:1/katib",
        "mysql://root:s3cret@127.0.0.1:1/katib",
    ],
)
def test_unreachable_database_is_unavailable(url: str) -> None:
    with pytest.raises(UnavailableError) as info:
        SQLStorage(url)
    message = str(info.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message
    assert info.value.retryable


def test_storage_error_after_open_is_unavailable(tmp_path: Path) -> None:
    """A database that goes away later gives UnavailableError, not a driver traceback."""
    store = SQLStorage("postgresql://katib:s3cret@127.0.0.1:1/katib", migrate_schema=False)
    try:
        with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:1"):
            store.get_observation_log("t")
    finally:
        store.close()
    assert isinstance(store.engine, sa.Engine)


def test_unknown_kind_of_database_is_named() -> None:
    from katib.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="unknown kind of database 'nosuchdb'"):
        create_engine_for("nosuchdb://user:secret@host/db")


def test_sqlite_file_under_a_file_is_refused_with_the_path(tmp_path: Path) -> None:
    from katib.errors import InvalidArgumentError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InvalidArgumentError, match=r"cannot create the directory .*file/sub"):
        create_engine_for(f"sqlite:///{blocker}/sub/katib.db")
