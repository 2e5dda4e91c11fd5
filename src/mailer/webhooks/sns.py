"""Amazon SNS HTTP(S) envelopes: parsing, signature verification, URL checks.

Every exception carries `status_code`, the HTTP status the endpoint should answer with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.jsonbody import check_depth

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
MESSAGE_TYPES = frozenset({NOTIFICATION, SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION})

_COMMON_FIELDS = (
    "Type",
    "MessageId",
    "TopicArn",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
)
_CONFIRMATION_FIELDS = ("Token", "SubscribeURL")

# Order matters: these are the exact string-to-sign keys (Subject only when present).
_NOTIFICATION_SIGNED = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_SIGNED = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)

# SNS's own hosts only: sns.<region>.amazonaws.com (commercial and GovCloud regions, e.g.
# us-east-1, us-gov-west-1) and sns.<region>.amazonaws.com.cn (China regions). Nothing
# looser: `sns.s3.amazonaws.com` is S3's host for a bucket named "sns", where anyone can
# publish a certificate.
_REGION = r"(?!cn-)[a-z]{2}(?:-gov)?-[a-z]+-[0-9]{1,2}"
_HOST = rf"sns\.(?:{_REGION}\.amazonaws\.com|cn-[a-z]+-[0-9]{{1,2}}\.amazonaws\.com\.cn)"
# Whole-URL patterns: no userinfo, port, query or fragment can slip through.
_CERT_URL = re.compile(rf"https://{_HOST}/SimpleNotificationService-[A-Za-z0-9]+\.pem")
_SUBSCRIBE_URL = re.compile(rf"https://{_HOST}/(?:\?[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*)?")

log = structlog.get_logger(__name__)

CERT_FETCH_TIMEOUT = 10.0
CERT_MAX_BYTES = 64 * 1024


class SnsError(Exception):
    status_code = 400


class SnsMessageInvalid(SnsError, ValueError):
    """Not a well-formed SNS envelope (answer 400)."""

    status_code = 400


class SnsSignatureInvalid(SnsError):
    """Signature, signature version or certificate URL not acceptable (answer 403)."""

    status_code = 403


class SnsTopicNotAllowed(SnsError):
    """The topic is not in SNS_TOPIC_ARNS (answer 403)."""

    status_code = 403


class SnsCertificateUnavailable(SnsError):
    """The signing certificate could not be fetched; SNS retries on 5xx (answer 503)."""

    status_code = 503


class SnsConfirmationFailed(SnsError):
    """Visiting the SubscribeURL failed (answer 502 so the operator sees it)."""

    status_code = 502


@dataclass(frozen=True, slots=True)
class SnsEnvelope:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    signature_version: str
    signature: str
    signing_cert_url: str
    subject: str | None = None
    token: str | None = None
    subscribe_url: str | None = None
    unsubscribe_url: str | None = None

    def string_to_sign(self) -> bytes:
        values = {
            "Message": self.message,
            "MessageId": self.message_id,
            "Subject": self.subject,
            "Timestamp": self.timestamp,
            "TopicArn": self.topic_arn,
            "Type": self.type,
            "Token": self.token,
            "SubscribeURL": self.subscribe_url,
        }
        keys = _NOTIFICATION_SIGNED if self.type == NOTIFICATION else _CONFIRMATION_SIGNED
        parts: list[str] = []
        for key in keys:
            value = values[key]
            if value is None:  # only Subject may be absent; parse_envelope ensures the rest
                continue
            parts.append(f"{key}\n{value}\n")
        return "".join(parts).encode("utf-8")

    def message_json(self) -> Any:
        """The Message field decoded as JSON, or None when it is not JSON."""
        try:
            data = orjson.loads(self.message)
        except orjson.JSONDecodeError:
            return None
        check_depth(data)
        return data


def load_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (SNS sends text/plain JSON)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SnsMessageInvalid(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnsMessageInvalid("body must be a JSON object")
    check_depth(data)
    return data


def parse_envelope(
    body: bytes | Mapping[str, Any], *, header_type: str | None = None
) -> SnsEnvelope:
    """Validate an SNS envelope. `header_type` is x-amz-sns-message-type, if sent."""
    data = load_json_object(body) if isinstance(body, bytes | bytearray) else dict(body)
    kind = data.get("Type")
    if kind not in MESSAGE_TYPES:
        raise SnsMessageInvalid(f"unknown or missing Type: {kind!r}")
    if header_type is not None and header_type != kind:
        raise SnsMessageInvalid(f"x-amz-sns-message-type {header_type!r} does not match Type")
    required = _COMMON_FIELDS + (_CONFIRMATION_FIELDS if kind != NOTIFICATION else ())
    missing = [name for name in required if not isinstance(data.get(name), str)]
    if missing:
        raise SnsMessageInvalid(f"missing or non-string fields: {', '.join(missing)}")
    for name in ("Subject", "UnsubscribeURL"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise SnsMessageInvalid(f"{name} must be a string")
    return SnsEnvelope(
        type=kind,
        message_id=data["MessageId"],
        topic_arn=data["TopicArn"],
        message=data["Message"],
        timestamp=data["Timestamp"],
        signature_version=data["SignatureVersion"],
        signature=data["Signature"],
        signing_cert_url=data["SigningCertURL"],
        subject=data.get("Subject") if kind == NOTIFICATION else None,
        token=data.get("Token"),
        subscribe_url=data.get("SubscribeURL"),
        unsubscribe_url=data.get("UnsubscribeURL"),
    )


def check_signing_cert_url(url: str) -> bool:
    return _CERT_URL.fullmatch(url) is not None


def check_subscribe_url(url: str) -> bool:
    return _SUBSCRIBE_URL.fullmatch(url) is not None


def is_topic_allowed(arn: str, allowed: list[str], *, any_when_unset: bool = True) -> bool:
    """True when `allowed` names `arn` exactly, or is empty and `any_when_unset`."""
    return arn in allowed if allowed else any_when_unset


async def _read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise SnsCertificateUnavailable("certificate too large")
    data = bytearray()
    async for chunk in response.content.iter_chunked(8192):
        data += chunk
        if len(data) > max_bytes:
            raise SnsCertificateUnavailable("certificate too large")
    return bytes(data)


async def fetch_certificate(
    url: str, *, timeout: float = CERT_FETCH_TIMEOUT, max_bytes: int = CERT_MAX_BYTES
) -> bytes:
    """GET `url` without following redirects. The URL must have been checked already."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                log.warning("sns_certificate_fetch_status", url=url, status=response.status)
                raise SnsCertificateUnavailable(_CERT_UNAVAILABLE)
            return await _read_limited(response, max_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The exception's text (addresses, resolver and TLS details) goes to the log only.
        log.warning("sns_certificate_fetch_failed", url=url, error=repr(exc))
        raise SnsCertificateUnavailable(_CERT_UNAVAILABLE) from None


_CERT_UNAVAILABLE = "the signing certificate could not be fetched; retry later"

CertFetcher = Callable[[str], Awaitable[bytes]]


class SnsVerifier:
    """Verifies SNS signatures; signing certificates are cached by URL (LRU, with a TTL).

    Concurrent verifications needing the same uncached certificate share one fetch.
    """

    def __init__(
        self,
        fetch_cert: CertFetcher | None = None,
        *,
        cache_size: int = 32,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch_cert or fetch_certificate
        self._cache_size = cache_size
        self._ttl = ttl
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}

    async def verify(self, env: SnsEnvelope) -> None:
        if env.signature_version == "1":
            algorithm: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303 - SNS v1 is SHA1
        elif env.signature_version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsSignatureInvalid(f"unsupported SignatureVersion {env.signature_version!r}")
        if not check_signing_cert_url(env.signing_cert_url):
            raise SnsSignatureInvalid("SigningCertURL is not an SNS certificate URL")
        try:
            signature = base64.b64decode(env.signature, validate=True)
        except (binascii.Error, ValueError):
            raise SnsSignatureInvalid("Signature is not base64") from None
        key = await self.public_key(env.signing_cert_url)
        try:
            key.verify(signature, env.string_to_sign(), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsSignatureInvalid("signature does not match") from None

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        cached = self._cache.get(url)
        if cached is not None:
            expires, key = cached
            if self._clock() < expires:
                self._cache.move_to_end(url)
                return key
            del self._cache[url]
        future = self._inflight.get(url)
        if future is None:
            future = asyncio.ensure_future(self._load(url))
            self._inflight[url] = future
            future.add_done_callback(lambda done: self._fetch_done(url, done))
        # shield: one caller being cancelled must not cancel the fetch the others wait for
        return await asyncio.shield(future)

    def _fetch_done(self, url: str, future: asyncio.Future[rsa.RSAPublicKey]) -> None:
        if self._inflight.get(url) is future:
            del self._inflight[url]
        if not future.cancelled():
            future.exception()  # retrieved here: every waiter may have been cancelled

    async def _load(self, url: str) -> rsa.RSAPublicKey:
        pem = await self._fetch(url)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsSignatureInvalid("signing certificate is not a PEM certificate") from None
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsSignatureInvalid("signing certificate does not hold an RSA key")
        self._cache[url] = (self._clock() + self._ttl, key)
        self._cache.move_to_end(url)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return key


HttpGet = Callable[[str], Awaitable[int]]


async def http_get_status(url: str, *, timeout: float = 10.0) -> int:
    """GET without redirects; the status code. Connection problems raise SnsConfirmationFailed."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url, allow_redirects=False) as response,
        ):
            await response.content.read(CERT_MAX_BYTES)
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("sns_subscribe_url_failed", url=url, error=repr(exc))
        raise SnsConfirmationFailed("the SubscribeURL could not be visited") from None


async def confirm_subscription(url: str, http_get: HttpGet | None = None) -> None:
    """Visit a SubscriptionConfirmation's SubscribeURL (only ever call it for that type)."""
    if not check_subscribe_url(url):
        raise SnsMessageInvalid("SubscribeURL is not an SNS URL")
    status = await (http_get or http_get_status)(url)
    if not 200 <= status < 300:
        raise SnsConfirmationFailed(f"SubscribeURL answered {status}")
