"""recipients.claimed_by: the worker holding a SENDING claim

A claim is released when its worker's heartbeat stops (WORKER_DEAD_AFTER), not after a long
fixed lease; claims without a worker (made before this revision) keep the lease.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a metadata-only change on PostgreSQL, whatever the table's size.
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
