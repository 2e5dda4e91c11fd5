"""GET /emails: a partial index of recipients in the rare statuses, a GIN index of batch tags

`?status=` with a rare status (FAILED, BOUNCED, COMPLAINED, SUPPRESSED, CANCELLED,
RETRYING) walked the primary key newest first until it found a page: most of the table at
10M rows. The partial index on (status, id) holds only rows in those statuses, so a send
(PENDING -> SENDING -> SENT -> DELIVERED) never writes it. `?tag=` finds the batches with
the tag first, by `tags @> '{"name": "value"}'` (PostgreSQL only: SQLite has no index for a
JSON key chosen at query time).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RARE = sa.text(
    "status IN ('FAILED', 'BOUNCED', 'COMPLAINED', 'SUPPRESSED', 'CANCELLED', 'RETRYING')"
)


def upgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recipients_rare_status_id",
            ["status", "id"],
            unique=False,
            postgresql_where=RARE,
            sqlite_where=RARE,
        )
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_batches_tags",
            "batches",
            ["tags"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_batches_tags", table_name="batches", postgresql_using="gin")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_rare_status_id")
