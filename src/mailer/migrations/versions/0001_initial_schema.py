"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mailer.models.base

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("usage_count", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "metrics",
        sa.Column("bucket", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "kind", name=op.f("pk_metrics")),
    )
    op.create_table(
        "soft_bounces",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_soft_bounces")),
    )
    with op.batch_alter_table("soft_bounces", schema=None) as batch_op:
        batch_op.create_index(
            "ix_soft_bounces_email_created_at", ["email", "created_at"], unique=False
        )

    op.create_table(
        "suppressions",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column(
            "source",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_suppressions")),
    )
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.create_index("ix_suppressions_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_suppressions_reason"), ["reason"], unique=False)

    op.create_table(
        "system_state",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_system_state")),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("current_version_id", sa.String(length=26), nullable=True),
        sa.Column("version_count", sa.Integer(), nullable=False),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_templates_deleted_at"), ["deleted_at"], unique=False)

    op.create_table(
        "webhook_messages",
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("topic_arn", sa.String(length=300), nullable=True),
        sa.Column("received_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_webhook_messages")),
    )
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_messages_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "template_versions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_derived", sa.Boolean(), nullable=False),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
        sa.UniqueConstraint(
            "template_id", "version", name=op.f("uq_template_versions_template_id_version")
        ),
    )
    with op.batch_alter_table("template_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_template_versions_template_id"), ["template_id"], unique=False
        )

    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=False),
        sa.Column("template_version_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("send_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("from_address", sa.String(length=400), nullable=True),
        sa.Column(
            "reply_to",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("unsubscribe", sa.Boolean(), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("total_recipients", sa.Integer(), nullable=False),
        sa.Column("duplicate_count", sa.Integer(), nullable=False),
        sa.Column("suppressed_count", sa.Integer(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("cancelled_count", sa.Integer(), nullable=False),
        sa.Column("delivered_count", sa.Integer(), nullable=False),
        sa.Column("bounced_count", sa.Integer(), nullable=False),
        sa.Column("complained_count", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_batches_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_batches_template_id_templates")
        ),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["template_versions.id"],
            name=op.f("fk_batches_template_version_id_template_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint(
            "api_key_id", "idempotency_key", name=op.f("uq_batches_api_key_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_batches_status_send_at", ["status", "send_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_batches_template_id"), ["template_id"], unique=False)

    op.create_table(
        "dead_letters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=26), nullable=False),
        sa.Column("seq_start", sa.Integer(), nullable=False),
        sa.Column("seq_end", sa.Integer(), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column(
            "recipient_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_dead_letters_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dead_letters_failed_at"), ["failed_at"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=26), nullable=True),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_events_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_batch_id_id", ["batch_id", "id"], unique=False)
        batch_op.create_index("ix_events_batch_id_type", ["batch_id", "type"], unique=False)
        batch_op.create_index("ix_events_created_at", ["created_at"], unique=False)

    op.create_table(
        "recipients",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("claimed_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", mailer.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", mailer.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_recipients_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
        sa.UniqueConstraint("batch_id", "seq", name=op.f("uq_recipients_batch_id_seq")),
    )
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.create_index("ix_recipients_batch_id_status", ["batch_id", "status"], unique=False)
        batch_op.create_index(
            "ix_recipients_provider_message_id", ["provider_message_id"], unique=False
        )
        batch_op.create_index(
            "ix_recipients_status_claimed_at", ["status", "claimed_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_recipients_status_claimed_at")
        batch_op.drop_index("ix_recipients_provider_message_id")
        batch_op.drop_index("ix_recipients_batch_id_status")

    op.drop_table("recipients")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_created_at")
        batch_op.drop_index("ix_events_batch_id_type")
        batch_op.drop_index("ix_events_batch_id_id")

    op.drop_table("events")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_failed_at"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_batch_id"))

    op.drop_table("dead_letters")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_template_id"))
        batch_op.drop_index("ix_batches_status_send_at")
        batch_op.drop_index("ix_batches_created_at")

    op.drop_table("batches")
    with op.batch_alter_table("template_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_template_versions_template_id"))

    op.drop_table("template_versions")
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_messages_received_at"))

    op.drop_table("webhook_messages")
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_templates_deleted_at"))

    op.drop_table("templates")
    op.drop_table("system_state")
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suppressions_reason"))
        batch_op.drop_index("ix_suppressions_created_at")

    op.drop_table("suppressions")
    with op.batch_alter_table("soft_bounces", schema=None) as batch_op:
        batch_op.drop_index("ix_soft_bounces_email_created_at")

    op.drop_table("soft_bounces")
    op.drop_table("metrics")
    op.drop_table("api_keys")
