"""POST /emails: a batch's priority lane, its transactional suppression rule and extra
headers; inline templates; attachments

A single email is stored as a batch (priority "high", its own queue) whose content is an
inline template (never listed); its attachments are rows of their own, read by the worker
once per batch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mailer.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant server defaults: metadata-only changes on PostgreSQL (11+).
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), server_default="bulk", nullable=False)
        )
        batch_op.add_column(
            sa.Column("respect_unsubscribe", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "headers",
                mailer.models.base.JSONType,
                server_default=sa.text("'{}'"),
                nullable=False,
            )
        )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("inline", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "attachments",
        sa.Column("id", mailer.models.base.BigIntId, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index("ix_attachments_batch_id", ["batch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_attachments_batch_id")
    op.drop_table("attachments")
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("inline")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("headers")
        batch_op.drop_column("respect_unsubscribe")
        batch_op.drop_column("priority")
