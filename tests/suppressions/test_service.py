"""The suppression service: normalization, idempotent adds, listing, lookups, CSV."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailer.addresses import InvalidAddress
from mailer.db import dialect
from mailer.models.enums import SuppressionReason
from mailer.suppressions import repository
from mailer.suppressions import service as suppressions

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def session(sessionmaker: Maker) -> AsyncSession:
    async with sessionmaker() as s:
        yield s  # type: ignore[misc]


async def test_add_normalizes_and_is_idempotent(session: AsyncSession) -> None:
    added = await suppressions.add(
        session, ["User@EXAMPLE.com", "user@example.com", " user@example.com "], "BOUNCE", {"n": 1}
    )
    assert added == 1
    assert await suppressions.add(session, ["USER@example.COM"], SuppressionReason.MANUAL) == 0
    row = await suppressions.get(session, "user@EXAMPLE.com")
    assert row is not None
    assert (row.email, row.reason, row.source) == ("user@example.com", "BOUNCE", {"n": 1})
    assert row.created_at.tzinfo is not None
    assert await suppressions.add(session, [], "MANUAL") == 0


async def test_idna(session: AsyncSession) -> None:
    await suppressions.add(session, ["Joerg@Bücher.example"], "MANUAL")
    for spelling in ("joerg@bücher.example", "JOERG@xn--bcher-kva.example"):
        row = await suppressions.get(session, spelling)
        assert row is not None, spelling
        assert row.email == "joerg@xn--bcher-kva.example"
    assert await suppressions.suppressed_among(
        session, ["JOERG@BÜCHER.example", "x@example.com"]
    ) == {"JOERG@BÜCHER.example"}


async def test_invalid_input(session: AsyncSession) -> None:
    with pytest.raises(InvalidAddress):
        await suppressions.add(session, ["ok@example.com", "not an address"], "MANUAL")
    assert await suppressions.get(session, "ok@example.com") is None  # nothing written
    with pytest.raises(ValueError, match="NOPE"):
        await suppressions.add(session, ["ok@example.com"], "NOPE")
    assert await suppressions.get(session, "garbage") is None
    assert await suppressions.remove(session, "garbage") is False


async def test_remove(session: AsyncSession) -> None:
    await suppressions.add(session, ["a@example.com"], "MANUAL")
    assert await suppressions.remove(session, "A@Example.com") is True
    assert await suppressions.remove(session, "a@example.com") is False
    assert await suppressions.get(session, "a@example.com") is None


async def test_list_pagination_filter_search(session: AsyncSession) -> None:
    await suppressions.add(session, [f"user{i:02d}@example.com" for i in range(25)], "BOUNCE")
    await suppressions.add(
        session, ["complainer@other.example", "odd_name@example.com"], "COMPLAINT"
    )
    await suppressions.add(session, ["oddXname@example.com"], "MANUAL")
    rows, total = await suppressions.list(session, limit=10, offset=0)
    assert total == 28
    assert len(rows) == 10
    seen = {r.email for r in rows}
    for offset in (10, 20):
        page, page_total = await suppressions.list(session, limit=10, offset=offset)
        assert page_total == 28
        seen |= {r.email for r in page}
    assert len(seen) == 28
    rows, total = await suppressions.list(session, limit=100, offset=0, reason="COMPLAINT")
    assert total == 2
    assert {r.reason for r in rows} == {"COMPLAINT"}
    rows, total = await suppressions.list(session, limit=5, offset=0, search="USER1")
    assert total == 10
    assert all("user1" in r.email for r in rows)
    rows, total = await suppressions.list(session, limit=100, offset=0, search="odd_")
    assert [r.email for r in rows] == ["odd_name@example.com"]  # _ is not a wildcard
    _, total = await suppressions.list(session, limit=1, offset=0, search="%")
    assert total == 0
    _, total = await suppressions.list(
        session, limit=1, offset=0, reason=SuppressionReason.BOUNCE, search="other"
    )
    assert total == 0


async def test_suppressed_among_in_chunks(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialect, "SQLITE_IN_CHUNK", 7)
    monkeypatch.setattr(dialect, "PG_ANY_CHUNK", 7)
    monkeypatch.setattr(repository, "INSERT_CHUNK", 9)
    emails = [f"r{i}@example.com" for i in range(100)]
    assert await suppressions.add(session, emails[::3], "MANUAL") == 34
    asked = [e.upper() for e in emails] + ["invalid", "r0@example.com"]
    found = await suppressions.suppressed_among(session, asked)
    assert found == {e.upper() for e in emails[::3]} | {"r0@example.com"}
    assert await suppressions.suppressed_among(session, []) == set()
    normal = await suppressions.suppressed_among(
        session, [*emails, "R0@example.com"], normalized=True
    )
    assert normal == set(emails[::3])


async def test_csv_roundtrip(sessionmaker: Maker) -> None:
    async with sessionmaker() as session:
        await suppressions.add(session, ["b@example.com"], "COMPLAINT", {"type": "ses", "x": [1]})
        await suppressions.add(session, ["a@example.com"], "BOUNCE")
        await session.commit()
    out = io.StringIO()
    progress: list[int] = []
    async with sessionmaker() as session:
        assert await suppressions.export_csv(session, out, progress=progress.append) == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "email,reason,created_at,source"
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["a@example.com", "BOUNCE"],
        ["b@example.com", "COMPLAINT"],
    ]
    assert progress == [2]
    # Timestamps as everywhere else: UTC with a Z.
    assert all(re.fullmatch(r"\d{4}-.*T.*\d+Z", line.split(",")[2]) for line in lines[1:])
    async with sessionmaker() as session:
        original = await suppressions.get(session, "b@example.com")
        assert await suppressions.remove(session, "b@example.com")
        result = await suppressions.import_csv(session, io.StringIO(out.getvalue()))
        await session.commit()
    assert (result.rows, result.added, result.skipped, result.invalid) == (2, 1, 1, 0)
    async with sessionmaker() as session:
        restored = await suppressions.get(session, "b@example.com")
    assert original is not None
    assert restored is not None
    assert (restored.reason, restored.source, restored.created_at) == (
        original.reason,
        original.source,
        original.created_at,
    )


async def test_csv_import_plain_list(session: AsyncSession) -> None:
    text = "\n".join(
        [
            "New@Example.com",
            "",
            "new@example.com",
            "bad address",
            "unsub@example.com,unsubscribe",
            "weird@example.com,NOT_A_REASON",
        ]
        + [f"bulk{i}@example.com" for i in range(25)]
    )
    progress: list[int] = []
    result = await suppressions.import_csv(
        session, io.StringIO(text), reason="MANUAL", progress=progress.append, batch_size=10
    )
    assert (result.rows, result.added, result.invalid, result.skipped) == (30, 27, 2, 1)
    assert [line for line, _, _ in result.errors] == [4, 6]
    assert progress[-1] == 30
    assert len(progress) >= 3
    unsub = await suppressions.get(session, "unsub@example.com")
    assert unsub is not None
    assert unsub.reason == "UNSUBSCRIBE"
    new = await suppressions.get(session, "new@example.com")
    assert new is not None
    assert new.reason == "MANUAL"
    assert new.source == {"type": "import"}
    assert new.created_at.tzinfo == UTC
    assert new.created_at > datetime(2020, 1, 1, tzinfo=UTC)


async def test_csv_import_header_any_order(session: AsyncSession) -> None:
    text = "reason,Email\nCOMPLAINT,x@example.com\n,y@example.com\n"
    result = await suppressions.import_csv(session, io.StringIO(text))
    assert result.added == 2
    x = await suppressions.get(session, "x@example.com")
    y = await suppressions.get(session, "y@example.com")
    assert x is not None
    assert x.reason == "COMPLAINT"
    assert y is not None
    assert y.reason == "MANUAL"


async def test_export_filtered_by_reason(session: AsyncSession) -> None:
    await suppressions.add(session, [f"b{i}@example.com" for i in range(1500)], "BOUNCE")
    await suppressions.add(session, ["m@example.com"], "MANUAL")
    out = io.StringIO()
    progress: list[int] = []
    written = await suppressions.export_csv(session, out, reason="BOUNCE", progress=progress.append)
    assert written == 1500
    assert progress == [1000, 1500]
    assert "m@example.com" not in out.getvalue()
