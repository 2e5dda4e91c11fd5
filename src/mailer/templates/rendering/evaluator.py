"""Evaluation: pybars' syntax tree, validated, becomes a list of ops (literal strings and
closures) that render JSON-like data: dict keys and list indices only, the built-in helpers
if/unless/each/with/lookup, output size and loop iterations counted as they grow."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

from mailer.templates.rendering.parser import Tree
from mailer.templates.rendering.scanner import SyntaxProblem, Tag

MAX_DATA_DEPTH: Final = 64

_BLOCK_HELPERS: Final = frozenset({"if", "unless", "each", "with"})
HELPERS: Final = _BLOCK_HELPERS | {"lookup"}
_SAFE_TYPES: Final = frozenset({dict, list, tuple, str, int, float, bool, type(None)})


class RenderProblem(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Scope:
    __slots__ = ("context", "data", "parent", "root")

    def __init__(
        self, context: Any, parent: Scope | None, root: Any, data: dict[str, Any] | None
    ) -> None:
        self.context = context
        self.parent = parent
        self.root = root
        self.data = data


class State:
    __slots__ = ("iterations", "limit", "max_iterations", "out", "size")

    def __init__(self, limit: int, max_iterations: int) -> None:
        self.out: list[str] = []
        self.size = 0
        self.limit = limit
        self.iterations = 0
        self.max_iterations = max_iterations

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limit:
            raise RenderProblem(f"output larger than {self.limit} bytes")
        self.out.append(text)

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise RenderProblem(f"more than {self.max_iterations} loop iterations")


Op: TypeAlias = "str | Callable[[Scope, State], None]"
Getter: TypeAlias = Callable[[Scope], Any]


def run_ops(ops: Sequence[Op], scope: Scope, state: State) -> None:
    for op in ops:
        if isinstance(op, str):
            state.emit(op)
        else:
            op(scope, state)


def _child(value: Any, key: Any) -> Any:
    """value[key] for JSON-like data only; None for anything else."""
    kind = type(value)
    if kind is dict:
        if type(key) is int:
            key = str(key)
        found = value.get(key) if type(key) is str else None
    elif kind is list or kind is tuple:
        if type(key) is str:
            if key == "length":
                return len(value)
            if not (key.isascii() and key.isdigit()):
                return None
            key = int(key)
        if type(key) is not int or not 0 <= key < len(value):
            return None
        found = value[key]
    else:
        return None
    return found if type(found) in _SAFE_TYPES else None


def _scope_get(scope: Scope, name: str) -> Any:
    if name.startswith("@"):
        if name == "@root":
            return scope.root
        if name == "@_parent":
            return scope.parent
        return scope.data.get(name) if scope.data else None
    return _child(scope.context, name)


def _resolve(scope: Scope, segments: tuple[str, ...]) -> Any:
    current: Any = scope
    for segment in segments:
        if type(current) is Scope:
            current = _scope_get(current, segment)
        else:
            current = _child(current, segment)
        if current is None:
            return None
    return current.context if type(current) is Scope else current


def _path_segments(raw: Sequence[str]) -> tuple[str, ...]:
    """Tree path -> lookup steps: 'this', '.' and '/' vanish; '@../x' becomes @_parent, @x."""
    segments: list[str] = []
    carry = False
    for segment in raw:
        if carry:
            segment, carry = "@" + segment, False
        if segment.startswith("@@"):
            segment, carry = segment[1:], True
        if segment not in ("", "this"):
            segments.append(segment)
    return tuple(segments)


def _truthy(value: Any) -> bool:
    """Handlebars #if: false, null, "", 0, NaN and [] are false; {} is true."""
    kind = type(value)
    if kind is dict:
        return True
    if kind is float:
        return bool(value == value and value != 0)
    return bool(value)


def _is_empty(value: Any) -> bool:
    """Handlebars Utils.isEmpty (used by #with, #each and {{^x}}): 0 is not empty."""
    if type(value) is int:
        return False
    return not _truthy(value)


def _number_text(value: int | float) -> str:
    if type(value) is float:
        if value != value:
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    try:
        return str(value)
    except ValueError:  # more digits than int->str allows
        raise RenderProblem("number too large to render") from None


def _to_text(value: Any, state: State, depth: int = 0) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return _number_text(value)
    if kind is dict:
        return "[object Object]"
    if kind is list or kind is tuple:
        if depth >= MAX_DATA_DEPTH:
            raise RenderProblem(f"data nested more than {MAX_DATA_DEPTH} levels deep")
        parts: list[str] = []
        budget = state.limit - state.size
        for item in value:
            part = _to_text(item, state, depth + 1)
            budget -= len(part) + 1
            if budget < -1:
                raise RenderProblem(f"output larger than {state.limit} bytes")
            parts.append(part)
        return ",".join(parts)
    return ""


_HTML_ESCAPES: Final = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("'"): "&#x27;",
    ord("`"): "&#x60;",
    ord("="): "&#x3D;",
}
_NEEDS_ESCAPE: Final = re.compile("[&<>\"'`=]")


def _escape_html(text: str) -> str:
    return text.translate(_HTML_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def _decode_string(literal: str) -> str:
    """pybars' grammar turns a string literal into Python source text: undo that."""
    return re.sub(
        r"\\(.)",
        lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)),
        literal[1:-1],
        flags=re.DOTALL,
    )


# --------------------------------------------------------------------------- tree -> ops


class Builder:
    """Validates a pybars syntax tree and turns it into ops. Tags are counted in source
    order so a problem can be reported at the position the scanner found for that tag."""

    def __init__(self, tags: list[Tag], escape: bool) -> None:
        self.tags = tags
        self.escape = escape
        self.tag_index = -1

    def fail(self, message: str) -> SyntaxProblem:
        tag = self.tags[self.tag_index] if 0 <= self.tag_index < len(self.tags) else None
        return SyntaxProblem(tag.pos if tag else 0, message)

    def next_tag(self) -> None:
        self.tag_index += 1

    def body(self, template: Tree) -> list[Op]:
        ops: list[Op] = []
        for node in template[1:]:
            op = self.node(node)
            if op is None:
                continue
            if isinstance(op, str) and ops and isinstance(ops[-1], str):
                ops[-1] += op
            elif op != "":
                ops.append(op)
        return ops

    def node(self, node: Any) -> Op | None:
        kind = node[0]
        if kind in ("literal", "newline", "whitespace"):
            return str(node[1])
        self.next_tag()
        if kind == "comment":
            return None
        if kind == "rawblock":
            if node[2]:
                raise self.fail("raw blocks take no arguments")
            return str(node[3])
        if kind == "partial":
            raise self.fail("partials ({{> name}}) are not supported")
        if kind in ("expand", "escapedexpand"):
            return self.expand(node[1][1], node[2], escape=self.escape and kind == "escapedexpand")
        if kind in ("block", "invertedblock"):
            return self.block(node[1], node[2], node[3], node[4], inverted=kind == "invertedblock")
        raise self.fail(f"unsupported construct {kind!r}")  # pragma: no cover

    def expand(self, raw_path: list[str], args: list[Any], *, escape: bool) -> Op:
        getter = self.call_or_path(raw_path, args)

        def op(scope: Scope, state: State) -> None:
            text = _to_text(getter(scope), state)
            if text:
                state.emit(_escape_html(text) if escape else text)

        return op

    def check_no_hash_arguments(self, args: list[Any]) -> None:
        if any(arg[0] == "kwparam" for arg in args):
            raise self.fail("hash arguments (name=value) are not supported")

    def call_or_path(self, raw_path: list[str], args: list[Any]) -> Getter:
        self.check_no_hash_arguments(args)
        name = raw_path[0] if len(raw_path) == 1 else None
        if name == "else":
            raise self.fail("{{else if ...}} is not supported: nest {{#if}} inside {{else}}")
        if name in HELPERS:
            if name != "lookup":
                raise self.fail(f"{{{{{name}}}}} can only be used as a block: {{{{#{name} ...}}}}")
            return self.lookup(args)
        if args:
            label = name if name else ".".join(s for s in raw_path if s)
            raise self.fail(f"unknown helper {label!r} (only if, unless, each, with, lookup)")
        segments = _path_segments(raw_path)
        return lambda scope: _resolve(scope, segments)

    def lookup(self, args: list[Any]) -> Getter:
        self.check_no_hash_arguments(args)
        if len(args) != 2:
            raise self.fail("lookup takes exactly two arguments: {{lookup object key}}")
        target, key = (self.argument(arg) for arg in args)
        return lambda scope: _child(target(scope), key(scope))

    def argument(self, arg: Any) -> Getter:
        kind = arg[0]
        if kind == "path":
            segments = _path_segments(arg[1])
            return lambda scope: _resolve(scope, segments)
        if kind == "literalparam":
            value = arg[1]
            if isinstance(value, str):
                value = _decode_string(value)
            return lambda scope: value
        if kind == "subexpr":
            path, sub_args = arg[1][1], arg[2]
            if path != ["lookup"]:
                raise self.fail(f"unknown helper {'.'.join(path)!r} in a subexpression")
            return self.lookup(sub_args)
        if kind == "kwparam":
            raise self.fail("hash arguments (name=value) are not supported")
        raise self.fail(f"unsupported argument {kind!r}")  # pragma: no cover

    def block(
        self, name: str, args: list[Any], template: Tree, alternative: Tree, *, inverted: bool
    ) -> Op:
        self.check_no_hash_arguments(args)
        if name in _BLOCK_HELPERS:
            if len(args) != 1:
                raise self.fail(f"{{{{#{name}}}}} takes exactly one argument")
            getter = self.argument(args[0])
        elif name in HELPERS or name == "else":
            raise self.fail(f"{{{{#{name}}}}} is not a block helper")
        elif args:
            raise self.fail(f"unknown block helper {name!r} (only if, unless, each, with)")
        else:
            segments = _path_segments([name])
            getter = lambda scope: _resolve(scope, segments)  # noqa: E731
        fn = self.body(template)
        if alternative:
            self.next_tag()  # {{else}}
        inverse = self.body(alternative) if alternative else []
        self.next_tag()  # {{/name}}
        if inverted:
            if name not in _BLOCK_HELPERS:
                return _inverted_section(getter, fn, inverse)
            fn, inverse = inverse, fn
        factory = _BLOCK_FACTORIES.get(name, _section)
        return factory(getter, fn, inverse)


BlockFactory: TypeAlias = Callable[[Getter, list[Op], list[Op]], Op]


def _if(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    def op(scope: Scope, state: State) -> None:
        run_ops(fn if _truthy(getter(scope)) else inverse, scope, state)

    return op


def _unless(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    return _if(getter, inverse, fn)


def _with(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    def op(scope: Scope, state: State) -> None:
        value = getter(scope)
        if _is_empty(value):
            run_ops(inverse, scope, state)
        else:
            run_ops(fn, Scope(value, scope, scope.root, scope.data), state)

    return op


def _each_items(
    items: list[Any] | tuple[Any, ...] | dict[Any, Any], fn: list[Op], scope: Scope, state: State
) -> None:
    last = len(items) - 1
    if type(items) is dict:
        for index, (key, value) in enumerate(items.items()):
            state.iterate()
            data = {"@index": index, "@key": key, "@first": index == 0, "@last": index == last}
            safe = value if type(value) in _SAFE_TYPES else None
            run_ops(fn, Scope(safe, scope, scope.root, data), state)
    else:
        for index, value in enumerate(items):
            state.iterate()
            data = {"@index": index, "@first": index == 0, "@last": index == last}
            safe = value if type(value) in _SAFE_TYPES else None
            run_ops(fn, Scope(safe, scope, scope.root, data), state)


def _each(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    def op(scope: Scope, state: State) -> None:
        items = getter(scope)
        if type(items) in (list, tuple, dict) and items:
            _each_items(items, fn, scope, state)
        else:
            run_ops(inverse, scope, state)

    return op


def _section(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    """{{#name}}…{{/name}} without a helper (handlebars.js blockHelperMissing)."""

    def op(scope: Scope, state: State) -> None:
        value = getter(scope)
        if value is True:
            run_ops(fn, scope, state)
        elif value is None or value is False:
            run_ops(inverse, scope, state)
        elif type(value) in (list, tuple):
            if value:
                _each_items(value, fn, scope, state)
            else:
                run_ops(inverse, scope, state)
        else:
            run_ops(fn, Scope(value, scope, scope.root, scope.data), state)

    return op


def _inverted_section(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    """{{^name}}…{{/name}}: the body when the value is empty."""

    def op(scope: Scope, state: State) -> None:
        run_ops(fn if _is_empty(getter(scope)) else inverse, scope, state)

    return op


_BLOCK_FACTORIES: Final[dict[str, BlockFactory]] = {
    "if": _if,
    "unless": _unless,
    "with": _with,
    "each": _each,
}
