"""Amazon SES v2 SendEmail: botocore's credential chain, the fast SigV4 signer
(`transports/sigv4.py`) and a pool of keep-alive HTTP/1.1 connections
(`transports/http1.py`) for the sends.

Measured on the benchmark machine, aiobotocore's `send_email` costs ~1.6 ms of CPU per call
(parameter validation, event hooks, user-agent building, its request/response pipeline),
more than the whole send path of one email may cost. SendEmail is one rest-json POST whose
body is exactly the request dict, so sends go out directly: the body is serialized with
orjson, signed (`PostSigner`) with credentials from botocore's chain (explicit keys, or the
session's providers with refresh), and written in one piece on a pooled connection
(`HttpPool`, up to WORKER_CONCURRENCY connections, ~0.05 ms of CPU a send). The
aiobotocore client is created only when needed: to resolve the endpoint when
AWS_ENDPOINT_URL is unset, for GetAccount, and for the sends themselves when a proxy
(HTTPS_PROXY, ...) applies to the endpoint, which only botocore's stack honours.

No retries below mailer's own policy: a POST is never resent by the pool, and a request
SES accepted but whose answer was lost must not be sent again silently (botocore's retries
are off on the aiobotocore path too). Errors are read as botocore reads rest-json errors
(x-amzn-ErrorType header or `__type`/`code` in the body) and mapped to mailer's classes.

Messages go as `Content.Simple` (SES builds the MIME); a message with attachments goes as
`Content.Raw`, built by `transports/mime.py`. SES replaces any Message-ID we
give with its own and returns it as MessageId, which is also what bounce notifications
carry, so our Message-ID is not sent; the provider id is SES's MessageId.
"""

from __future__ import annotations

import base64
import inspect
import re
from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import orjson
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from mailer import __version__
from mailer.config import Settings
from mailer.transports.base import (
    OutgoingMessage,
    PermanentError,
    Ready,
    SendingPausedError,
    SendResult,
    ThrottledError,
    TransientError,
    TransportError,
)
from mailer.transports.http1 import HttpPool
from mailer.transports.mime import (
    RESERVED_HEADERS,
    build_mime,
    check_header_name,
    check_header_value,
    clean_tags,
    encode_text_header,
    format_address,
)
from mailer.transports.sigv4 import PostSigner

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_HEADERS = 15  # SES limit for Content.Simple.Headers
DEFAULT_THROTTLE_DELAY = 1.0
SEND_PATH = "/v2/email/outbound-emails"
SIGNING_NAME = "ses"  # sesv2's SigV4 signing name
USER_AGENT = f"mailer/{__version__}"

THROTTLE_CODES = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "BadRequestException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",
        "LimitExceededException",
        "AccessDeniedException",
        "ValidationException",
    }
)
PAUSED_CODES = frozenset({"AccountSuspendedException", "SendingPausedException"})
# The credentials themselves are wrong: no message can go out until someone fixes them.
AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)

_session: AioSession | None = None


def _shared_session() -> AioSession:
    """One botocore session per process: it caches the loaded service model (~0.3 s)."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


_CLEAN_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")


def sanitize_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """EmailTags: names and values limited to [A-Za-z0-9_-] and 256 characters."""
    match = _CLEAN_TAG.fullmatch
    if all(match(name) and match(value) for name, value in tags.items()):
        return [{"Name": name, "Value": value} for name, value in tags.items()]  # the usual
    return [{"Name": name, "Value": value} for name, value in clean_tags(tags)]


def classify_client_error(
    code: str, status: int | None, message: str, retry_after: str | None = None
) -> TransportError:
    """Map an SES error code / HTTP status to mailer's error classes."""
    text = f"SES {code}: {message}" if message else f"SES {code}"
    if code in THROTTLE_CODES or status == 429:
        delay = DEFAULT_THROTTLE_DELAY
        if retry_after:
            with suppress(ValueError):
                delay = max(float(retry_after), 0.0)
        return ThrottledError(text, code=code, retry_after=delay)
    if code in PAUSED_CODES or code in AUTH_CODES:
        return SendingPausedError(text, code=code)
    if code in PERMANENT_CODES:
        return PermanentError(text, code=code)
    if status is not None and status >= 500:
        return TransientError(text, code=code or str(status))
    if status == 408:
        return TransientError(text, code=code or "408")
    return PermanentError(text, code=code or (str(status) if status else None))


def _from_client_error(exc: ClientError) -> TransportError:
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    headers = meta.get("HTTPHeaders", {}) or {}
    return classify_client_error(
        str(error.get("Code", "")),
        meta.get("HTTPStatusCode"),
        str(error.get("Message", "")),
        headers.get("retry-after"),
    )


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> TransportError:
    """A non-2xx SendEmail answer, read the way botocore reads rest-json errors. `headers`
    has lower-case names."""
    data: Any = {}
    with suppress(orjson.JSONDecodeError):
        data = orjson.loads(body) if body else {}
    if not isinstance(data, dict):
        data = {}
    code = headers.get("x-amzn-errortype") or str(data.get("__type") or data.get("code") or "")
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(data.get("message") or data.get("Message") or "")
    return classify_client_error(code, status, message, headers.get("retry-after"))


class _Credentials:
    """Frozen credentials for each send, from explicit keys or botocore's provider chain
    (refreshed by botocore when they expire)."""

    def __init__(self, explicit: ReadOnlyCredentials | None) -> None:
        self._explicit = explicit
        self._source: Any = None

    async def load(self) -> None:
        if self._explicit is None:
            self._source = await _shared_session().get_credentials()

    async def frozen(self) -> ReadOnlyCredentials:
        if self._explicit is not None:
            return self._explicit
        if self._source is None:
            raise NoCredentialsError()
        got = self._source.get_frozen_credentials()
        frozen: ReadOnlyCredentials = await got if inspect.isawaitable(got) else got
        return frozen


def _proxied(url: str) -> bool:
    """Whether the environment routes this URL through a proxy (HTTPS_PROXY etc.), which
    botocore honours: such sends keep going through aiobotocore."""
    parts = urlsplit(url)
    proxies = getproxies()
    return bool(proxies.get(parts.scheme)) and not proxy_bypass(parts.hostname or "")


class SesTransport:
    name = "ses"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack: AsyncExitStack | None = None
        self._client: Any = None  # aiobotocore sesv2 client, created when first needed
        self._pool: HttpPool | None = None  # None: sends go through aiobotocore (proxy)
        self._credentials: _Credentials | None = None
        self._signer: PostSigner | None = None
        self._explicit: dict[str, str] = {}

    async def start(self) -> None:
        if self._stack is not None:
            return
        s = self._settings
        explicit = None
        if s.aws_access_key_id is not None and s.aws_secret_access_key is not None:
            self._explicit = {
                "aws_access_key_id": s.aws_access_key_id.get_secret_value(),
                "aws_secret_access_key": s.aws_secret_access_key.get_secret_value(),
            }
            explicit = ReadOnlyCredentials(
                self._explicit["aws_access_key_id"], self._explicit["aws_secret_access_key"], None
            )
        self._stack = AsyncExitStack()
        try:
            # The aiobotocore client (sesv2 model and endpoint rules: ~12 MB, ~0.3 s) is only
            # needed to resolve the endpoint, for GetAccount and for proxied sends.
            endpoint = s.aws_endpoint_url or str((await self._botocore()).meta.endpoint_url)
            url = endpoint.rstrip("/") + SEND_PATH
            self._signer = PostSigner(url, s.aws_region, SIGNING_NAME, USER_AGENT)
            self._credentials = _Credentials(explicit)
            await self._credentials.load()
            with suppress(BotoCoreError):  # no credentials yet: each send reports it
                self._signer.verify(await self._credentials.frozen())
            if _proxied(url):
                await self._botocore()
            else:
                pool = HttpPool(
                    url,
                    max(s.worker_concurrency, 10),
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                )
                self._stack.callback(pool.close)
                self._pool = pool
        except BaseException:
            await self.close()
            raise

    async def _botocore(self) -> Any:
        if self._client is None:
            if self._stack is None:
                raise RuntimeError("SesTransport.start() was not called")
            s = self._settings
            config = AioConfig(
                region_name=s.aws_region,
                max_pool_connections=10,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
            self._client = await self._stack.enter_async_context(
                _shared_session().create_client(
                    "sesv2",
                    region_name=s.aws_region,
                    endpoint_url=s.aws_endpoint_url,
                    config=config,
                    **self._explicit,
                )
            )
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client, self._pool = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    def build_request(self, message: OutgoingMessage) -> dict[str, Any]:
        """The SendEmail parameters for one message (no network)."""
        if message.html is None and message.text is None:
            raise PermanentError("message has neither text nor html", code="invalid_content")
        # Non-ASCII display names must reach SES as RFC 2047 encoded words.
        from_addr = format_address(message.from_addr, "From")
        to = format_address(message.to, "To")
        reply_to = [format_address(addr, "Reply-To") for addr in message.reply_to]
        check_header_value("Subject", message.subject)

        headers: list[dict[str, str]] = []
        for name, value in message.headers.items():
            check_header_name(name)
            check_header_value(name, value)
            if name.lower() in RESERVED_HEADERS:
                raise PermanentError(f"header {name} cannot be overridden", code="invalid_header")
            encoded = encode_text_header(value).replace("\r\n", "")
            if len(name) + len(encoded) > 996:
                raise PermanentError(f"header {name} too long for SES", code="invalid_header")
            headers.append({"Name": name, "Value": encoded})
        if len(headers) > MAX_HEADERS:
            raise PermanentError("more than 15 extra headers", code="invalid_header")

        content: dict[str, Any]
        if message.attachments:
            # SES's Simple content carries no attachments: the whole MIME message goes raw
            # (SES still replaces the Message-ID and returns its own).
            content = {"Raw": {"Data": base64.b64encode(build_mime(message)).decode()}}
        else:
            content = {"Simple": self._simple(message, headers)}
        request: dict[str, Any] = {
            "FromEmailAddress": from_addr,
            "Destination": {"ToAddresses": [to]},
            "Content": content,
        }
        if reply_to:
            request["ReplyToAddresses"] = reply_to
        tags = sanitize_tags(message.tags)
        if tags:
            request["EmailTags"] = tags
        if self._settings.ses_configuration_set:
            request["ConfigurationSetName"] = self._settings.ses_configuration_set
        return request

    @staticmethod
    def _simple(message: OutgoingMessage, headers: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if message.text is not None:
            body["Text"] = {"Data": message.text, "Charset": "UTF-8"}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        simple: dict[str, Any] = {
            "Subject": {"Data": message.subject, "Charset": "UTF-8"},
            "Body": body,
        }
        if headers:
            simple["Headers"] = headers
        return simple

    async def _signed_headers(self, body: bytes) -> dict[str, str]:
        assert self._credentials is not None and self._signer is not None
        try:
            creds = await self._credentials.frozen()
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SendingPausedError(f"no AWS credentials: {exc}", code="NoCredentials") from exc
        except BotoCoreError as exc:  # a credential provider failed (metadata service, STS)
            raise TransientError(f"AWS credentials: {exc}", code=type(exc).__name__) from exc
        return self._signer.headers(creds, body)

    async def send(self, message: OutgoingMessage, ready: Ready | None = None) -> SendResult:
        if self._stack is None:
            raise RuntimeError("SesTransport.start() was not called")
        request = self.build_request(message)
        if self._pool is None:
            if ready is not None:
                await ready()
            return await self._send_botocore(request)
        body = orjson.dumps(request)
        headers = await self._signed_headers(body)
        try:
            response = await self._pool.post(headers, body, ready)
        except (TimeoutError, OSError) as exc:
            # Connection refused/reset or dropped, connect and read timeouts, TLS failures.
            raise TransientError(f"SES request failed: {exc!r}", code=type(exc).__name__) from exc
        if not 200 <= response.status < 300:
            raise parse_error(response.status, response.headers, response.body)
        message_id = None
        with suppress(orjson.JSONDecodeError, AttributeError):
            message_id = orjson.loads(response.body).get("MessageId")
        if not message_id:
            raise TransientError("SES answered without a MessageId", code="NoMessageId")
        return SendResult(provider_message_id=str(message_id))

    async def _send_botocore(self, request: dict[str, Any]) -> SendResult:
        """The same send through aiobotocore (~1.6 ms of CPU), when a proxy is configured."""
        raw = request["Content"].get("Raw")
        if raw is not None:  # botocore encodes blobs itself
            request = {**request, "Content": {"Raw": {"Data": base64.b64decode(raw["Data"])}}}
        try:
            response = await (await self._botocore()).send_email(**request)
        except ClientError as exc:
            raise _from_client_error(exc) from exc
        except ParamValidationError as exc:
            raise PermanentError(f"invalid SES request: {exc}", code="ParamValidation") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SendingPausedError(f"no AWS credentials: {exc}", code="NoCredentials") from exc
        except BotoCoreError as exc:
            raise TransientError(f"SES request failed: {exc}", code=type(exc).__name__) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"SES request failed: {exc!r}", code=type(exc).__name__) from exc
        message_id = response.get("MessageId")
        if not message_id:
            raise TransientError("SES answered without a MessageId", code="NoMessageId")
        return SendResult(provider_message_id=str(message_id))

    async def max_send_rate(self) -> float | None:
        try:
            account = await (await self._botocore()).get_account()
        except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError) as exc:
            log.warning("ses_get_account_failed", error=str(exc))
            return None
        rate = account.get("SendQuota", {}).get("MaxSendRate")
        if rate is None or float(rate) <= 0:
            return None
        return float(rate)
