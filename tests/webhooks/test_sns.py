"""SNS envelopes: parsing, signature verification, URL rules, certificate fetching and cache."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from mailer.webhooks.sns import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    SnsCertificateUnavailable,
    SnsConfirmationFailed,
    SnsMessageInvalid,
    SnsSignatureInvalid,
    SnsVerifier,
    check_signing_cert_url,
    check_subscribe_url,
    confirm_subscription,
    fetch_certificate,
    http_get_status,
    is_topic_allowed,
    parse_envelope,
)
from tests.fixtures.sns_signing import BAD_CERT_URLS, CERT_URL, CertFetcher, SnsTestSigner, body

SIGNER = SnsTestSigner.shared()

GOOD_CERT_URLS = [
    CERT_URL,
    "https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-6aad65c2f9911b05cd53efda11f913f9.pem",
    "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    "https://sns.cn-northwest-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    "https://sns.ap-southeast-5.amazonaws.com/SimpleNotificationService-abc.pem",
]


@pytest.mark.parametrize("url", GOOD_CERT_URLS)
def test_good_cert_urls(url: str) -> None:
    assert check_signing_cert_url(url)


@pytest.mark.parametrize("url", BAD_CERT_URLS)
async def test_bad_cert_url_rejected_without_fetch(url: str) -> None:
    fetcher = CertFetcher(SIGNER)
    env = parse_envelope(body(SIGNER.notification({"x": 1}, cert_url=url)))
    assert not check_signing_cert_url(url)
    with pytest.raises(SnsSignatureInvalid):
        await SnsVerifier(fetcher).verify(env)
    assert fetcher.calls == []


def test_subscribe_url_rules() -> None:
    ok = "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37fb6"
    assert check_subscribe_url(ok)
    assert check_subscribe_url(
        "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription"
    )
    for bad in (
        ok.replace("https://", "http://"),
        ok.replace("amazonaws.com/", "amazonaws.com.evil.example/"),
        ok.replace("sns.us-west-2", "s3"),
        ok.replace("sns.us-west-2", "sns.s3"),
        ok.replace("https://", "https://u:p@"),
        ok.replace(".com/", ".com:444/"),
        ok + "#frag",
        ok + " x",
        "https://sns.us-west-2.amazonaws.com/elsewhere?Action=ConfirmSubscription",
    ):
        assert not check_subscribe_url(bad), bad


def test_topic_allowlist() -> None:
    arn = "arn:aws:sns:us-east-1:1:a"
    assert is_topic_allowed(arn, [])
    assert not is_topic_allowed(arn, [], any_when_unset=False)
    assert is_topic_allowed(arn, ["arn:aws:sns:us-east-1:1:b", arn])
    assert not is_topic_allowed(arn, ["arn:aws:sns:us-east-1:1:b"])
    assert not is_topic_allowed(arn + "x", [arn])


# --- parsing -------------------------------------------------------------------------------


def test_parse_notification_fields() -> None:
    raw = SIGNER.notification({"a": 1}, subject="Hello", version="1")
    env = parse_envelope(body(raw), header_type=NOTIFICATION)
    assert env.type == NOTIFICATION
    assert env.message_id == raw["MessageId"]
    assert env.subject == "Hello"
    assert env.signature_version == "1"
    assert env.message_json() == {"a": 1}
    assert env.token is None


@pytest.mark.parametrize(
    "field",
    [
        "Type",
        "MessageId",
        "TopicArn",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ],
)
def test_missing_notification_field(field: str) -> None:
    raw = SIGNER.notification({"a": 1})
    del raw[field]
    with pytest.raises(SnsMessageInvalid):
        parse_envelope(body(raw))


@pytest.mark.parametrize("field", ["Token", "SubscribeURL"])
@pytest.mark.parametrize("kind", [SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION])
def test_missing_confirmation_field(kind: str, field: str) -> None:
    raw = SIGNER.confirmation(kind)
    del raw[field]
    with pytest.raises(SnsMessageInvalid):
        parse_envelope(body(raw))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"string"',
        json.dumps({"Type": "Surprise"}).encode(),
        json.dumps(dict(SIGNER.notification({}), MessageId=5)).encode(),
        json.dumps(dict(SIGNER.notification({}), Subject=["x"])).encode(),
    ],
)
def test_malformed_bodies(payload: bytes) -> None:
    with pytest.raises(SnsMessageInvalid):
        parse_envelope(payload)
    assert issubclass(SnsMessageInvalid, ValueError)


def test_header_type_must_agree() -> None:
    with pytest.raises(SnsMessageInvalid):
        parse_envelope(body(SIGNER.notification({})), header_type=SUBSCRIPTION_CONFIRMATION)


# --- signatures ----------------------------------------------------------------------------


def _envelopes(version: str) -> list[dict[str, Any]]:
    return [
        SIGNER.notification({"notificationType": "Delivery"}, version=version),
        SIGNER.notification({"x": "ünïcødé"}, version=version, subject="Amazon SES Email Event"),
        SIGNER.confirmation(SUBSCRIPTION_CONFIRMATION, version=version),
        SIGNER.confirmation(UNSUBSCRIBE_CONFIRMATION, version=version),
    ]


@pytest.mark.parametrize("version", ["1", "2"])
async def test_valid_signatures(version: str) -> None:
    verifier = SnsVerifier(CertFetcher(SIGNER))
    for raw in _envelopes(version):
        await verifier.verify(parse_envelope(body(raw)))


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", '{"notificationType": "Bounce"}'),
        ("MessageId", "00000000-0000-0000-0000-000000000000"),
        ("Timestamp", "2020-01-01T00:00:00.000Z"),
        ("TopicArn", "arn:aws:sns:us-east-1:123456789012:other"),
        ("Subject", "added"),
    ],
)
async def test_tampered_notification(version: str, field: str, value: str) -> None:
    raw = SIGNER.notification({"notificationType": "Delivery"}, version=version)
    raw[field] = value
    with pytest.raises(SnsSignatureInvalid):
        await SnsVerifier(CertFetcher(SIGNER)).verify(parse_envelope(body(raw)))


async def test_removed_subject_and_tampered_confirmation() -> None:
    verifier = SnsVerifier(CertFetcher(SIGNER))
    raw = SIGNER.notification({}, subject="S")
    del raw["Subject"]
    with pytest.raises(SnsSignatureInvalid):
        await verifier.verify(parse_envelope(body(raw)))
    conf = SIGNER.confirmation()
    conf["SubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&x=1"
    with pytest.raises(SnsSignatureInvalid):
        await verifier.verify(parse_envelope(body(conf)))


async def test_forged_signature_other_key() -> None:
    forger = SnsTestSigner()
    raw = forger.notification({"notificationType": "Bounce"})
    with pytest.raises(SnsSignatureInvalid):
        await SnsVerifier(CertFetcher(SIGNER)).verify(parse_envelope(body(raw)))


async def test_version_mismatch_and_bad_signature_encoding() -> None:
    verifier = SnsVerifier(CertFetcher(SIGNER))
    v1 = SIGNER.notification({}, version="1")
    v1["SignatureVersion"] = "2"  # SHA1 signature checked as SHA256
    with pytest.raises(SnsSignatureInvalid):
        await verifier.verify(parse_envelope(body(v1)))
    for version in ("3", "", "01"):
        raw = dict(SIGNER.notification({}), SignatureVersion=version)
        with pytest.raises(SnsSignatureInvalid):
            await verifier.verify(parse_envelope(body(raw)))
    for signature in ("not base64!", "", base64.b64encode(b"short").decode()):
        raw = dict(SIGNER.notification({}), Signature=signature)
        with pytest.raises(SnsSignatureInvalid):
            await verifier.verify(parse_envelope(body(raw)))


async def test_certificate_not_pem_or_not_rsa() -> None:
    async def garbage(url: str) -> bytes:
        return b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"

    with pytest.raises(SnsSignatureInvalid):
        await SnsVerifier(garbage).verify(parse_envelope(body(SIGNER.notification({}))))


# --- certificate cache ---------------------------------------------------------------------


async def test_concurrent_verifies_share_one_fetch() -> None:
    gate = asyncio.Event()
    fetcher = CertFetcher(SIGNER, gate=gate)
    verifier = SnsVerifier(fetcher)
    envs = [parse_envelope(body(SIGNER.notification({"n": i}))) for i in range(10)]
    tasks = [asyncio.create_task(verifier.verify(e)) for e in envs]
    for _ in range(20):  # let every task reach the certificate lookup
        await asyncio.sleep(0)
    assert len(fetcher.calls) == 1
    gate.set()
    await asyncio.gather(*tasks)
    assert len(fetcher.calls) == 1
    await verifier.verify(envs[0])  # cached now
    assert len(fetcher.calls) == 1


async def test_cache_ttl_and_size() -> None:
    now = [0.0]
    fetcher = CertFetcher(SIGNER)
    verifier = SnsVerifier(fetcher, cache_size=2, ttl=100, clock=lambda: now[0])
    urls = [CERT_URL.replace("0123", f"{i}aaa") for i in range(3)]
    envs = [parse_envelope(body(SIGNER.notification({}, cert_url=u))) for u in urls]
    await verifier.verify(envs[0])
    await verifier.verify(envs[0])
    assert len(fetcher.calls) == 1
    now[0] = 101.0
    await verifier.verify(envs[0])  # expired
    assert len(fetcher.calls) == 2
    await verifier.verify(envs[1])
    await verifier.verify(envs[2])  # evicts urls[0], the least recently used
    assert len(fetcher.calls) == 4
    await verifier.verify(envs[2])
    await verifier.verify(envs[1])
    assert len(fetcher.calls) == 4
    await verifier.verify(envs[0])
    assert fetcher.calls == [urls[0], urls[0], urls[1], urls[2], urls[0]]


async def test_failed_fetch_is_not_cached() -> None:
    attempts: list[str] = []

    async def flaky(url: str) -> bytes:
        attempts.append(url)
        if len(attempts) == 1:
            raise SnsCertificateUnavailable("boom")
        return SIGNER.cert_pem

    verifier = SnsVerifier(flaky)
    env = parse_envelope(body(SIGNER.notification({})))
    with pytest.raises(SnsCertificateUnavailable):
        await verifier.verify(env)
    await verifier.verify(env)
    assert len(attempts) == 2


# --- the default HTTP fetcher and confirmation getter, against a local server -------------


@pytest.fixture
async def cert_server() -> AsyncIterator[str]:
    async def cert(_request: web.Request) -> web.Response:
        return web.Response(body=SIGNER.cert_pem)

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/cert.pem")

    async def big(_request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(_request)
        for _ in range(20):
            await response.write(b"x" * 8192)
        await response.write_eof()
        return response

    async def missing(_request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/cert.pem", cert)
    app.router.add_get("/redirect.pem", redirect)
    app.router.add_get("/big.pem", big)
    app.router.add_get("/missing.pem", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_fetch_certificate(cert_server: str) -> None:
    assert await fetch_certificate(f"{cert_server}/cert.pem") == SIGNER.cert_pem
    for path in ("redirect.pem", "big.pem", "missing.pem"):
        with pytest.raises(SnsCertificateUnavailable):
            await fetch_certificate(f"{cert_server}/{path}", max_bytes=64 * 1024)
    with pytest.raises(SnsCertificateUnavailable) as failed:
        await fetch_certificate("http://127.0.0.1:1/cert.pem")
    # The answer says what failed, not the client library's text (addresses, errno, ...).
    assert str(failed.value) == "the signing certificate could not be fetched; retry later"


async def test_http_get_status(cert_server: str) -> None:
    assert await http_get_status(f"{cert_server}/cert.pem") == 200
    assert await http_get_status(f"{cert_server}/redirect.pem") == 302
    with pytest.raises(SnsConfirmationFailed) as failed:
        await http_get_status("http://127.0.0.1:1/")
    assert str(failed.value) == "the SubscribeURL could not be visited"


async def test_confirm_subscription() -> None:
    visited: list[str] = []

    async def getter(url: str) -> int:
        visited.append(url)
        return 200 if "good" in url else 403

    good = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=good"
    await confirm_subscription(good, getter)
    with pytest.raises(SnsConfirmationFailed):
        await confirm_subscription(good.replace("good", "bad"), getter)
    with pytest.raises(SnsMessageInvalid):
        await confirm_subscription("https://evil.example/?Action=ConfirmSubscription", getter)
    assert visited == [good, good.replace("good", "bad")]
