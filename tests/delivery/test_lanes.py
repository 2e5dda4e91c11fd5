"""LaneArbiter: under a send rate, transactional sends take slots first and bulk keeps
BULK_MIN_SHARE of them while both lanes wait. Counted by order of grants, not by time."""

from __future__ import annotations

import asyncio

import pytest

from mailer.delivery.lanes import InFlight, LaneArbiter
from mailer.delivery.send_rate import LocalRateLimiter


async def grant_order(share: float, grants: int, *, high: int = 4, bulk: int = 4) -> list[bool]:
    """Which lane got each of the first `grants` slots while `high` transactional and `bulk`
    bulk senders ask again as soon as they are served."""
    arbiter = LaneArbiter(LocalRateLimiter(2000), share)
    order: list[bool] = []

    async def sender(lane: bool) -> None:
        while len(order) < grants:
            await arbiter.acquire(lane)
            order.append(lane)

    await asyncio.gather(
        *(sender(True) for _ in range(high)), *(sender(False) for _ in range(bulk))
    )
    await arbiter.close()
    return order[:grants]


@pytest.mark.parametrize("share", [0.5, 0.25, 0.75])
async def test_bulk_keeps_its_share_while_both_wait(share: float) -> None:
    order = await grant_order(share, 400, high=16, bulk=16)
    bulk = order.count(False) / len(order)
    # Bulk never below its share; transactional takes the rest (a little less when slots
    # that come together find none of its senders waiting: those go to bulk).
    assert bulk >= share - 0.02, bulk
    assert 1 - bulk >= (1 - share) - 0.05, bulk


async def test_transactional_first_when_bulk_has_no_share() -> None:
    # Enough transactional senders that one always waits (a served one asks again only
    # once it has run; slots that come together would otherwise find none waiting).
    order = await grant_order(0.0, 200, high=32)
    assert all(order), order.count(False)


async def test_each_lane_alone_gets_every_slot() -> None:
    assert await grant_order(0.5, 100, high=0) == [False] * 100
    assert await grant_order(0.5, 100, bulk=0) == [True] * 100


async def test_a_transactional_send_overtakes_waiting_bulk_sends() -> None:
    """Bulk senders hold their places in line; one transactional send asks after them and
    still gets the next slot."""
    limiter = LocalRateLimiter(500)
    arbiter = LaneArbiter(limiter, 0.5)
    order: list[str] = []

    async def send(name: str, high: bool) -> None:
        await arbiter.acquire(high)
        order.append(name)

    bulk = [asyncio.create_task(send(f"b{i}", False)) for i in range(20)]
    await asyncio.sleep(0)  # the bulk sends are waiting
    urgent = asyncio.create_task(send("urgent", True))
    await asyncio.gather(*bulk, urgent)
    assert order.index("urgent") <= 2, order


async def test_no_rate_steps_aside() -> None:
    arbiter = LaneArbiter(LocalRateLimiter(None), 0.5)
    assert await arbiter.acquire(True) == 0.0
    assert await arbiter.acquire(False) == 0.0
    assert arbiter.granted == {True: 0, False: 0}


async def test_bulk_in_flight_is_capped_only_while_transactional_sends_are() -> None:
    gate = InFlight(cap=2)
    for _ in range(3):  # no transactional send in flight: bulk is not capped
        await gate.start(False)
    assert gate.bulk == 3
    await gate.start(True)
    gate.done(False)  # 2 bulk left, at the cap: the next one waits
    held = asyncio.create_task(gate.start(False))
    while gate.waiting == 0:
        await asyncio.sleep(0)
    assert gate.bulk == 2 and not held.done()
    gate.done(False)  # below the cap: it goes
    await held
    assert gate.bulk == 2 and gate.waiting == 0
    held = asyncio.create_task(gate.start(False))
    while gate.waiting == 0:
        await asyncio.sleep(0)
    gate.done(True)  # no transactional send left: bulk is free again
    await held
    assert gate.bulk == 3 and gate.high == 0
