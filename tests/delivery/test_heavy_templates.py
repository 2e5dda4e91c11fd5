"""A large template (about 2,000 tags, the text part derived per message from ~240 KB of
rendered html) sent through the embedded app: its compile and its text derivation run off
the event loop, so the API keeps answering while they run.

The proof is what was observed, not a timing: the heavy steps are instrumented, and /health
answers are counted while one of them is in progress. Work that held the event loop could
never be seen in progress by an answer (the test's client runs on the same loop)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.delivery import compose as compose_module
from mailer.delivery.contexts import BatchContexts
from mailer.models import Batch, TemplateVersion
from mailer.templates.rendering import CompiledTemplate, clear_compiled_cache, get_compiled
from mailer.templates.rendering.text import _PlainText
from tests.fixtures.client import api_client, auth
from tests.fixtures.pipeline import create_template, post_batch, wait_batch

RECIPIENTS = 8
# The image's src swallows {{/if}}, so the text derived from this html at save does not parse
# as a template: the text part is derived from each rendered message instead.
HEAVY_HTML = (
    '{{#if vip}}<img alt="" src="https://x.test/{{/if}}">'
    "<p>{{{body}}}</p><p>" + "{{a}} " * 1_990 + "</p>"
)


class Busy:
    """Which instrumented steps are running right now (in any thread), and how often each
    was seen running by an answer of the API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.seen_during: Counter[str] = Counter()

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.running[step] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.running[step] -= 1
                    self.finished[step] += 1

        return run

    def answered(self) -> None:
        with self._lock:
            self.seen_during.update(step for step, n in self.running.items() if n > 0)


@pytest.fixture
def busy() -> Iterator[Busy]:
    clear_compiled_cache()
    yield Busy()
    clear_compiled_cache()


def instrument(busy: Busy, monkeypatch: pytest.MonkeyPatch) -> None:
    compile_ = CompiledTemplate.compile.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        CompiledTemplate,
        "compile",
        classmethod(busy.wrap("compile", lambda cls, **kw: compile_(cls, **kw))),
    )
    monkeypatch.setattr(_PlainText, "handle", busy.wrap("derive text", _PlainText.handle))


async def test_health_answers_while_a_large_template_compiles_and_renders(
    settings_factory: Any, tmp_path: Path, busy: Busy, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "box"
    settings = settings_factory(outbox_dir=outbox, worker_concurrency=RECIPIENTS)
    async with api_client(settings, embedded_worker=True) as c:
        key = await c.make_key()
        template_id = await create_template(
            c.http,
            key,
            name="Large",
            subject="Digest {{a}}",
            html=HEAVY_HTML,
            text=None,
            variables={},
        )
        template = (await c.http.get(f"/api/v1/templates/{template_id}", headers=auth(key))).json()
        assert template["text"] is None  # derived per message

        instrument(busy, monkeypatch)  # from here on: the worker's compile and derivations
        body = "<b>word</b> " * 20_000  # ~240 KB of html per message, under the bound
        recipients = [
            {"email": f"r{i}@example.com", "variables": {"vip": True, "body": body, "a": "x"}}
            for i in range(RECIPIENTS)
        ]
        stop = asyncio.Event()
        answers: list[int] = []

        async def poll_health() -> None:
            # A poll every 5 ms, not back to back: a loop that never pauses gives up the
            # GIL at each of its calls into the driver's threads and waits to get it back
            # behind the eight rendering threads (the convoy effect). Polling without pause
            # made the batch take 13 s to over 4 minutes from one run to the next; this
            # way it takes ~14 s every time, with dozens of answers during each heavy step.
            while not stop.is_set():
                response = await c.http.get("/api/v1/health")
                answers.append(response.status_code)
                busy.answered()
                await asyncio.sleep(0.005)

        poller = asyncio.create_task(poll_health())
        try:
            response = await post_batch(c.http, key, template_id, recipients)
            assert response.status_code == 201, response.text
            batch = await wait_batch(c.http, key, response.json()["id"], timeout=300)
        finally:
            stop.set()
            await poller

    assert batch["counts"]["SENT"] == RECIPIENTS
    assert len(list(outbox.glob("*.eml"))) == RECIPIENTS
    assert busy.finished["compile"] >= 1 and busy.finished["derive text"] >= RECIPIENTS
    assert set(answers) == {200}
    # The API answered while the template was being compiled and while text was derived.
    assert busy.seen_during["compile"] > 0, busy.seen_during
    assert busy.seen_during["derive text"] > 0, busy.seen_during


async def test_small_templates_render_on_the_loop_others_on_a_thread(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded: list[str] = []
    real_to_thread = asyncio.to_thread

    async def to_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        threaded.append(args[0].version.id)
        return await real_to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    settings = settings_factory()
    batch = Batch(id="b1", tags={}, unsubscribe=False, status="SENDING", template_version_id="v")

    async def compose_with(
        version_id: str, html: str, text: str | None, *, evict: bool = False
    ) -> str | None:
        version = TemplateVersion(id=version_id, subject="Hi", html=html, text=text, variables={})
        compiled = get_compiled(version_id, subject="Hi", html=html, text=text)
        ctx = compose_module.batch_context(
            batch, version, settings, render_inline=compiled.renders_quickly
        )
        if evict:
            clear_compiled_cache()
        message = await compose_module.compose_message(ctx, 1, "a@example.com", {}, settings)
        return message.text

    assert await compose_with("small", "<p>hi</p>", "hi") == "hi"
    assert threaded == []
    assert await compose_with("derived", "<p>hi</p>", None) == "hi\n"
    assert threaded == ["derived"]
    # Evicted from the compile cache: compiling it again is a thread's work.
    assert await compose_with("evicted", "<p>hi</p>", "hi", evict=True) == "hi"
    assert threaded == ["derived", "evicted"]


async def test_small_templates_compile_on_the_loop_others_on_a_thread(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch, busy: Busy
) -> None:
    """A worker compiles each template version once. A small one (every inline email is a
    version of its own) compiles on the loop: a thread hop waits for the GIL on a busy
    worker. A large one compiles on a thread."""
    threaded: list[str] = []
    real_to_thread = asyncio.to_thread

    async def to_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        threaded.append(args[0])
        return await real_to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    contexts = BatchContexts(settings_factory())
    small = TemplateVersion(id="small", subject="Code", html=None, text="Your code: {{code}}")
    large = TemplateVersion(id="large", subject="Hi", html=HEAVY_HTML, text="hi")
    assert await contexts._renders_quickly(small) is True
    assert threaded == []
    assert await contexts._renders_quickly(large) is False
    assert threaded == ["large"]
    assert await contexts._renders_quickly(large) is False  # compiled once
    assert threaded == ["large"]
