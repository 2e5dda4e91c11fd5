"""Email address validation and normalization, shared by ingest, suppressions and webhooks.

Normal form: lowercase, domain IDNA-encoded to ASCII. A compiled check accepts the common
ASCII case in well under a microsecond; everything else goes through email-validator.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from mailer.control_chars import CONTROL_CHARS

# Plain ASCII addresses (dot-atom local part, LDH labels); lengths checked separately.
_SIMPLE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


# One mailbox: `a@example.com`, `Name <a@example.com>` or `"Name, Inc." <a@example.com>`.
# An unquoted name may not hold RFC 5322 specials (, ; : @ < > ( ) [ ] \ "): with them a
# value like `Name <a@example.com>, b@evil.com` or `bob@x.org <alice@example.org>` is a list
# or a trick, which email.utils.parseaddr would silently turn into some other single address.
_MAILBOX = re.compile(
    r'\s*(?:(?P<name>[^,;:@<>()\[\]\\"]*?|"(?:[^"\\]|\\.)*")\s*<(?P<angle>[^<>\s]+)>'
    r'|(?P<bare>[^<>\s,;:()\[\]\\"]+))\s*'
)
MAILBOX_FORMAT = (
    "must be one address: 'a@example.com' or 'Name <a@example.com>' (quote a name holding "
    'any of , ; : @ < > ( ) [ ] \\ ")'
)


class InvalidAddress(ValueError):
    """The address is not acceptable; str() says why."""


def parse_mailbox(value: str) -> tuple[str, str]:
    """(display name, address) of a single mailbox written as MAILBOX_FORMAT says, the
    address not yet normalized; InvalidAddress for anything else (lists, stray addresses,
    comments, control characters)."""
    if CONTROL_CHARS.search(value):
        raise InvalidAddress("contains control characters (CR, LF, NUL or similar)")
    match = _MAILBOX.fullmatch(value)
    if match is None:
        raise InvalidAddress(MAILBOX_FORMAT)
    if match["bare"] is not None:
        return "", match["bare"]
    name = match["name"].strip()
    if name.startswith('"'):
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    return name, match["angle"]


def normalize_email(address: str) -> str:
    """Validate `address` and return its normal form, or raise InvalidAddress."""
    if not isinstance(address, str):
        raise InvalidAddress("must be a string")
    if CONTROL_CHARS.search(address):
        raise InvalidAddress("contains control characters (CR, LF, NUL or similar)")
    candidate = address.strip()
    if not candidate:
        raise InvalidAddress("is empty")
    if len(candidate) <= 254 and _SIMPLE.fullmatch(candidate):
        local, _, domain = candidate.rpartition("@")
        if len(local) <= 64 and len(domain) <= 253:
            return candidate.lower()
    try:
        result = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=False,
            test_environment=True,
            strict=True,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    domain = result.ascii_domain
    local = result.local_part
    return f"{local}@{domain}".lower()


def try_normalize_email(address: str) -> str | None:
    try:
        return normalize_email(address)
    except InvalidAddress:
        return None
