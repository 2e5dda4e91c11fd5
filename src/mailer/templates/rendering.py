"""Safe Handlebars rendering.

pybars3 (pinned 0.9.7) is used only for its grammar: it turns a template into a syntax tree.
Its code generator is not used: it splices path segments into generated Python source
(`{{[x')or __import__('os')...or(']}}` executes code), resolves names with getattr, calls
callables found in data, keeps a non-thread-safe class-level builder and registers every
compiled template in `sys.modules`. Instead the tree is validated and turned into a small
evaluator here that reads only dict keys and list indices of JSON-like data (dict, list,
tuple, str, int, float, bool, None; anything else renders empty), counts output and loop
iterations while rendering, and knows only the built-in helpers if/unless/each/with/lookup.

Decisions (see tests/templates/test_rendering.py):
- `{{x}}` is HTML-escaped in the html part only; subject and text are never escaped.
- Partials (`{{> x}}`), helpers other than the built-ins, hash arguments (`k=v`) and
  `{{else if}}` are syntax errors at compile time.
- `{{name}}` with no arguments is a variable lookup; a missing variable renders empty.
- Values render like handlebars.js: true/false, 3 (for 3.0), arrays joined by ",",
  objects as "[object Object]".
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias

import html2text
from pybars import Compiler

__all__ = [
    "CompiledTemplate",
    "RenderedMessage",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "clear_compiled_cache",
    "derive_text",
    "get_compiled",
]

MAX_SOURCE_CHARS: Final = 1_000_000
# pybars' PEG parser needs ~0.5 ms per tag and recurses ~15 frames per nesting level.
MAX_TAGS: Final = 2_000
MAX_NESTING: Final = 24
DEFAULT_MAX_OUTPUT_BYTES: Final = 2_000_000
DEFAULT_MAX_ITERATIONS: Final = 100_000
MAX_DATA_DEPTH: Final = 64
CACHE_SIZE: Final = 256

_BLOCK_HELPERS: Final = frozenset({"if", "unless", "each", "with"})
HELPERS: Final = _BLOCK_HELPERS | {"lookup"}
_SAFE_TYPES: Final = frozenset({dict, list, tuple, str, int, float, bool, type(None)})


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


class _SyntaxProblem(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


class _RenderProblem(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- source mapping


class _Edit(NamedTuple):
    """A region of the original text replaced in the processed text."""

    new_start: int
    new_len: int
    old_start: int
    old_len: int
    # For each processed character of the region, its offset in the original region.
    offsets: tuple[int, ...] | None


def _map_back(pos: int, edits: Sequence[_Edit]) -> int:
    shift = 0
    for edit in edits:
        if pos < edit.new_start:
            break
        if pos < edit.new_start + edit.new_len:
            inner = edit.offsets[pos - edit.new_start] if edit.offsets else 0
            return edit.old_start + inner
        shift = edit.old_start + edit.old_len - (edit.new_start + edit.new_len)
    return pos + shift


def _line_col(source: str, pos: int) -> tuple[int, int]:
    pos = max(0, min(pos, len(source)))
    line = source.count("\n", 0, pos) + 1
    return line, pos - (source.rfind("\n", 0, pos) + 1) + 1


# pybars' Compiler.whitespace_control, reimplemented so error positions can be mapped back.
_WS_RE: Final = re.compile(
    r"~}}\s*|\s*{{~|"
    r"(?<=\n)([ \t]*{{(#[^{}]+|/[^{}]+|![^{}]+|else|else if [^{}]+)}}[ \t]*)+\r?\n|"
    r"^([ \t]*{{(#[^{}]+|![^{}]+)}}[ \t]*)+\r?\n|"
    r"\r?\n([ \t]*{{(/[^{}]+|![^{}]+)}}[ \t]*)+$"
)
_WS_CLEAN_RE: Final = re.compile(r"(?<={{)~|~(?=}})|(?<=}})[ \t]+(?={{)")


def _whitespace_control(source: str) -> tuple[str, list[_Edit]]:
    out: list[str] = []
    edits: list[_Edit] = []
    last = new_pos = 0
    for match in _WS_RE.finditer(source):
        out.append(source[last : match.start()])
        new_pos += match.start() - last
        text = match.group(0)
        lead = len(text) - len(text.lstrip())
        stripped = text.strip()
        pieces: list[str] = []
        offsets: list[int] = []
        prev = 0
        for drop in _WS_CLEAN_RE.finditer(stripped):
            pieces.append(stripped[prev : drop.start()])
            offsets.extend(range(lead + prev, lead + drop.start()))
            prev = drop.end()
        pieces.append(stripped[prev:])
        offsets.extend(range(lead + prev, lead + len(stripped)))
        replacement = "".join(pieces)
        edits.append(_Edit(new_pos, len(replacement), match.start(), len(text), tuple(offsets)))
        out.append(replacement)
        new_pos += len(replacement)
        last = match.end()
    out.append(source[last:])
    return "".join(out), edits


# --------------------------------------------------------------------------- tag scanner


class _Tag(NamedTuple):
    pos: int
    kind: str  # "#", "^", "/", ">", "!", "{", "&", "raw" or "" (plain)
    name: str


_TAG_NAME_RE: Final = re.compile(r"\s*([^\s}~()]*)")


class _Scan(NamedTuple):
    tags: list[_Tag]
    problem: _SyntaxProblem | None


def _tag_label(tag: _Tag) -> str:
    return "{{" + (tag.kind if tag.kind not in ("", "raw") else "") + tag.name + "}}"


def _scan(source: str) -> _Scan:
    """Find tags and check block structure. Approximate (string arguments may confuse it):
    the grammar decides what parses; this gives positions and readable messages."""
    tags: list[_Tag] = []
    stack: list[_Tag] = []
    problem: _SyntaxProblem | None = None
    n = len(source)
    pos = source.find("{{")
    while pos >= 0:
        if len(tags) >= MAX_TAGS:
            raise _SyntaxProblem(pos, f"too many tags (at most {MAX_TAGS})")
        if source.startswith("{{{{", pos):
            name_match = _TAG_NAME_RE.match(source, pos + 4)
            name = name_match.group(1) if name_match else ""
            tags.append(_Tag(pos, "raw", name))
            close = source.find("{{{{/" + name, pos + 4)
            pos = source.find("{{", close + 5) if close >= 0 else -1
            continue
        j = pos + 2
        if j < n and source[j] == "~":
            j += 1
        while j < n and source[j] in " \t\r\n":
            j += 1
        kind = source[j] if j < n and source[j] in "#^/>!{&" else ""
        if kind:
            j += 1
        end = source.find("}}", j)
        if kind == "!":
            tags.append(_Tag(pos, kind, ""))
            pos = source.find("{{", end + 2) if end >= 0 else -1
            continue
        if _paren_depth(source, j, end if end >= 0 else n) > MAX_NESTING:
            raise _SyntaxProblem(pos, f"subexpressions nested too deeply (at most {MAX_NESTING})")
        name_match = _TAG_NAME_RE.match(source, j)
        tag = _Tag(pos, kind, name_match.group(1) if name_match else "")
        tags.append(tag)
        if problem is None:
            problem = _check_structure(tag, stack)
        pos = source.find("{{", end + 2) if end >= 0 else -1
    if problem is None and stack:
        opener = stack[-1]
        problem = _SyntaxProblem(opener.pos, f"block {_tag_label(opener)} is never closed")
    return _Scan(tags, problem)


def _paren_depth(source: str, start: int, end: int) -> int:
    if source.find("(", start, end) < 0:
        return 0
    depth = deepest = 0
    for char in source[start:end]:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _check_structure(tag: _Tag, stack: list[_Tag]) -> _SyntaxProblem | None:
    is_else = (tag.kind == "" and tag.name == "else") or (tag.kind == "^" and tag.name == "")
    if tag.kind in ("#", "^") and not is_else:
        stack.append(tag)
        if len(stack) > MAX_NESTING:
            raise _SyntaxProblem(tag.pos, f"blocks nested too deeply (at most {MAX_NESTING})")
    elif tag.kind == "/":
        if not stack:
            return _SyntaxProblem(tag.pos, f"{{{{/{tag.name}}}}} closes no open block")
        opener = stack.pop()
        if opener.name != tag.name:
            return _SyntaxProblem(
                tag.pos, f"{{{{/{tag.name}}}}} does not match the open block {_tag_label(opener)}"
            )
    elif is_else and not stack:
        return _SyntaxProblem(tag.pos, "{{else}} outside a block")
    return None


# --------------------------------------------------------------------------- parsing

_PLACEHOLDER_OPEN: Final = "\ue000"
_PLACEHOLDER_CLOSE: Final = "\ue001"
# Literal runs: no braces at all, right after a tag (or the start) and right before one.
_RUN_RE: Final = re.compile(r"(?:\A|(?<=}}))[^{}]{16,}(?={{|\Z)")
_PLACEHOLDER_RE: Final = re.compile(_PLACEHOLDER_OPEN + r"(\d+)" + _PLACEHOLDER_CLOSE)

Tree: TypeAlias = list[Any]


def _grammar_parse(text: str) -> tuple[Tree, int, int]:
    """(tree, where the template rule stopped, furthest position the parser tried).

    pybars compares the furthest position with the length, so it accepts "{{#if a}}x"
    (and renders nothing); the stop position is what says whether everything parsed."""
    parser = Compiler._handlebars(text)
    try:
        tree, error = parser.apply("template")
    except RecursionError:
        raise _SyntaxProblem(0, "template nested too deeply") from None
    stop = int(parser.input.position)
    furthest = error[0] if error and isinstance(error[0], int) else stop
    return tree, stop, max(stop, furthest)


def _parse(source: str) -> tuple[Tree, _Scan]:
    """Parse one part. PyMeta's parser is slow per character (~10 µs), so long literal runs
    are swapped for short placeholders first and put back in the tree; if a placeholder
    shows up anywhere but as a whole literal node, the original text is parsed instead."""
    if len(source) > MAX_SOURCE_CHARS:
        raise _SyntaxProblem(MAX_SOURCE_CHARS, f"template too large (at most {MAX_SOURCE_CHARS})")
    scan = _scan(source)
    processed, ws_edits = _whitespace_control(source)
    runs: list[str] = []
    run_edits: list[_Edit] = []
    if _PLACEHOLDER_OPEN not in processed:
        shift = 0

        def substitute(match: re.Match[str]) -> str:
            nonlocal shift
            placeholder = f"{_PLACEHOLDER_OPEN}{len(runs)}{_PLACEHOLDER_CLOSE}"
            runs.append(match.group(0))
            run = match.group(0)
            run_edits.append(
                _Edit(match.start() + shift, len(placeholder), match.start(), len(run), None)
            )
            shift += len(placeholder) - len(match.group(0))
            return placeholder

        fast = _RUN_RE.sub(substitute, processed)
    else:
        fast = processed
    try:
        tree, stop, furthest = _grammar_parse(fast)
    except _SyntaxProblem:
        raise scan.problem or _SyntaxProblem(0, "template nested too deeply") from None
    if stop < len(fast):
        in_source = _map_back(_map_back(furthest, run_edits), ws_edits)
        raise scan.problem or _SyntaxProblem(in_source, _describe_failure(source, in_source, scan))
    if runs:
        restored = _restore_runs(tree, runs)
        if restored is None:
            tree, stop, furthest = _grammar_parse(processed)
            if stop < len(processed):  # pragma: no cover - the fast parse succeeded
                in_source = _map_back(furthest, ws_edits)
                raise _SyntaxProblem(in_source, _describe_failure(source, in_source, scan))
        else:
            tree = restored
    return tree, scan


def _restore_runs(node: Any, runs: list[str]) -> Any:
    """The tree with placeholders replaced, or None if one is out of place."""
    used = [0]

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            if _PLACEHOLDER_OPEN in item:
                raise LookupError
            return item
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "literal":
            match = _PLACEHOLDER_RE.fullmatch(item[1])
            if match:
                used[0] += 1
                return ("literal", runs[int(match.group(1))])
        if isinstance(item, list | tuple):
            return type(item)(walk(child) for child in item)
        return item

    try:
        restored = walk(node)
    except (LookupError, IndexError):
        return None
    return restored if used[0] == len(runs) else None


def _describe_failure(source: str, pos: int, scan: _Scan) -> str:
    starts = [tag.pos for tag in scan.tags]
    index = bisect.bisect_right(starts, pos) - 1
    start = starts[index] if index >= 0 else pos
    end = source.find("}}", start)
    tag = source[start : end + 2] if end >= 0 else source[start:]
    tag = tag if len(tag) <= 60 else tag[:57] + "..."
    if re.match(r"{{~?\s*else\s", tag):
        return "{{else if ...}} is not supported: nest {{#if}} inside {{else}}"
    if end < 0:
        return f"the tag {tag!r} is never closed with }}}}"
    return f"cannot parse the tag {tag!r}"


# --------------------------------------------------------------------------- evaluation


class _Scope:
    __slots__ = ("context", "data", "parent", "root")

    def __init__(
        self, context: Any, parent: _Scope | None, root: Any, data: dict[str, Any] | None
    ) -> None:
        self.context = context
        self.parent = parent
        self.root = root
        self.data = data


class _State:
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
            raise _RenderProblem(f"output larger than {self.limit} bytes")
        self.out.append(text)

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise _RenderProblem(f"more than {self.max_iterations} loop iterations")


Op: TypeAlias = "str | Callable[[_Scope, _State], None]"
Getter: TypeAlias = Callable[[_Scope], Any]


def _run(ops: Sequence[Op], scope: _Scope, state: _State) -> None:
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


def _scope_get(scope: _Scope, name: str) -> Any:
    if name.startswith("@"):
        if name == "@root":
            return scope.root
        if name == "@_parent":
            return scope.parent
        return scope.data.get(name) if scope.data else None
    return _child(scope.context, name)


def _resolve(scope: _Scope, segments: tuple[str, ...]) -> Any:
    current: Any = scope
    for segment in segments:
        if type(current) is _Scope:
            current = _scope_get(current, segment)
        else:
            current = _child(current, segment)
        if current is None:
            return None
    return current.context if type(current) is _Scope else current


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
        raise _RenderProblem("number too large to render") from None


def _to_text(value: Any, state: _State, depth: int = 0) -> str:
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
            raise _RenderProblem(f"data nested more than {MAX_DATA_DEPTH} levels deep")
        parts: list[str] = []
        budget = state.limit - state.size
        for item in value:
            part = _to_text(item, state, depth + 1)
            budget -= len(part) + 1
            if budget < -1:
                raise _RenderProblem(f"output larger than {state.limit} bytes")
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


class _Builder:
    """Validates a pybars syntax tree and turns it into ops. Tags are counted in source
    order so a problem can be reported at the position the scanner found for that tag."""

    def __init__(self, tags: list[_Tag], escape: bool) -> None:
        self.tags = tags
        self.escape = escape
        self.tag_index = -1

    def fail(self, message: str) -> _SyntaxProblem:
        tag = self.tags[self.tag_index] if 0 <= self.tag_index < len(self.tags) else None
        return _SyntaxProblem(tag.pos if tag else 0, message)

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

        def op(scope: _Scope, state: _State) -> None:
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
    def op(scope: _Scope, state: _State) -> None:
        _run(fn if _truthy(getter(scope)) else inverse, scope, state)

    return op


def _unless(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    return _if(getter, inverse, fn)


def _with(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    def op(scope: _Scope, state: _State) -> None:
        value = getter(scope)
        if _is_empty(value):
            _run(inverse, scope, state)
        else:
            _run(fn, _Scope(value, scope, scope.root, scope.data), state)

    return op


def _each_items(
    items: list[Any] | tuple[Any, ...] | dict[Any, Any], fn: list[Op], scope: _Scope, state: _State
) -> None:
    last = len(items) - 1
    if type(items) is dict:
        for index, (key, value) in enumerate(items.items()):
            state.iterate()
            data = {"@index": index, "@key": key, "@first": index == 0, "@last": index == last}
            safe = value if type(value) in _SAFE_TYPES else None
            _run(fn, _Scope(safe, scope, scope.root, data), state)
    else:
        for index, value in enumerate(items):
            state.iterate()
            data = {"@index": index, "@first": index == 0, "@last": index == last}
            safe = value if type(value) in _SAFE_TYPES else None
            _run(fn, _Scope(safe, scope, scope.root, data), state)


def _each(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    def op(scope: _Scope, state: _State) -> None:
        items = getter(scope)
        if type(items) in (list, tuple, dict) and items:
            _each_items(items, fn, scope, state)
        else:
            _run(inverse, scope, state)

    return op


def _section(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    """{{#name}}…{{/name}} without a helper (handlebars.js blockHelperMissing)."""

    def op(scope: _Scope, state: _State) -> None:
        value = getter(scope)
        if value is True:
            _run(fn, scope, state)
        elif value is None or value is False:
            _run(inverse, scope, state)
        elif type(value) in (list, tuple):
            if value:
                _each_items(value, fn, scope, state)
            else:
                _run(inverse, scope, state)
        else:
            _run(fn, _Scope(value, scope, scope.root, scope.data), state)

    return op


def _inverted_section(getter: Getter, fn: list[Op], inverse: list[Op]) -> Op:
    """{{^name}}…{{/name}}: the body when the value is empty."""

    def op(scope: _Scope, state: _State) -> None:
        _run(fn if _is_empty(getter(scope)) else inverse, scope, state)

    return op


_BLOCK_FACTORIES: Final[dict[str, BlockFactory]] = {
    "if": _if,
    "unless": _unless,
    "with": _with,
    "each": _each,
}


# --------------------------------------------------------------------------- public API


class _Part:
    __slots__ = ("name", "ops")

    def __init__(self, name: str, ops: list[Op]) -> None:
        self.name = name
        self.ops = ops

    @classmethod
    def compile(cls, name: str, source: str) -> _Part:
        try:
            tree, scan = _parse(source)
            ops = _Builder(scan.tags, escape=name == "html").body(tree)
        except _SyntaxProblem as problem:
            line, column = _line_col(source, problem.pos)
            raise TemplateSyntaxError(name, line, column, problem.message) from None
        return cls(name, ops)

    def render(self, root: dict[Any, Any], max_bytes: int, max_iterations: int) -> str:
        state = _State(max_bytes, max_iterations)
        try:
            _run(self.ops, _Scope(root, None, root, None), state)
        except _RenderProblem as problem:
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
        Large templates take a while (pybars parses ~2,000 tags/s): run it off the event loop."""
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


def clear_compiled_cache() -> None:
    with _cache_lock:
        _cache.clear()


class _PlainText(html2text.HTML2Text):
    def handle_data(self, data: str, entity_char: bool = False) -> None:
        # entity_char=True skips html2text's Markdown escaping (backslashes before "1." or "-").
        super().handle_data(data, entity_char=True)

    def handle_tag(self, tag: str, attrs: dict[str, str | None], start: bool) -> None:
        super().handle_tag(tag, attrs, start)
        if tag in ("td", "th") and not start:
            self.o(" ")  # with ignore_tables, cells would run together


_BLANK_LINES: Final = re.compile(r"\n{3,}")


def derive_text(html: str) -> str:
    """A plain-text part from HTML: links kept as [text](url), images as their alt text,
    no emphasis markers or Markdown escapes, layout tables flattened, no line wrapping."""
    converter = _PlainText()
    converter.body_width = 0
    converter.unicode_snob = True
    converter.images_to_alt = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    text = str(converter.handle(html))
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"
