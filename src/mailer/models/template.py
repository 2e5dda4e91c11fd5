from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from mailer.ids import new_id
from mailer.models.base import Base, JSONType, UTCDateTime, utcnow


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    # No foreign key: templates and versions reference each other; the service keeps it right.
    current_version_id: Mapped[str | None] = mapped_column(String(26), nullable=True)
    version_count: Mapped[int] = mapped_column(Integer(), default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # The content of one POST /emails: never listed nor usable by id (it is created with
    # deleted_at set, so every "live" query skips it); its batch renders it as any other.
    inline: Mapped[bool] = mapped_column(default=False, server_default=false())


class TemplateVersion(Base):
    """Immutable: a batch keeps the exact version it was created with."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    template_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("templates.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer())
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text())
    html: Mapped[str | None] = mapped_column(Text(), nullable=True)
    text: Mapped[str | None] = mapped_column(Text(), nullable=True)
    text_derived: Mapped[bool] = mapped_column(default=False)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
