"""The fast SigV4 signer gives exactly the headers botocore's SigV4Auth gives for the same
request at the same instant. A difference would only show at run time as a silent fallback
to botocore's signer (`PostSigner.verify`), so it must fail here."""

from __future__ import annotations

import datetime as dt

import botocore.auth
import orjson
import pytest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.transports.ses import SEND_PATH, SIGNING_NAME, USER_AGENT
from mailer.transports.sigv4 import PostSigner

NOW = dt.datetime(2024, 5, 1, 23, 59, 59)  # botocore works in naive UTC
KEYS = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)
# Temporary credentials: the token is signed too (and has characters URL-encoding would alter).
SESSION = ReadOnlyCredentials(
    "ASIAEXAMPLE", "secret/with+chars=", "FwoGZXIvYXdzEJr//////////wEaDH+token/with=padding=="
)
BODY = orjson.dumps(
    {
        "FromEmailAddress": "sender@example.com",
        "Destination": {"ToAddresses": ["rcpt@example.com"]},
        "Content": {"Simple": {"Subject": {"Data": "Hello", "Charset": "UTF-8"}}},
    }
)
NON_ASCII_BODY = orjson.dumps(
    {
        "FromEmailAddress": "=?utf-8?q?J=C3=BCrgen?= <sender@example.com>",
        "Content": {"Simple": {"Subject": {"Data": "Grüße, 東京 😀", "Charset": "UTF-8"}}},
    }
)
ENDPOINTS = [
    "https://email.eu-west-1.amazonaws.com",
    "http://127.0.0.1:4566",  # a port: it is part of the signed Host
    "https://ses.internal.example:8443",
    "https://email.us-east-1.amazonaws.com:443",  # a default port: not in Host
    "http://[::1]:5000",
    "http://localhost:4566/ses-proxy",  # a path prefix before SendEmail's path
]


def _at(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[dt.datetime]:
    """botocore's clock, settable by the test."""
    clock = [NOW]
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: clock[0])
    return clock


def _signer(endpoint: str, region: str = "eu-west-1") -> PostSigner:
    return PostSigner(endpoint + SEND_PATH, region, SIGNING_NAME, USER_AGENT)


def _assert_same(signer: PostSigner, creds: ReadOnlyCredentials, body: bytes, when: str) -> None:
    reference = signer.botocore_headers(creds, body)
    assert reference["X-Amz-Date"] == when  # botocore signed at the frozen instant
    assert signer.fast_headers(creds, body, when) == reference


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("creds", [KEYS, SESSION], ids=["keys", "session-token"])
@pytest.mark.parametrize("body", [BODY, NON_ASCII_BODY, b""], ids=["ascii", "non-ascii", "empty"])
def test_fast_signer_matches_botocore(
    frozen: list[dt.datetime], endpoint: str, creds: ReadOnlyCredentials, body: bytes
) -> None:
    _assert_same(_signer(endpoint), creds, body, _at(NOW))


def test_signed_headers_name_the_token_only_when_there_is_one(frozen: list[dt.datetime]) -> None:
    signer = _signer(ENDPOINTS[1])
    plain = signer.fast_headers(KEYS, BODY, _at(NOW))
    temporary = signer.fast_headers(SESSION, BODY, _at(NOW))
    assert "SignedHeaders=content-type;host;x-amz-date," in plain["Authorization"]
    assert "X-Amz-Security-Token" not in plain
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"
        in (temporary["Authorization"])
    )
    assert temporary["X-Amz-Security-Token"] == SESSION.token


def test_the_cached_signing_key_follows_the_day_and_the_secret(frozen: list[dt.datetime]) -> None:
    signer = _signer(ENDPOINTS[0])
    for moment in (NOW, NOW + dt.timedelta(seconds=1), NOW + dt.timedelta(days=1)):
        frozen[0] = moment
        _assert_same(signer, KEYS, BODY, _at(moment))
        _assert_same(signer, SESSION, BODY, _at(moment))  # another secret, same day


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(),
    region=st.sampled_from(["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"]),
    token=st.one_of(st.none(), st.text(alphabet="ABCxyz019+/= ", min_size=1, max_size=40)),
)
def test_fast_signer_matches_botocore_on_any_body(
    text: str, region: str, token: str | None
) -> None:
    # st.text() includes surrogates orjson refuses: SES bodies are valid UTF-8 JSON.
    try:
        body = orjson.dumps({"Data": text})
    except orjson.JSONEncodeError:
        return
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "secret", token)
    signer = _signer("http://127.0.0.1:4566", region)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: NOW)
        _assert_same(signer, creds, body, _at(NOW))


def test_verify_accepts_the_fast_signer() -> None:
    signer = _signer(ENDPOINTS[1])
    assert signer.verify(SESSION)
    assert not signer.use_botocore


def test_verify_falls_back_to_botocore_on_a_difference(
    frozen: list[dt.datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = _signer(ENDPOINTS[1])
    real = signer.fast_headers

    def off_by_one_path(
        creds: ReadOnlyCredentials, body: bytes, amz_date: str | None = None
    ) -> dict[str, str]:
        signer._path += "x"  # a canonicalization bug: the signature differs
        try:
            return real(creds, body, amz_date)
        finally:
            signer._path = signer._path[:-1]

    monkeypatch.setattr(signer, "fast_headers", off_by_one_path)
    assert not signer.verify(KEYS)
    assert signer.use_botocore
    assert signer.headers(KEYS, BODY) == signer.botocore_headers(KEYS, BODY)
