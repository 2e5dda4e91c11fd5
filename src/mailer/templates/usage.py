"""Which variables a template reads, and where.

Walks the syntax tree the renderer parses (the same grammar and tag positions) and collects
the top-level names looked up in the root context: `{{name}}`, `{{name.field}}`,
`{{#if name}}`, `{{#each name}}`, `{{@root.name}}`, `{{../name}}` back at the root.
Names inside `{{#each}}`, `{{#with}}` and `{{#name}}` sections are relative to the item
and not counted; `@index`-style data variables are not variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from mailer.templates.rendering.parser import parse_part
from mailer.templates.rendering.scanner import line_col

# Provided by mailer for every message of a batch with unsubscribe on: the same one-click
# URL as the List-Unsubscribe header. Templates use it without declaring it.
UNSUBSCRIBE_URL: Final = "unsubscribe_url"
PROVIDED_VARIABLES: Final = frozenset({UNSUBSCRIBE_URL})
# Blocks whose body runs with the argument as its context.
_CONTEXT_BLOCKS: Final = frozenset({"each", "with"})
_SAME_CONTEXT_BLOCKS: Final = frozenset({"if", "unless"})


@dataclass(frozen=True, slots=True)
class VariableUse:
    name: str
    part: str  # subject, html or text
    line: int
    column: int

    def where(self) -> str:
        return f"{self.part} line {self.line}, column {self.column}"


class _Walker:
    def __init__(self, part: str, source: str, positions: list[int]) -> None:
        self.part = part
        self.source = source
        self.positions = positions
        self.tag_index = -1
        self.uses: list[VariableUse] = []

    def next_tag(self) -> None:
        self.tag_index += 1

    def found(self, name: str) -> None:
        index = self.tag_index
        pos = self.positions[index] if 0 <= index < len(self.positions) else 0
        line, column = line_col(self.source, pos)
        self.uses.append(VariableUse(name, self.part, line, column))

    def path(self, raw: Sequence[str], depth: int) -> None:
        segments = [s for s in raw if s not in ("", "this")]
        while segments and segments[0] == "@_parent":
            segments.pop(0)
            depth -= 1
        if not segments:
            return
        if segments[0] == "@root":
            depth, segments = 0, segments[1:]
            if not segments:
                return
        first = segments[0]
        if depth == 0 and not first.startswith("@"):
            self.found(first)

    def argument(self, arg: Any, depth: int) -> None:
        kind = arg[0]
        if kind == "path":
            self.path(arg[1], depth)
        elif kind == "subexpr":
            for sub in arg[2]:
                self.argument(sub, depth)

    def body(self, template: Sequence[Any], depth: int) -> None:
        for node in template[1:]:
            self.node(node, depth)

    def node(self, node: Any, depth: int) -> None:
        kind = node[0]
        if kind in ("literal", "newline", "whitespace"):
            return
        self.next_tag()
        if kind in ("expand", "escapedexpand"):
            raw_path, args = node[1][1], node[2]
            if args:  # {{lookup a b}}: the arguments are looked up
                for arg in args:
                    self.argument(arg, depth)
            else:
                self.path(raw_path, depth)
        elif kind in ("block", "invertedblock"):
            name, args, template, alternative = node[1], node[2], node[3], node[4]
            if args:
                for arg in args:
                    self.argument(arg, depth)
            else:
                self.path([name], depth)
            changes = name in _CONTEXT_BLOCKS or (
                name not in _SAME_CONTEXT_BLOCKS and kind == "block" and not args
            )
            self.body(template, depth + 1 if changes else depth)
            if alternative:
                self.next_tag()  # {{else}}
                self.body(alternative, depth)
            self.next_tag()  # {{/name}}


def find_variables(subject: str, html: str | None, text: str | None) -> list[VariableUse]:
    """Every root-level variable use, in order (part by part). The parts must parse (the
    template was compiled first)."""
    uses: list[VariableUse] = []
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        if not source:
            continue
        tree, scan = parse_part(source)
        walker = _Walker(part, source, [tag.pos for tag in scan.tags])
        walker.body(tree, 0)
        uses.extend(walker.uses)
    return uses


def used_names(uses: Sequence[VariableUse]) -> list[str]:
    """The distinct names, in order of first use."""
    return list(dict.fromkeys(use.name for use in uses))
