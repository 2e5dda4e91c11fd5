"""The one definition of "control character" for every value that becomes (part of) an
email header or an address: recipient and sender addresses, display names, subjects,
template names, extra header values.

Refused: all of C0 (U+0000-U+001F, TAB included), DEL (U+007F), all of C1
(U+0080-U+009F) and the Unicode line and paragraph separators U+2028/U+2029.

- CR and LF would end the header line (header injection); NUL and the other C0 controls
  are not allowed in a header field body at all (RFC 5322 2.2: printable US-ASCII and
  WSP only).
- TAB is WSP, so RFC 5322 allows it inside an unstructured field such as Subject; but no
  caller needs it (the values come on one line from JSON or a template), a folding step
  may turn it into a line break, and mail clients show it differently. A subject with a
  TAB is refused rather than sent in a form nobody meant.
- C1 controls, U+2028 and U+2029 are not ASCII, so they would go out RFC 2047-encoded
  and survive the header rules, but `str.splitlines()` and the email package's header
  folding treat U+0085, U+2028 and U+2029 as line breaks, and clients render them as such.
"""

from __future__ import annotations

import re
from typing import Final

CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_chars(value: str) -> bool:
    return CONTROL_CHARS.search(value) is not None
