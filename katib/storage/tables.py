"""SQLAlchemy models for experiments, trials and Katib's observation_logs table.

Documents are stored as JSON (the camelCase Katib form); the columns beside them
exist only for what the controller queries (names, latest condition type, owner, times).
Times are stored as naive UTC with microseconds on every backend (MySQL needs
DATETIME(6) for that) and come back timezone-aware.

Katib's zero time (Go's `time.Time{}`, 0001-01-01T00:00:00Z) cannot be stored in a
MySQL DATETIME, whose range starts at year 1000. So every backend stores any time
before 1000-01-01 as the sentinel ZERO_TIME_SENTINEL (1000-01-01 00:00:00) and
reads the sentinel back as ZERO_TIME. Ordering is unchanged: both sort first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
ZERO_TIME_SENTINEL = datetime(1000, 1, 1)

NAME_LENGTH = 255


def to_db_time(value: datetime) -> datetime:
    """Naive UTC for storage; aware values are converted, naive ones taken as UTC."""
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # e.g. year 1 with a positive offset: before any real time
            return ZERO_TIME_SENTINEL
        value = value.replace(tzinfo=None)
    if value < ZERO_TIME_SENTINEL:
        return ZERO_TIME_SENTINEL
    return value


def from_db_time(value: datetime) -> datetime:
    """Aware UTC from storage; the sentinel becomes Katib's zero time."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if value <= ZERO_TIME_SENTINEL:
        return ZERO_TIME
    return value.replace(tzinfo=UTC)


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse RFC3339/RFC3339Nano ('Z' or an offset) to aware UTC; nanoseconds are truncated.

    ValueError when `text` is not RFC3339. Times that fall before year 1 in UTC (the zero
    time with a positive offset) become ZERO_TIME.
    """
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = (m.group(7) or "")[:6].ljust(6, "0")
    if m.group(8):
        tz = UTC
    else:
        sign = 1 if m.group(9) == "+" else -1
        offset_h, offset_m = int(m.group(10)), int(m.group(11))
        if offset_h > 23 or offset_m > 59:
            raise ValueError(f"bad UTC offset in {text!r}")
        tz = timezone(sign * timedelta(hours=offset_h, minutes=offset_m))
    if second == 60:  # leap second: RFC3339 allows it, datetime does not
        second = 59
    local = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=tz)
    try:
        return local.astimezone(UTC)
    except OverflowError:
        return ZERO_TIME if local.year == 1 else datetime.max.replace(tzinfo=UTC)


def format_rfc3339nano(value: datetime) -> str:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped, no fraction if zero."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    # Not strftime: it does not zero-pad years below 1000 on every platform.
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def datetime_column_type() -> TypeEngine[datetime]:
    """DATETIME with microseconds everywhere (MySQL's default DATETIME drops them)."""
    return (
        sa.DateTime(timezone=False)
        .with_variant(mysql.DATETIME(fsp=6), "mysql")
        .with_variant(mysql.DATETIME(fsp=6), "mariadb")
    )


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, naive UTC in the database."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else to_db_time(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite raw text, should a driver hand it back as-is
            value = datetime.fromisoformat(value)
        return from_db_time(value)


def _id_type() -> TypeEngine[int]:
    """BIGINT on servers; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


MYSQL_TABLE_ARGS: dict[str, str] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    # Binary collation: names compare case-sensitively, as they do on the other backends.
    "mysql_collate": "utf8mb4_bin",
}


class Base(DeclarativeBase):
    """Declarative base for the storage tables."""


class ExperimentRow(Base):
    """One experiment: its document, its status and who runs its controller loop."""

    __tablename__ = "experiments"
    __table_args__ = (
        sa.UniqueConstraint("name", "namespace", name="uq_experiments_name_namespace"),
        sa.Index("ix_experiments_condition_type", "condition_type"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(_id_type(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    namespace: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    status: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    # Not "condition": a reserved word in MySQL, a trap for anyone writing raw SQL.
    condition_type: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    owner: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH), nullable=True)
    owner_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: Bumped by every write to the experiment or its trials (not by leases or logs).
    revision: Mapped[int] = mapped_column(
        sa.BigInteger, nullable=False, default=0, server_default="0"
    )


class TrialRow(Base):
    """One trial: its document (metadata + spec), status and the columns queried on."""

    __tablename__ = "trials"
    __table_args__ = (
        sa.UniqueConstraint("name", name="uq_trials_name"),
        sa.Index("ix_trials_condition_type", "condition_type"),
        sa.Index("ix_trials_experiment_created", "experiment_id", "created_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(_id_type(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    namespace: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    experiment_id: Mapped[int] = mapped_column(
        _id_type(),
        sa.ForeignKey("experiments.id", ondelete="CASCADE", name="fk_trials_experiment_id"),
        nullable=False,
    )
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    status: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    # Not "condition": a reserved word in MySQL, a trap for anyone writing raw SQL.
    condition_type: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    assignments: Mapped[dict[str, str] | None] = mapped_column(sa.JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completion_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ObservationLogRow(Base):
    """Katib's observation_logs row, plus a step and an index for the per-trial queries.

    The (trial_name, metric_name, time) index also serves lookups by trial_name alone.
    """

    __tablename__ = "observation_logs"
    __table_args__ = (
        sa.Index("ix_observation_logs_trial_metric_time", "trial_name", "metric_name", "time"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(_id_type(), primary_key=True, autoincrement=True)
    trial_name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    metric_name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), nullable=False)
    value: Mapped[str] = mapped_column(sa.Text, nullable=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    step: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)


experiments = cast(sa.Table, ExperimentRow.__table__)
trials = cast(sa.Table, TrialRow.__table__)
observation_logs = cast(sa.Table, ObservationLogRow.__table__)
