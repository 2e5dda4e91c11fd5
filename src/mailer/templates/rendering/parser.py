"""The pybars3 grammar adapter: a template part (already scanned) -> pybars' syntax tree.

Only pybars' grammar is used (see the package docstring for why its code generator is
not). A failure is reported at the position in the original text, with the scanner's
reading of the tag where it happened."""

from __future__ import annotations

import bisect
import re
from typing import Any, Final, TypeAlias

from pybars import Compiler

from mailer.templates.rendering.scanner import (
    MAX_SOURCE_CHARS,
    Edit,
    Scan,
    SyntaxProblem,
    map_back,
    scan_tags,
    whitespace_control,
)

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
        raise SyntaxProblem(0, "template nested too deeply") from None
    stop = int(parser.input.position)
    furthest = error[0] if error and isinstance(error[0], int) else stop
    return tree, stop, max(stop, furthest)


def parse_part(source: str) -> tuple[Tree, Scan]:
    """Parse one part. PyMeta's parser is slow per character (~10 µs), so long literal runs
    are swapped for short placeholders first and put back in the tree; if a placeholder
    shows up anywhere but as a whole literal node, the original text is parsed instead."""
    if len(source) > MAX_SOURCE_CHARS:
        raise SyntaxProblem(MAX_SOURCE_CHARS, f"template too large (at most {MAX_SOURCE_CHARS})")
    scan = scan_tags(source)
    processed, ws_edits = whitespace_control(source)
    runs: list[str] = []
    run_edits: list[Edit] = []
    if _PLACEHOLDER_OPEN not in processed:
        shift = 0

        def substitute(match: re.Match[str]) -> str:
            nonlocal shift
            placeholder = f"{_PLACEHOLDER_OPEN}{len(runs)}{_PLACEHOLDER_CLOSE}"
            runs.append(match.group(0))
            run = match.group(0)
            run_edits.append(
                Edit(match.start() + shift, len(placeholder), match.start(), len(run), None)
            )
            shift += len(placeholder) - len(match.group(0))
            return placeholder

        fast = _RUN_RE.sub(substitute, processed)
    else:
        fast = processed
    try:
        tree, stop, furthest = _grammar_parse(fast)
    except SyntaxProblem:
        raise scan.problem or SyntaxProblem(0, "template nested too deeply") from None
    if stop < len(fast):
        in_source = map_back(map_back(furthest, run_edits), ws_edits)
        raise scan.problem or SyntaxProblem(in_source, _describe_failure(source, in_source, scan))
    if runs:
        restored = _restore_runs(tree, runs)
        if restored is None:
            tree, stop, furthest = _grammar_parse(processed)
            if stop < len(processed):  # pragma: no cover - the fast parse succeeded
                in_source = map_back(furthest, ws_edits)
                raise SyntaxProblem(in_source, _describe_failure(source, in_source, scan))
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


def _describe_failure(source: str, pos: int, scan: Scan) -> str:
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
