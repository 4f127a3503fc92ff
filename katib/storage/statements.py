"""Statements of the reconcile loop's hot path, built once.

Building a SQLAlchemy statement costs more than SQLite takes to run it, so the
statements SQLStorage runs on every pass are module constants with bind parameters.
"""

from __future__ import annotations

import functools

import sqlalchemy as sa

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
INSERT_TRIALS = sa.insert(trials_table)
INSERT_OBSERVATIONS = sa.insert(observation_logs)


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
