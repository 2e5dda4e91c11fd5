"""Fixtures of the outbound webhook tests: a real receiver and settings for fast retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mailer.config import Settings
from tests.fixtures.webhook_receiver import Receiver

FAST_RETRIES = ",".join(["0.1"] * 12)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def hook_settings(settings_factory: Any) -> Settings:
    """Private addresses allowed (the receiver is on 127.0.0.1), retries 0.1 s apart."""
    s: Settings = settings_factory(
        webhook_allow_private=True,
        webhook_retry_delays=FAST_RETRIES,
        webhook_poll_interval=0.05,
    )
    return s
