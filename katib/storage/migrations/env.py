"""Alembic environment: runs on the connection katib.storage.sql hands over.

No alembic.ini is needed: the Config is built in code (katib.storage.migration.alembic_config).
When run from the alembic CLI instead, set `sqlalchemy.url` in the Config.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from katib.storage.engine import create_engine_for
from katib.storage.migration import VERSION_TABLE
from katib.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    """Migrate on `connection`; transactional DDL where the backend has it."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        transactional_ddl=connection.dialect.name in ("sqlite", "postgresql"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Use the caller's connection if given, else connect to sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("katib migrations: pass a connection or set sqlalchemy.url")
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("katib migrations run online only")
run_migrations_online()
