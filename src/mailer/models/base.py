"""Declarative base with a naming convention so every constraint has a stable name."""

from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid alias.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as every timestamp mailer shows (orjson and Pydantic write
    response timestamps so): for text it writes itself (messages, CSV)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_Model = TypeVar("_Model", bound=Base)
_COLUMN_ATTRIBUTES: dict[type[Any], frozenset[str]] = {}


def transient(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """A new `cls` object holding `values` (attribute names), as `cls(**values)` makes it
    but with the values put in the instance's dict directly: the constructor sets each
    through its attribute's instrumentation, ~1.5 µs a column (a batch ~30 µs, ~2 % of a
    single-recipient POST's CPU; bench/api, issue 18). The object is the same to the
    session (pending once added, every value inserted) and to attribute sets after it."""
    names = _COLUMN_ATTRIBUTES.get(cls)
    if names is None:
        names = _COLUMN_ATTRIBUTES[cls] = frozenset(a.key for a in cls.__mapper__.column_attrs)
    if not values.keys() <= names:
        unknown = ", ".join(sorted(values.keys() - names))
        raise TypeError(f"{cls.__name__} has no column attribute {unknown}")
    obj: _Model = cls.__mapper__.class_manager.new_instance()
    obj.__dict__.update(values)
    return obj
