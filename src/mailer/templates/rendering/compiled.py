"""Compiled templates: the three parts of a version parsed once and rendered many times,
and the bounded cache of compiled versions."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mailer.templates.rendering.evaluator import (
    Builder,
    Op,
    RenderProblem,
    Scope,
    State,
    run_ops,
)
from mailer.templates.rendering.parser import parse_part
from mailer.templates.rendering.scanner import SyntaxProblem, line_col

DEFAULT_MAX_OUTPUT_BYTES: Final = 2_000_000
DEFAULT_MAX_ITERATIONS: Final = 100_000
CACHE_SIZE: Final = 256
# Rendered on the event loop when at most this many tags and source characters in all (a
# render then costs at most about a millisecond); bigger templates render on a thread.
INLINE_MAX_TAGS: Final = 100
INLINE_MAX_SOURCE_CHARS: Final = 200_000
# Compiled on the event loop when at most this many tags and characters in all (~3 ms at
# most: 0.4 ms with no tag, 1 ms with one, 3 ms with eight). A thread hop costs more than
# that on a busy worker: waiting for the GIL took up to 118 ms at the 99th percentile of
# transactional sends in bench/priority, where every inline email is a version of its own.
QUICK_COMPILE_MAX_TAGS: Final = 8
QUICK_COMPILE_MAX_CHARS: Final = 16_384


class TemplateSyntaxError(ValueError):
    """A template part does not parse. Line and column are 1-based (characters)."""

    def __init__(self, part: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{part}: line {line}, column {column}: {message}")
        self.part = part
        self.line = line
        self.column = column
        self.message = message


class TemplateRenderError(ValueError):
    """Rendering one part failed (output too large, too many iterations, ...)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part
        self.message = message


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str | None
    text: str | None


class _Part:
    __slots__ = ("name", "ops", "size", "tags")

    def __init__(self, name: str, ops: list[Op], tags: int, size: int) -> None:
        self.name = name
        self.ops = ops
        self.tags = tags
        self.size = size

    @classmethod
    def compile(cls, name: str, source: str) -> _Part:
        try:
            tree, scan = parse_part(source)
            ops = Builder(scan.tags, escape=name == "html").body(tree)
        except SyntaxProblem as problem:
            line, column = line_col(source, problem.pos)
            raise TemplateSyntaxError(name, line, column, problem.message) from None
        return cls(name, ops, len(scan.tags), len(source))

    def render(self, root: dict[Any, Any], max_bytes: int, max_iterations: int) -> str:
        state = State(max_bytes, max_iterations)
        try:
            run_ops(self.ops, Scope(root, None, root, None), state)
        except RenderProblem as problem:
            raise TemplateRenderError(self.name, problem.message) from None
        except RecursionError:
            raise TemplateRenderError(self.name, "template or data nested too deeply") from None
        except Exception as exc:  # never a crash for a client's template or data
            raise TemplateRenderError(
                self.name, f"rendering failed ({type(exc).__name__})"
            ) from exc
        text = "".join(state.out)
        if not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise TemplateRenderError(self.name, f"output larger than {max_bytes} bytes")
        return text


class CompiledTemplate:
    """A template version, parsed once. Thread-safe; render() does not mutate it."""

    __slots__ = ("_html", "_max_iterations", "_max_output_bytes", "_subject", "_text")

    def __init__(
        self,
        subject: _Part,
        html: _Part | None,
        text: _Part | None,
        max_output_bytes: int,
        max_iterations: int,
    ) -> None:
        self._subject = subject
        self._html = html
        self._text = text
        self._max_output_bytes = max_output_bytes
        self._max_iterations = max_iterations

    @classmethod
    def compile(
        cls,
        *,
        subject: str,
        html: str | None,
        text: str | None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> CompiledTemplate:
        """Parse every part. Raises TemplateSyntaxError naming the part, line and column.
        Large templates take a while (pybars parses ~1,000 tags/s): run it off the event loop."""
        return cls(
            _Part.compile("subject", subject),
            _Part.compile("html", html) if html is not None else None,
            _Part.compile("text", text) if text is not None else None,
            max_output_bytes,
            max_iterations,
        )

    @property
    def has_html(self) -> bool:
        return self._html is not None

    @property
    def has_text(self) -> bool:
        return self._text is not None

    @property
    def renders_quickly(self) -> bool:
        """Small enough to render on the event loop (INLINE_MAX_TAGS, INLINE_MAX_SOURCE_CHARS)
        and no text part left to derive from the rendered html (html2text is slow)."""
        parts = [p for p in (self._subject, self._html, self._text) if p is not None]
        return (
            sum(p.tags for p in parts) <= INLINE_MAX_TAGS
            and sum(p.size for p in parts) <= INLINE_MAX_SOURCE_CHARS
            and (self._text is not None or self._html is None)
        )

    def render(self, variables: Mapping[str, Any]) -> RenderedMessage:
        """Render every part. Each part's output is bounded by max_output_bytes and its
        loops by max_iterations; raises TemplateRenderError."""
        root = variables if type(variables) is dict else dict(variables)
        limit, iterations = self._max_output_bytes, self._max_iterations
        return RenderedMessage(
            subject=self._subject.render(root, limit, iterations),
            html=self._html.render(root, limit, iterations) if self._html else None,
            text=self._text.render(root, limit, iterations) if self._text else None,
        )


_cache: OrderedDict[str, CompiledTemplate] = OrderedDict()
_cache_lock = threading.Lock()


def get_compiled(
    version_id: str, *, subject: str, html: str | None, text: str | None
) -> CompiledTemplate:
    """The compiled template of an (immutable) template version, from a bounded LRU cache."""
    with _cache_lock:
        compiled = _cache.get(version_id)
        if compiled is not None:
            _cache.move_to_end(version_id)
            return compiled
    compiled = CompiledTemplate.compile(subject=subject, html=html, text=text)
    with _cache_lock:
        _cache[version_id] = compiled
        _cache.move_to_end(version_id)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def compiles_quickly(subject: str, html: str | None, text: str | None) -> bool:
    """Small enough to compile on the event loop (QUICK_COMPILE_MAX_TAGS/_CHARS)."""
    parts = [p for p in (subject, html, text) if p]
    return (
        sum(map(len, parts)) <= QUICK_COMPILE_MAX_CHARS
        and sum(p.count("{{") for p in parts) <= QUICK_COMPILE_MAX_TAGS
    )


def peek_compiled(version_id: str) -> CompiledTemplate | None:
    """The cached compiled template of a version, or None (never compiles). Called per
    message: a single dict read, atomic without the lock."""
    return _cache.get(version_id)


def clear_compiled_cache() -> None:
    with _cache_lock:
        _cache.clear()
