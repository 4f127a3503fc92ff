"""experiments.revision: a counter every write to an experiment or its trials bumps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

A controller compares it with the revision of its own last write to know, with one
small query, whether the experiment and its trials are still as it left them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(
            sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("revision")
