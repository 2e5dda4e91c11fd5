"""recipients: only the indexes ingest must write

The (batch_id, status) index goes (completion checks use the batch's counters, then the
(batch_id, seq) index); the provider message id and claim-expiry indexes become partial, so a
freshly ingested row (no message id, PENDING) enters neither.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE_ID_SET = sa.text("provider_message_id IS NOT NULL")
SENDING = sa.text("status = 'SENDING'")


def upgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_batch_id_status")
        batch_op.drop_index("ix_recipients_status_claimed_at")
        batch_op.drop_index("ix_recipients_provider_message_id")
        batch_op.create_index(
            "ix_recipients_provider_message_id",
            ["provider_message_id"],
            unique=False,
            postgresql_where=MESSAGE_ID_SET,
            sqlite_where=MESSAGE_ID_SET,
        )
        batch_op.create_index(
            "ix_recipients_sending_claimed_at",
            ["claimed_at"],
            unique=False,
            postgresql_where=SENDING,
            sqlite_where=SENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_sending_claimed_at")
        batch_op.drop_index("ix_recipients_provider_message_id")
        batch_op.create_index(
            "ix_recipients_provider_message_id", ["provider_message_id"], unique=False
        )
        batch_op.create_index(
            "ix_recipients_status_claimed_at", ["status", "claimed_at"], unique=False
        )
        batch_op.create_index("ix_recipients_batch_id_status", ["batch_id", "status"], unique=False)
