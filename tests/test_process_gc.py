"""The server processes freeze their startup objects out of the garbage collector's way
(`mailer.process_gc`); apps built by tests and tools do not."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from mailer import app as app_module
from mailer.app import create_app
from mailer.config import Settings
from mailer.process_gc import freeze_startup_objects
from mailer.worker import main as worker_main


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with a normal collector


def test_freeze_moves_existing_objects_out_of_the_collectors_reach() -> None:
    assert gc.get_freeze_count() == 0
    freeze_startup_objects()
    assert gc.get_freeze_count() > 1000


async def test_the_server_app_freezes_at_startup_a_plain_app_does_not(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LifespanManager(create_app(settings)):
        assert gc.get_freeze_count() == 0
    monkeypatch.setattr(app_module, "get_settings", lambda: settings)
    async with LifespanManager(app_module.create_server_app()):
        assert gc.get_freeze_count() > 1000


async def test_the_worker_process_freezes_once_started(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []

    class Worker:
        def start(self) -> None:
            events.append("started")

        async def stop(self) -> None:
            events.append("stopped")

    async def create_worker(*_: Any, **__: Any) -> Worker:
        return Worker()

    def freeze() -> None:
        events.append("frozen")
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler stops it

    monkeypatch.setattr(worker_main, "create_worker", create_worker)
    monkeypatch.setattr(worker_main, "freeze_startup_objects", freeze)
    await asyncio.wait_for(worker_main.run_worker(settings), 30)
    assert events == ["started", "frozen", "stopped"]
    # Its signal handlers went with it: SIGINT interrupts this process as before.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
