"""recipients.claimed_by (the worker holding a SENDING claim); batches.purged_at

A claim is released when its worker's heartbeat stops (WORKER_DEAD_AFTER), not after a long
fixed lease; claims without a worker (made before this revision) keep the lease. Retention
marks the batches whose recipients and events it deleted (purged_at) and finds the next ones
by age through a partial index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UNPURGED = sa.text("purged_at IS NULL AND completed_at IS NOT NULL")


def upgrade() -> None:
    # Nullable, no default: metadata-only changes on PostgreSQL, whatever the tables' size.
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purged_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_batches_unpurged_completed_at",
            ["completed_at"],
            unique=False,
            postgresql_where=UNPURGED,
            sqlite_where=UNPURGED,
        )


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_unpurged_completed_at")
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
