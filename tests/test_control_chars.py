"""One definition of "control character" (mailer/control_chars.py), applied to addresses,
display names, subjects and header values alike: C0 (TAB included), DEL, C1 and the Unicode
line/paragraph separators are refused everywhere; other non-ASCII text is not."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailer.addresses import InvalidAddress, normalize_email
from mailer.config import ConfigError
from mailer.control_chars import has_control_chars
from mailer.templates.schemas import TemplateCreate
from mailer.transports.base import PermanentError
from mailer.transports.mime import build_mime, format_address
from mailer.transports.ses import SesTransport
from tests.transports.helpers import make_message, make_settings

CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
CONTROLS += ["\u2028", "\u2029"]
ALLOWED = ["é", "\xa0", "\xa1", "—", "東", "😀", "\u200b"]


def _ids(chars: list[str]) -> list[str]:
    return [f"U+{ord(c):04X}" for c in chars]


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_the_definition(char: str) -> None:
    assert has_control_chars(f"a{char}b")


@pytest.mark.parametrize("char", ALLOWED, ids=_ids(ALLOWED))
def test_other_non_ascii_is_not_a_control(char: str) -> None:
    assert not has_control_chars(f"a{char}b")


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_addresses_refuse_controls(char: str) -> None:
    for value in (f"us{char}er@example.com", f"user@exa{char}mple.com", f"user@example.com{char}"):
        with pytest.raises(InvalidAddress, match="control characters"):
            normalize_email(value)


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_mime_refuses_controls_in_subject_header_value_and_display_name(char: str) -> None:
    for overrides in (
        {"subject": f"Hello{char}there"},
        {"headers": {"List-Unsubscribe": f"<https://x.test/u>{char}"}},
        {"from_addr": f"Team{char}Name <sender@example.com>"},
        {"reply_to": (f"Help{char} <help@example.com>",)},
    ):
        with pytest.raises(PermanentError):
            build_mime(make_message(**overrides))
    with pytest.raises(PermanentError):
        format_address(f"Na{char}me <a@example.com>", "To")


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_ses_refuses_controls_in_subject_header_value_and_display_name(
    char: str, tmp_path: Path
) -> None:
    transport = SesTransport(make_settings(tmp_path, mail_transport="ses"))
    for overrides in (
        {"subject": f"Hello{char}there"},
        {"headers": {"List-Unsubscribe": f"<https://x.test/u>{char}"}},
        {"from_addr": f"Team{char}Name <sender@example.com>"},
    ):
        with pytest.raises(PermanentError):
            transport.build_request(make_message(**overrides))


@pytest.mark.parametrize("char", ALLOWED, ids=_ids(ALLOWED))
def test_non_ascii_text_still_goes_out(char: str, tmp_path: Path) -> None:
    message = make_message(subject=f"Hello{char}there", from_addr=f"Team{char} <s@example.com>")
    assert b"Subject: =?utf-8?" in build_mime(message)
    request = SesTransport(make_settings(tmp_path, mail_transport="ses")).build_request(message)
    assert request["Content"]["Simple"]["Subject"]["Data"] == f"Hello{char}there"


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_template_subject_and_name_refuse_controls(char: str) -> None:
    for fields in ({"name": "n", "subject": f"Hi{char}"}, {"name": f"n{char}"}):
        with pytest.raises(ValidationError, match=r"control characters|NUL"):
            TemplateCreate.model_validate({**fields, "text": "body"})


@pytest.mark.parametrize("char", CONTROLS, ids=_ids(CONTROLS))
def test_mail_from_setting_refuses_controls(char: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAIL_FROM: contains control characters"):
        make_settings(tmp_path, mail_from=f"Mailer{char} <mailer@example.com>")
