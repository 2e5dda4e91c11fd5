"""The plain-text part derived from a rendered HTML part."""

from __future__ import annotations

import re
from typing import Final

import html2text


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
