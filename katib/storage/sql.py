"""BaseStorage on SQLAlchemy: SQLite, PostgreSQL and MySQL/MariaDB from one code path.

Every public method runs in exactly one transaction (`_tx`). Driver errors are
translated once, there: unreachable/locked database → UnavailableError (retryable),
anything else → StorageError, unique violations → AlreadyExistsError where the
caller says what was being created.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from katib.api.models import Experiment, ExperimentStatus, Trial
from katib.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    KatibError,
    NotFoundError,
    StorageError,
)
from katib.storage import statements as q
from katib.storage.base import (
    BaseStorage,
    ExperimentLease,
    MetricLogEntry,
    Ownership,
    WriteBatch,
)
from katib.storage.driver import DriverRunner
from katib.storage.engine import (
    create_engine_for,
    redact,
    resolve_url,
    unavailable,
)
from katib.storage.migration import migrate
from katib.storage.tables import (
    NAME_LENGTH,
    experiments,
    observation_logs,
    parse_rfc3339,
)
from katib.storage.tables import trials as trials_table

#: Completed trials kept parsed per storage (about 2 kB each).
_COMPLETED_CACHE_SIZE = 200_000
#: The trial document and status as the database stores them (JSON text, not decoded).
_TRIAL_TEXT_COLUMNS = (
    sa.cast(trials_table.c.document, sa.Text),
    sa.cast(trials_table.c.status, sa.Text),
)

class _NameTaken(Exception):
    """A new trial's INSERT hit the unique name: leave the transaction, then say which."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


_COMPLETED_CONDITIONS = ("Succeeded", "Failed")


def _db_now(conn: Connection) -> datetime:
    """Now, by the database server's clock (aware UTC), so every server judges leases alike.

    SQLite has no server: its clients share the host and so the host's clock.
    """
    name = conn.dialect.name
    if name == "postgresql":
        value = conn.execute(sa.text("SELECT timezone('UTC', clock_timestamp())")).scalar()
    elif name in ("mysql", "mariadb"):
        value = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)")).scalar()
    else:
        return _utcnow()
    if not isinstance(value, datetime):  # pragma: no cover - every driver we ship parses it
        raise StorageError(f"database returned {value!r} for the current time")
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    return value.replace(tzinfo=UTC)


def _check_name(kind: str, name: str) -> None:
    if not name:
        raise InvalidArgumentError(f"{kind} name must not be empty")
    if len(name) > NAME_LENGTH:
        raise InvalidArgumentError(
            f"{kind} name {name[:40]!r}... is {len(name)} characters; at most {NAME_LENGTH}"
        )


def _no_experiment(name: str, namespace: str) -> NotFoundError:
    return NotFoundError(f'experiment "{name}" not found in namespace "{namespace}"')


def _no_trial(name: str, namespace: str) -> NotFoundError:
    return NotFoundError(f'trial "{name}" not found in namespace "{namespace}"')


def _count_conflict(name: str, namespace: str, count: int, expected: int) -> ConflictError:
    return ConflictError(
        f"experiment {namespace}/{name} has {count} trials, "
        f"not the {expected} these new trials were planned on; "
        "another controller created trials concurrently"
    )


def _latest_condition(status: dict[str, Any] | None) -> str | None:
    conditions = (status or {}).get("conditions") or []
    return conditions[-1].get("type") if conditions else None


def _parse_status_time(text: str | None) -> datetime | None:
    """A status time string as a column value; unparseable text is kept only in the document."""
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


class SQLStorage(BaseStorage):
    """Experiments, trials and observation logs in a SQL database, schema migrated on open."""

    def __init__(
        self, url: str | None = None, *, data_dir: Path | None = None, migrate_schema: bool = True
    ) -> None:
        self.url = resolve_url(url, data_dir)
        self.engine = create_engine_for(self.url)
        # Completed trials by row id, with the texts they were parsed from (see list_trials).
        self._completed: dict[int, tuple[str, str, Trial]] = {}
        # Hot statements compiled once for this engine's dialect, run on the driver's cursor.
        self._driver = DriverRunner()
        if migrate_schema:
            try:
                migrate(self.engine)
            except BaseException:
                self.engine.dispose()
                raise

    def __repr__(self) -> str:
        return f"SQLStorage({redact(self.url)!r})"

    def __enter__(self) -> SQLStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections (the storage can still be used; it reconnects)."""
        self.engine.dispose()

    # --- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, *, duplicate: str | None = None) -> Iterator[Connection]:
        """One transaction; driver errors become ours. `duplicate` words a unique violation."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except KatibError:
            raise
        except sa.exc.IntegrityError as exc:
            if duplicate is not None:
                raise AlreadyExistsError(duplicate) from None
            raise StorageError(f"database integrity error: {exc.orig}") from None
        except sa.exc.OperationalError as exc:
            raise unavailable(self.engine.url, exc) from None
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise unavailable(self.engine.url, exc) from None
            raise StorageError(f"database error: {exc.orig}") from None

    @staticmethod
    def _experiment_id(conn: Connection, name: str, namespace: str) -> int:
        exp_id = conn.execute(
            q.SELECT_EXPERIMENT_ID, {"e_name": name, "e_namespace": namespace}
        ).scalar()
        if exp_id is None:
            raise _no_experiment(name, namespace)
        return int(exp_id)

    def _write_experiment(
        self,
        conn: Connection,
        name: str,
        namespace: str,
        *,
        owner: str | None = None,
        expected_count: int | None = None,
        status: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Fence, bump the revision (storing `status`, if given): (id, new revision).

        One conditional UPDATE, the batch's first statement: it locks the experiment's
        row to the end of the transaction before any trial row, so concurrent writers
        of one experiment serialise and each sees exactly its own revision.
        NotFoundError if the experiment is absent; ConflictError when `owner` does not
        hold it or it has not `expected_count` trials. Why it matched nothing is only
        asked when it did.
        """
        params: dict[str, Any] = {"e_name": name, "e_namespace": namespace}
        if owner is not None:
            params["e_owner"] = owner
        if status is not None:
            params.update(
                e_status=status, e_condition=_latest_condition(status), e_updated=_utcnow()
            )
        dialect = conn.dialect
        counted = expected_count is not None and dialect.name == "sqlite"
        if counted:
            params["e_count"] = expected_count
        returning = dialect.update_returning
        stmt = q.fenced_bump(owner is not None, status is not None, counted, returning)
        row: Any
        if returning:
            row = self._driver.run(conn, stmt, params, fetch=True)[1]
        elif self._driver.run(conn, stmt, params)[0] == 1:
            row = self._driver.run(conn, q.SELECT_ID_REVISION, params, fetch=True)[1]
        else:
            row = None
        if row is None:
            raise self._fence_failure(conn, name, namespace, owner, expected_count)
        exp_id = int(row[0])
        if expected_count is not None and not counted:
            # The row is locked: no other writer of this experiment can add trials
            # until we commit, and this statement sees every trial committed before.
            count = self._driver.run(conn, q.COUNT_TRIALS, {"e_id": exp_id}, fetch=True)[1][0]
            if count != expected_count:
                raise _count_conflict(name, namespace, count, expected_count)
        return exp_id, int(row[1])

    @staticmethod
    def _fence_failure(
        conn: Connection, name: str, namespace: str, owner: str | None,
        expected_count: int | None,
    ) -> KatibError:
        """Why `_write_experiment`'s UPDATE matched no row, as the error to raise."""
        row = conn.execute(
            q.SELECT_EXPERIMENT_OWNER, {"e_name": name, "e_namespace": namespace}
        ).first()
        if row is None:
            return _no_experiment(name, namespace)
        if owner is not None and row.owner != owner:
            return ConflictError(
                f"experiment {namespace}/{name} is no longer owned by {owner} "
                f"(owner now: {row.owner or 'nobody'}); its lease was lost"
            )
        if expected_count is not None:
            count = conn.execute(q.COUNT_TRIALS, {"e_id": row.id}).scalar_one()
            if count != expected_count:
                return _count_conflict(name, namespace, count, expected_count)
        # Only on a server, where another transaction can commit between the statements.
        return ConflictError(
            f"experiment {namespace}/{name} changed while it was being written; retry"
        )

    @staticmethod
    def _bump(conn: Connection, exp_id: int) -> int:
        """Bump the experiment's revision; the new revision (the row stays locked)."""
        params = {"e_id": exp_id}
        if conn.dialect.update_returning:
            return int(conn.execute(q.BUMP_REVISION_RETURNING, params).scalar_one())
        conn.execute(q.BUMP_REVISION, params)
        return int(conn.execute(q.SELECT_REVISION_BY_ID, params).scalar_one())

    @staticmethod
    def _experiment_document(experiment: Experiment) -> tuple[dict[str, Any], Any]:
        _check_name("experiment", experiment.name)
        doc = experiment.to_dict()
        status = doc.pop("status", None)
        doc.setdefault("metadata", {})["namespace"] = experiment.namespace
        return doc, status

    @staticmethod
    def _experiment_from_row(row: sa.Row[Any, Any]) -> Experiment:
        doc = dict(row.spec)
        if row.status is not None:
            doc["status"] = row.status
        return Experiment.model_validate(doc)

    @staticmethod
    def _trial_from_row(row: sa.Row[Any, Any] | tuple[str, str | None]) -> Trial:
        """A Trial from the document and status columns, read as JSON text.

        One pass of pydantic's JSON parser over the joined text costs about a third of
        decoding both columns and validating the dicts, which matters because the
        controller lists every trial of an experiment on every pass.
        """
        document, status = row[0], row[1]
        body = document.rstrip()
        if status is not None and body.endswith("}") and '"status"' not in body:
            head = body[:-1].rstrip()
            joiner = "," if not head.endswith("{") else ""
            return Trial.model_validate_json(f'{head}{joiner}"status":{status}}}')
        doc = json.loads(document)
        if status is not None:
            doc["status"] = json.loads(status)
        return Trial.model_validate(doc)

    # --- experiments -----------------------------------------------------------------

    def create_experiment(self, experiment: Experiment) -> None:
        doc, status = self._experiment_document(experiment)
        now = _utcnow()
        name, namespace = experiment.name, experiment.namespace
        message = f'experiment "{name}" already exists in namespace "{namespace}"'
        with self._tx(duplicate=message) as conn:
            conn.execute(
                sa.insert(experiments).values(
                    name=name,
                    namespace=namespace,
                    spec=doc,
                    status=status,
                    condition_type=_latest_condition(status),
                    created_at=now,
                    updated_at=now,
                )
            )

    def get_experiment(self, name: str, namespace: str = "default") -> Experiment:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(experiments.c.spec, experiments.c.status).where(
                    experiments.c.name == name, experiments.c.namespace == namespace
                )
            ).first()
        if row is None:
            raise _no_experiment(name, namespace)
        return self._experiment_from_row(row)

    def list_experiments(self, namespace: str | None = None) -> list[Experiment]:
        query = sa.select(experiments.c.spec, experiments.c.status).order_by(
            experiments.c.created_at, experiments.c.id
        )
        if namespace is not None:
            query = query.where(experiments.c.namespace == namespace)
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [self._experiment_from_row(r) for r in rows]

    def experiment_revision(self, name: str, namespace: str = "default") -> int:
        with self._tx() as conn:
            value = conn.execute(
                q.SELECT_REVISION, {"e_name": name, "e_namespace": namespace}
            ).scalar()
        if value is None:
            raise _no_experiment(name, namespace)
        return int(value)

    def update_experiment_spec(self, experiment: Experiment) -> int:
        doc, _ = self._experiment_document(experiment)
        name, namespace = experiment.name, experiment.namespace
        with self._tx() as conn:
            exp_id, revision = self._write_experiment(conn, name, namespace)
            conn.execute(
                sa.update(experiments)
                .where(experiments.c.id == exp_id)
                .values(spec=doc, updated_at=_utcnow())
            )
        return revision

    def update_experiment_status(
        self, name: str, namespace: str, status: ExperimentStatus, *, owner: str | None = None
    ) -> int:
        return self.write_batch(name, namespace, WriteBatch(status=status), owner=owner)

    def delete_experiment(self, name: str, namespace: str = "default") -> None:
        with self._tx() as conn:
            exp_id = self._experiment_id(conn, name, namespace)
            tc = trials_table.c
            trial_names = sa.select(tc.name).where(tc.experiment_id == exp_id)
            conn.execute(
                sa.delete(observation_logs).where(observation_logs.c.trial_name.in_(trial_names))
            )
            # Trials go by ON DELETE CASCADE.
            conn.execute(sa.delete(experiments).where(experiments.c.id == exp_id))

    # --- ownership ---------------------------------------------------------------------

    def acquire_experiment(
        self, name: str, namespace: str, owner: str, *, steal_from: Sequence[str] = (),
        stale_after_seconds: float = 30.0,
    ) -> bool:
        _check_name("owner", owner)
        c = experiments.c
        with self._tx() as conn:
            now = _db_now(conn)
            stale = now - timedelta(seconds=stale_after_seconds)
            takeable = [
                c.owner.is_(None),
                c.owner == owner,
                c.owner_heartbeat.is_(None),
                c.owner_heartbeat < stale,
            ]
            if steal_from:
                takeable.append(c.owner.in_(list(steal_from)))
            # One conditional UPDATE: concurrent acquirers serialise on the row lock and
            # each re-checks the condition against the committed winner's values.
            result = conn.execute(
                sa.update(experiments)
                .where(c.name == name, c.namespace == namespace, sa.or_(*takeable))
                .values(owner=owner, owner_heartbeat=now)
            )
            if result.rowcount == 1:
                return True
            self._experiment_id(conn, name, namespace)  # NotFoundError if that is why
            return False

    def release_experiment(self, name: str, namespace: str, owner: str) -> None:
        """Release if held by `owner`; a no-op otherwise, also when the experiment is gone."""
        c = experiments.c
        with self._tx() as conn:
            conn.execute(
                sa.update(experiments)
                .where(c.name == name, c.namespace == namespace, c.owner == owner)
                .values(owner=None, owner_heartbeat=None)
            )

    def get_ownership(self, name: str, namespace: str) -> Ownership:
        c = experiments.c
        with self._tx() as conn:
            row = conn.execute(
                sa.select(c.owner, c.owner_heartbeat).where(
                    c.name == name, c.namespace == namespace
                )
            ).first()
        if row is None:
            raise _no_experiment(name, namespace)
        return Ownership(owner=row.owner, heartbeat=row.owner_heartbeat)

    def renew_leases(self, owner: str) -> list[tuple[str, str]]:
        c = experiments.c
        with self._tx() as conn:
            now = _db_now(conn)
            conn.execute(
                sa.update(experiments).where(c.owner == owner).values(owner_heartbeat=now)
            )
            rows = conn.execute(
                sa.select(c.namespace, c.name).where(c.owner == owner).order_by(c.id)
            ).all()
        return [(r.namespace, r.name) for r in rows]

    def list_unfinished_experiments(self) -> list[ExperimentLease]:
        c = experiments.c
        query = (
            sa.select(c.name, c.namespace, c.owner, c.owner_heartbeat)
            .where(
                sa.or_(
                    c.condition_type.is_(None),
                    c.condition_type.not_in(_COMPLETED_CONDITIONS),
                )
            )
            .order_by(c.created_at, c.id)
        )
        with self._tx() as conn:
            now = _db_now(conn)
            rows = conn.execute(query).all()
        return [
            ExperimentLease(
                name=r.name,
                namespace=r.namespace,
                owner=r.owner,
                heartbeat=r.owner_heartbeat,
                age_seconds=(
                    None
                    if r.owner_heartbeat is None
                    else (now - r.owner_heartbeat).total_seconds()
                ),
            )
            for r in rows
        ]

    # --- trials --------------------------------------------------------------------------

    def create_trials(
        self,
        experiment_name: str,
        namespace: str,
        trials: Sequence[Trial],
        *,
        owner: str | None = None,
        expected_count: int | None = None,
    ) -> int:
        if not trials:
            return self.experiment_revision(experiment_name, namespace)
        return self.write_batch(
            experiment_name,
            namespace,
            WriteBatch(new_trials=list(trials)),
            owner=owner,
            expected_count=expected_count,
        )

    def write_batch(
        self,
        experiment_name: str,
        namespace: str,
        batch: WriteBatch,
        *,
        owner: str | None = None,
        expected_count: int | None = None,
    ) -> int:
        names = [t.name for t in batch.new_trials]
        for n in names:
            _check_name("trial", n)
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise AlreadyExistsError(f'trial "{n}" appears twice in the batch')
            seen.add(n)
        for trial_name, entries in batch.observations.items():
            _check_name("trial", trial_name)
            for e in entries:
                _check_name("metric", e.metric_name)
        rows = [self._trial_row(t, namespace) for t in batch.new_trials]
        status_doc = batch.status.to_dict() if batch.status is not None else None
        try:
            with self._tx() as conn:
                exp_id, revision = self._write_experiment(
                    conn,
                    experiment_name,
                    namespace,
                    owner=owner,
                    expected_count=expected_count if rows else None,
                    status=status_doc,
                )
                for trial_name, entries in batch.observations.items():
                    self._insert_observations(conn, trial_name, entries)
                for trial in batch.trial_updates:
                    self._update_trial(conn, trial, exp_id)
                if rows:
                    for r in rows:
                        r["experiment_id"] = exp_id
                    try:
                        self._driver.run_many(conn, q.INSERT_TRIALS, rows, q.TRIAL_COLUMNS)
                    except sa.exc.IntegrityError:
                        raise _NameTaken from None
        except _NameTaken:
            raise self._name_taken(names, namespace) from None
        return revision

    def _name_taken(self, names: list[str], namespace: str) -> AlreadyExistsError:
        """Which of the new trials' names exists, asked only once an INSERT has failed.

        The failed transaction is gone (a server aborts it): this reads in a new one.
        """
        try:
            with self._tx() as conn:
                existing = conn.execute(q.EXISTING_TRIALS, {"t_names": names}).first()
        except KatibError:
            existing = None
        if existing is None:
            listed = ", ".join(f'"{n}"' for n in names)
            return AlreadyExistsError(
                f"one of the trials {listed} already exists (created concurrently)"
            )
        return AlreadyExistsError(
            f'trial "{existing.name}" already exists'
            + ("" if existing.namespace == namespace
               else f' (in namespace "{existing.namespace}"; trial names are global)')
        )

    @staticmethod
    def _trial_row(trial: Trial, namespace: str) -> dict[str, Any]:
        doc = trial.to_dict()
        status = doc.pop("status", None)
        doc.setdefault("metadata", {})["namespace"] = namespace
        return {
            "name": trial.name,
            "namespace": namespace,
            "document": doc,
            "status": status,
            "condition_type": _latest_condition(status),
            "assignments": trial.assignments,
            "created_at": _utcnow(),
            "start_time": _parse_status_time(trial.status.start_time),
            "completion_time": _parse_status_time(trial.status.completion_time),
        }

    def _update_trial(self, conn: Connection, trial: Trial, exp_id: int | None = None) -> None:
        """Store the trial's status (only if it belongs to experiment `exp_id`, if given)."""
        status = trial.status.to_dict()
        params: dict[str, Any] = {
            "t_name": trial.name,
            "t_namespace": trial.namespace,
            "t_status": status,
            "t_condition": _latest_condition(status),
            "t_start": _parse_status_time(trial.status.start_time),
            "t_completion": _parse_status_time(trial.status.completion_time),
        }
        stmt = q.UPDATE_TRIAL_STATUS
        if exp_id is not None:
            stmt, params["e_id"] = q.UPDATE_TRIAL_STATUS_OF, exp_id
        if self._driver.run(conn, stmt, params)[0] != 1:
            raise _no_trial(trial.name, trial.namespace)

    def get_trial(self, name: str, namespace: str = "default") -> Trial:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(*_TRIAL_TEXT_COLUMNS).where(
                    trials_table.c.name == name, trials_table.c.namespace == namespace
                )
            ).first()
        if row is None:
            raise _no_trial(name, namespace)
        return self._trial_from_row(row)

    def list_trials(self, experiment_name: str, namespace: str = "default") -> list[Trial]:
        """The experiment's trials; completed ones are parsed once and then shared.

        Servers list whole histories for the API, the UI and a controller (re)reading
        an experiment, so parsing them all each time made listing cost grow with the
        history. A completed trial is final: its object is kept with
        the texts it came from and returned again while the row still holds the same
        texts (any change in the database is seen). Callers must not modify a completed
        trial they did not store back; the controller never does.
        """
        with self._tx() as conn:
            exp_id = self._experiment_id(conn, experiment_name, namespace)
            rows = conn.execute(
                sa.select(trials_table.c.id, *_TRIAL_TEXT_COLUMNS)
                .where(trials_table.c.experiment_id == exp_id)
                .order_by(trials_table.c.created_at, trials_table.c.id)
            ).all()
        cache = self._completed
        out: list[Trial] = []
        for row_id, document, status in rows:
            cached = cache.get(row_id)
            if cached is not None and cached[0] == document and cached[1] == status:
                out.append(cached[2])
                continue
            trial = self._trial_from_row((document, status))
            if trial.is_completed and status is not None:
                if len(cache) >= _COMPLETED_CACHE_SIZE:
                    cache.clear()  # bounded; losing it only costs a re-parse
                cache[row_id] = (document, status, trial)
            out.append(trial)
        return out

    def update_trial_status(self, trial: Trial) -> int:
        tc = trials_table.c
        with self._tx() as conn:
            exp_id = conn.execute(
                sa.select(tc.experiment_id).where(
                    tc.name == trial.name, tc.namespace == trial.namespace
                )
            ).scalar()
            if exp_id is None:
                raise _no_trial(trial.name, trial.namespace)
            revision = self._bump(conn, int(exp_id))
            self._update_trial(conn, trial)
        return revision

    def list_experiment_documents(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(experiments.c.spec, experiments.c.status).order_by(
            experiments.c.created_at, experiments.c.id
        )
        if namespace is not None:
            query = query.where(experiments.c.namespace == namespace)
        with self._tx() as conn:
            rows = conn.execute(query).all()
        docs = []
        for row in rows:
            doc = dict(row.spec)
            if row.status is not None:
                doc["status"] = row.status
            docs.append(doc)
        return docs

    def count_trials_by_condition(
        self, namespace: str | None = None, *, unfinished_only: bool = False
    ) -> dict[tuple[str, str], dict[str, int]]:
        ec, tc = experiments.c, trials_table.c
        wanted = sa.select(ec.id)
        if namespace is not None:
            wanted = wanted.where(ec.namespace == namespace)
        if unfinished_only:
            wanted = wanted.where(
                sa.or_(
                    ec.condition_type.is_(None),
                    ec.condition_type.not_in(["Succeeded", "Failed"]),
                )
            )
        # An IN over experiment ids lets every backend walk the (experiment_id, ...)
        # index instead of scanning the trials table.
        query = sa.select(tc.experiment_id, tc.condition_type, sa.func.count()).group_by(
            tc.experiment_id, tc.condition_type
        )
        if namespace is not None or unfinished_only:
            query = query.where(tc.experiment_id.in_(wanted.scalar_subquery()))
        with self._tx() as conn:
            rows = conn.execute(query).all()
            ids = sorted({int(r[0]) for r in rows})
            names: dict[int, tuple[str, str]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in conn.execute(
                    sa.select(ec.id, ec.namespace, ec.name).where(ec.id.in_(chunk))
                ):
                    names[int(row.id)] = (row.namespace, row.name)
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for exp_id, condition, count in rows:
            key = names.get(int(exp_id))
            if key is None:
                continue
            per = counts.setdefault(key, {})
            label = condition or "Created"
            per[label] = per.get(label, 0) + int(count)
        return counts

    # --- observation logs -----------------------------------------------------------------

    def report_observation_log(self, trial_name: str, entries: Sequence[MetricLogEntry]) -> None:
        _check_name("trial", trial_name)
        if not entries:
            return
        for e in entries:
            _check_name("metric", e.metric_name)
        with self._tx() as conn:
            self._insert_observations(conn, trial_name, entries)

    def _insert_observations(
        self, conn: Connection, trial_name: str, entries: Sequence[MetricLogEntry]
    ) -> None:
        """Append entries, numbering the steps left as None after the trial's last ones."""
        if not entries:
            return
        ol = observation_logs.c
        need = sorted({e.metric_name for e in entries if e.step is None})
        next_step: dict[str, int] = {}
        if need:
            if conn.dialect.name == "postgresql":
                # Two reporters for one trial would otherwise number the same steps.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": trial_name}
                )
            current = conn.execute(
                sa.select(ol.metric_name, sa.func.max(ol.step))
                .where(ol.trial_name == trial_name, ol.metric_name.in_(need))
                .group_by(ol.metric_name)
            ).all()
            next_step = {m: 1 for m in need}
            next_step.update({m: int(mx) + 1 for m, mx in current if mx is not None})
        rows = []
        for e in entries:
            step = e.step
            if step is None:
                step = next_step[e.metric_name]
                next_step[e.metric_name] = step + 1
            elif e.metric_name in next_step:
                next_step[e.metric_name] = max(next_step[e.metric_name], step + 1)
            rows.append(
                {
                    "trial_name": trial_name,
                    "metric_name": e.metric_name,
                    "value": str(e.value),
                    "time": e.timestamp,
                    "step": step,
                }
            )
        self._driver.run_many(conn, q.INSERT_OBSERVATIONS, rows, q.OBSERVATION_COLUMNS)

    def get_observation_log(
        self,
        trial_name: str,
        metric_name: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[MetricLogEntry]:
        ol = observation_logs.c
        query = sa.select(ol.metric_name, ol.value, ol.time, ol.step).where(
            ol.trial_name == trial_name
        )
        if metric_name:
            query = query.where(ol.metric_name == metric_name)
        if start_time is not None:
            query = query.where(ol.time >= start_time)
        if end_time is not None:
            query = query.where(ol.time <= end_time)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(ol.time, ol.id)).all()
        return [
            MetricLogEntry(metric_name=r.metric_name, value=r.value, timestamp=r.time, step=r.step)
            for r in rows
        ]

    def delete_observation_log(self, trial_name: str) -> None:
        with self._tx() as conn:
            conn.execute(
                sa.delete(observation_logs).where(observation_logs.c.trial_name == trial_name)
            )
