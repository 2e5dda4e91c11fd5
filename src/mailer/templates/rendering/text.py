"""The plain-text part derived from a rendered HTML part.

html2text needs ~1-2.5 µs per character (a 1 MB page: ~1-2.5 s of CPU), so the input is
bounded: html longer than MAX_DERIVE_INPUT_CHARS gets no derived text (a template whose
html source is longer must bring its own text part: 422 at save; a message whose rendered
html outgrows it fails to render). Callers run derivation off the event loop.
"""

from __future__ import annotations

import re
from typing import Final

import html2text

from mailer.templates.rendering.compiled import TemplateRenderError

MAX_DERIVE_INPUT_CHARS: Final = 250_000


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
    no emphasis markers or Markdown escapes, layout tables flattened, no line wrapping.
    Raises TemplateRenderError (part "text") for html over MAX_DERIVE_INPUT_CHARS."""
    if len(html) > MAX_DERIVE_INPUT_CHARS:
        raise TemplateRenderError(
            "text",
            f"the html is longer than {MAX_DERIVE_INPUT_CHARS:,} characters, too long to "
            "derive the text part from: give the template a text part",
        )
    converter = _PlainText()
    converter.body_width = 0
    converter.unicode_snob = True
    converter.images_to_alt = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    text = str(converter.handle(html))
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"
