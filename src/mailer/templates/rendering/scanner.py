"""The first pass over a template part: pybars' whitespace control (`{{~`, standalone
block lines) with a map back to the original positions, and a scan of the tags that checks
the block structure and the size limits, so that errors name a line and column of what the
client wrote and a template too large for the parser is refused before it is parsed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, NamedTuple

MAX_SOURCE_CHARS: Final = 1_000_000
# pybars' PEG parser needs ~0.5 ms per tag and recurses ~15 frames per nesting level.
MAX_TAGS: Final = 2_000
MAX_NESTING: Final = 24


class SyntaxProblem(Exception):
    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


# --------------------------------------------------------------------------- source mapping


class Edit(NamedTuple):
    """A region of the original text replaced in the processed text."""

    new_start: int
    new_len: int
    old_start: int
    old_len: int
    # For each processed character of the region, its offset in the original region.
    offsets: tuple[int, ...] | None


def map_back(pos: int, edits: Sequence[Edit]) -> int:
    shift = 0
    for edit in edits:
        if pos < edit.new_start:
            break
        if pos < edit.new_start + edit.new_len:
            inner = edit.offsets[pos - edit.new_start] if edit.offsets else 0
            return edit.old_start + inner
        shift = edit.old_start + edit.old_len - (edit.new_start + edit.new_len)
    return pos + shift


def line_col(source: str, pos: int) -> tuple[int, int]:
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


def whitespace_control(source: str) -> tuple[str, list[Edit]]:
    out: list[str] = []
    edits: list[Edit] = []
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
        edits.append(Edit(new_pos, len(replacement), match.start(), len(text), tuple(offsets)))
        out.append(replacement)
        new_pos += len(replacement)
        last = match.end()
    out.append(source[last:])
    return "".join(out), edits


# --------------------------------------------------------------------------- tag scanner


class Tag(NamedTuple):
    pos: int
    kind: str  # "#", "^", "/", ">", "!", "{", "&", "raw" or "" (plain)
    name: str


_TAG_NAME_RE: Final = re.compile(r"\s*([^\s}~()]*)")


class Scan(NamedTuple):
    tags: list[Tag]
    problem: SyntaxProblem | None


def _tag_label(tag: Tag) -> str:
    return "{{" + (tag.kind if tag.kind not in ("", "raw") else "") + tag.name + "}}"


def scan_tags(source: str) -> Scan:
    """Find tags and check block structure. Approximate (string arguments may confuse it):
    the grammar decides what parses; this gives positions and readable messages."""
    tags: list[Tag] = []
    stack: list[Tag] = []
    problem: SyntaxProblem | None = None
    n = len(source)
    pos = source.find("{{")
    while pos >= 0:
        if len(tags) >= MAX_TAGS:
            raise SyntaxProblem(pos, f"too many tags (at most {MAX_TAGS})")
        if source.startswith("{{{{", pos):
            name_match = _TAG_NAME_RE.match(source, pos + 4)
            name = name_match.group(1) if name_match else ""
            tags.append(Tag(pos, "raw", name))
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
            tags.append(Tag(pos, kind, ""))
            pos = source.find("{{", end + 2) if end >= 0 else -1
            continue
        if _paren_depth(source, j, end if end >= 0 else n) > MAX_NESTING:
            raise SyntaxProblem(pos, f"subexpressions nested too deeply (at most {MAX_NESTING})")
        name_match = _TAG_NAME_RE.match(source, j)
        tag = Tag(pos, kind, name_match.group(1) if name_match else "")
        tags.append(tag)
        if problem is None:
            problem = _check_structure(tag, stack)
        pos = source.find("{{", end + 2) if end >= 0 else -1
    if problem is None and stack:
        opener = stack[-1]
        problem = SyntaxProblem(opener.pos, f"block {_tag_label(opener)} is never closed")
    return Scan(tags, problem)


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


def _check_structure(tag: Tag, stack: list[Tag]) -> SyntaxProblem | None:
    is_else = (tag.kind == "" and tag.name == "else") or (tag.kind == "^" and tag.name == "")
    if tag.kind in ("#", "^") and not is_else:
        stack.append(tag)
        if len(stack) > MAX_NESTING:
            raise SyntaxProblem(tag.pos, f"blocks nested too deeply (at most {MAX_NESTING})")
    elif tag.kind == "/":
        if not stack:
            return SyntaxProblem(tag.pos, f"{{{{/{tag.name}}}}} closes no open block")
        opener = stack.pop()
        if opener.name != tag.name:
            return SyntaxProblem(
                tag.pos, f"{{{{/{tag.name}}}}} does not match the open block {_tag_label(opener)}"
            )
    elif is_else and not stack:
        return SyntaxProblem(tag.pos, "{{else}} outside a block")
    return None
