"""recipients: a partial index of the in-flight rows (SENDING, RETRYING) by batch

GET /batches/:id of an unfinished batch counts its SENDING and RETRYING recipients (the
batch's counters cannot tell them from PENDING); without this index that count walked every
row of the batch through (batch_id, seq): ~100k rows for a 100k batch, on every GET while it
sends. The index holds only rows being sent or waiting for a retry, so ingest (PENDING rows)
never writes it; a claim adds one entry per recipient.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_FLIGHT = sa.text("status IN ('SENDING', 'RETRYING')")


def upgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipients_in_flight_batch_id",
            ["batch_id"],
            unique=False,
            postgresql_where=IN_FLIGHT,
            sqlite_where=IN_FLIGHT,
        )


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_in_flight_batch_id")
