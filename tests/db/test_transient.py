"""`models.base.transient`: the object the constructor makes, without attribute events."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import instance_dict

from mailer.db import session_scope
from mailer.models import Batch, SystemState
from mailer.models.base import transient, utcnow


def _values(obj: object) -> dict[str, object]:
    return {k: v for k, v in instance_dict(obj).items() if not k.startswith("_sa_")}


def test_same_values_as_the_constructor() -> None:
    now = utcnow()
    fields = {"id": "b1", "template_id": "t", "template_version_id": "v", "created_at": now}
    made = transient(Batch, dict(fields))
    built = Batch(**fields)
    assert _values(made) == _values(built)
    assert made.template_id == "t" and made.created_at == now


def test_an_unknown_attribute_is_refused() -> None:
    with pytest.raises(TypeError, match="no column attribute templateid"):
        transient(Batch, {"templateid": "t"})


async def test_written_by_the_session_with_later_changes(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with session_scope(sessionmaker) as session:
        row = transient(SystemState, {"key": "k", "value": {"a": 1}, "updated_at": utcnow()})
        session.add(row)
        row.value = {"a": 2}  # an attribute set after it goes through the instrumentation
        await session.flush()
        row.value = {"a": 3}
    async with session_scope(sessionmaker) as session:
        stored = await session.scalar(select(SystemState).where(SystemState.key == "k"))
        assert stored is not None and stored.value == {"a": 3}
