"""Initial schema: experiments, trials, observation_logs.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Types are spelled out here (not imported from tables.py) so this revision keeps
creating the same schema when the models evolve.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _dt() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return (
        sa.DateTime(timezone=False)
        .with_variant(mysql.DATETIME(fsp=6), "mysql")
        .with_variant(mysql.DATETIME(fsp=6), "mariadb")
    )


def _id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.Column("condition_type", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("owner_heartbeat", _dt(), nullable=True),
        sa.Column("created_at", _dt(), nullable=False),
        sa.Column("updated_at", _dt(), nullable=False),
        sa.UniqueConstraint("name", "namespace", name="uq_experiments_name_namespace"),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_experiments_condition_type", "experiments", ["condition_type"])

    op.create_table(
        "trials",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column(
            "experiment_id",
            _id(),
            sa.ForeignKey("experiments.id", ondelete="CASCADE", name="fk_trials_experiment_id"),
            nullable=False,
        ),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.Column("condition_type", sa.String(64), nullable=True),
        sa.Column("assignments", sa.JSON(), nullable=True),
        sa.Column("created_at", _dt(), nullable=False),
        sa.Column("start_time", _dt(), nullable=True),
        sa.Column("completion_time", _dt(), nullable=True),
        sa.UniqueConstraint("name", name="uq_trials_name"),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_trials_condition_type", "trials", ["condition_type"])
    op.create_index("ix_trials_experiment_created", "trials", ["experiment_id", "created_at"])

    if sa.inspect(op.get_bind()).has_table("observation_logs"):
        _adopt_katib_observation_logs()
        return
    op.create_table(
        "observation_logs",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("trial_name", sa.String(255), nullable=False),
        sa.Column("metric_name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("time", _dt(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index(
        "ix_observation_logs_trial_metric_time",
        "observation_logs",
        ["trial_name", "metric_name", "time"],
    )


def _adopt_katib_observation_logs() -> None:
    """A database Katib's own DBManager created: keep its rows, add what we need.

    Katib already uses DATETIME(6)/TIMESTAMP(6) for `time`, so only the step and index are new.
    """
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("observation_logs")}
    if "step" not in columns:
        op.add_column("observation_logs", sa.Column("step", sa.Integer(), nullable=True))
    indexes = {i["name"] for i in inspector.get_indexes("observation_logs")}
    if "ix_observation_logs_trial_metric_time" not in indexes:
        op.create_index(
            "ix_observation_logs_trial_metric_time",
            "observation_logs",
            ["trial_name", "metric_name", "time"],
        )


def downgrade() -> None:
    op.drop_table("observation_logs")
    op.drop_table("trials")
    op.drop_table("experiments")
