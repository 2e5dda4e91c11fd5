"""Amazon SES v2 SendEmail: botocore's credential chain and SigV4 signer, a pooled aiohttp
client for the sends.

Measured on the benchmark machine, aiobotocore's `send_email` costs ~1.6 ms of CPU per call
(parameter validation, event hooks, user-agent building, its request/response pipeline),
more than the whole send path of one email may cost. SendEmail is one rest-json POST whose
body is exactly the request dict, so sends go out directly: the body is serialized with
orjson, signed by botocore's `SigV4Auth` with credentials from botocore's chain (explicit
keys, or the session's providers with refresh), and posted over one aiohttp session whose
pool holds WORKER_CONCURRENCY keep-alive connections (~0.1 ms of CPU per send). The
aiobotocore client is still created, for the endpoint (botocore's resolver) and for the
rare calls (GetAccount).

No retries below mailer's own policy: aiohttp never resends a POST by itself, and a request
SES accepted but whose answer was lost must not be sent again silently. Errors are parsed
as botocore parses rest-json errors (x-amzn-ErrorType header or `__type`/`code` in the body)
and mapped to mailer's error classes.

Messages go as `Content.Simple` (SES builds the MIME). SES replaces any Message-ID we
give with its own and returns it as MessageId, which is also what bounce notifications
carry, so our Message-ID is not sent; the provider id is SES's MessageId.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from typing import Any

import aiohttp
import orjson
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from mailer import __version__
from mailer.config import Settings
from mailer.transports.base import (
    OutgoingMessage,
    PermanentError,
    SendingPausedError,
    SendResult,
    ThrottledError,
    TransientError,
    TransportError,
)
from mailer.transports.mime import (
    RESERVED_HEADERS,
    check_header_name,
    check_header_value,
    clean_tags,
    encode_text_header,
    format_address,
)

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_HEADERS = 15  # SES limit for Content.Simple.Headers
DEFAULT_THROTTLE_DELAY = 1.0
SEND_PATH = "/v2/email/outbound-emails"
SIGNING_NAME = "ses"  # sesv2's SigV4 signing name
USER_AGENT = f"mailer/{__version__} aiohttp/{aiohttp.__version__}"

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


def sanitize_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """EmailTags: names and values limited to [A-Za-z0-9_-] and 256 characters."""
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
    """A non-2xx SendEmail answer, read the way botocore reads rest-json errors."""
    data: Any = {}
    with suppress(orjson.JSONDecodeError):
        data = orjson.loads(body) if body else {}
    if not isinstance(data, dict):
        data = {}
    code = headers.get("x-amzn-ErrorType") or str(data.get("__type") or data.get("code") or "")
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(data.get("message") or data.get("Message") or "")
    return classify_client_error(code, status, message, headers.get("Retry-After"))


class _Credentials:
    """Frozen credentials for each send, from explicit keys or botocore's provider chain
    (refreshed by botocore when they expire); one SigV4 signer per credential set."""

    def __init__(self, explicit: ReadOnlyCredentials | None, region: str) -> None:
        self._explicit = explicit
        self._source: Any = None
        self._region = region
        self._signer: SigV4Auth | None = None

    async def load(self) -> None:
        if self._explicit is None:
            self._source = await _shared_session().get_credentials()

    async def signer(self) -> SigV4Auth:
        frozen = self._explicit
        if frozen is None:
            if self._source is None:
                raise NoCredentialsError()
            got = self._source.get_frozen_credentials()
            frozen = await got if inspect.isawaitable(got) else got
        signer = self._signer
        if signer is None or signer.credentials is not frozen:
            signer = self._signer = SigV4Auth(frozen, SIGNING_NAME, self._region)
        return signer


class SesTransport:
    name = "ses"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._url = ""
        self._credentials: _Credentials | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self._settings
        config = AioConfig(
            region_name=s.aws_region,
            max_pool_connections=10,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        credentials: dict[str, str] = {}
        explicit = None
        if s.aws_access_key_id is not None and s.aws_secret_access_key is not None:
            credentials = {
                "aws_access_key_id": s.aws_access_key_id.get_secret_value(),
                "aws_secret_access_key": s.aws_secret_access_key.get_secret_value(),
            }
            explicit = ReadOnlyCredentials(
                credentials["aws_access_key_id"], credentials["aws_secret_access_key"], None
            )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                _shared_session().create_client(
                    "sesv2",
                    region_name=s.aws_region,
                    endpoint_url=s.aws_endpoint_url,
                    config=config,
                    **credentials,
                )
            )
            self._url = str(self._client.meta.endpoint_url).rstrip("/") + SEND_PATH
            self._credentials = _Credentials(explicit, s.aws_region)
            await self._credentials.load()
            connector = aiohttp.TCPConnector(
                limit=max(s.worker_concurrency, 10), keepalive_timeout=30, ttl_dns_cache=300
            )
            self._http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
                    ),
                    skip_auto_headers=("User-Agent",),
                )
            )
        except BaseException:
            self._client = self._http = None
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client, self._http = self._stack, None, None, None
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
        request: dict[str, Any] = {
            "FromEmailAddress": from_addr,
            "Destination": {"ToAddresses": [to]},
            "Content": {"Simple": simple},
        }
        if reply_to:
            request["ReplyToAddresses"] = reply_to
        tags = sanitize_tags(message.tags)
        if tags:
            request["EmailTags"] = tags
        if self._settings.ses_configuration_set:
            request["ConfigurationSetName"] = self._settings.ses_configuration_set
        return request

    async def _signed_headers(self, body: bytes) -> dict[str, str]:
        assert self._credentials is not None
        try:
            signer = await self._credentials.signer()
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SendingPausedError(f"no AWS credentials: {exc}", code="NoCredentials") from exc
        except BotoCoreError as exc:  # a credential provider failed (metadata service, STS)
            raise TransientError(f"AWS credentials: {exc}", code=type(exc).__name__) from exc
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        signer.add_auth(request)
        return dict(request.headers.items())

    async def send(self, message: OutgoingMessage) -> SendResult:
        http = self._http
        if http is None:
            raise RuntimeError("SesTransport.start() was not called")
        body = orjson.dumps(self.build_request(message))
        headers = await self._signed_headers(body)
        try:
            async with http.post(self._url, data=body, headers=headers) as response:
                payload = await response.read()
                status = response.status
                if not 200 <= status < 300:
                    raise parse_error(status, response.headers, payload)
        except TransportError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Connection refused/reset or dropped, connect and read timeouts, TLS failures.
            raise TransientError(f"SES request failed: {exc!r}", code=type(exc).__name__) from exc
        message_id = None
        with suppress(orjson.JSONDecodeError, AttributeError):
            message_id = orjson.loads(payload).get("MessageId")
        if not message_id:
            raise TransientError("SES answered without a MessageId", code="NoMessageId")
        return SendResult(provider_message_id=str(message_id))

    async def max_send_rate(self) -> float | None:
        if self._client is None:
            raise RuntimeError("SesTransport.start() was not called")
        try:
            account = await self._client.get_account()
        except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError) as exc:
            log.warning("ses_get_account_failed", error=str(exc))
            return None
        rate = account.get("SendQuota", {}).get("MaxSendRate")
        if rate is None or float(rate) <= 0:
            return None
        return float(rate)
