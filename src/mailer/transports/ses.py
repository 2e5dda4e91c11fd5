"""Amazon SES v2 SendEmail through aiobotocore.

One `sesv2` client per transport, created in start() and reused; its HTTP pool holds
WORKER_CONCURRENCY connections. botocore's own retries are off (`total_max_attempts=1`;
note botocore's `max_attempts` counts *retries*, so `max_attempts=1` would still send
twice): a request SES accepted but whose answer was lost would otherwise be sent again,
silently. mailer's retry policy decides instead, from the error classes raised here.

Messages go as `Content.Simple` (SES builds the MIME). SES replaces any Message-ID we
give with its own and returns it as MessageId, which is also what bounce notifications
carry, so our Message-ID is not sent; the provider id is SES's MessageId.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from typing import Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

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


class SesTransport:
    name = "ses"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self._settings
        config = AioConfig(
            region_name=s.aws_region,
            max_pool_connections=max(s.worker_concurrency, 10),
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        credentials: dict[str, str] = {}
        if s.aws_access_key_id is not None and s.aws_secret_access_key is not None:
            credentials = {
                "aws_access_key_id": s.aws_access_key_id.get_secret_value(),
                "aws_secret_access_key": s.aws_secret_access_key.get_secret_value(),
            }
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            _shared_session().create_client(
                "sesv2",
                region_name=s.aws_region,
                endpoint_url=s.aws_endpoint_url,
                config=config,
                **credentials,
            )
        )
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
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

    async def send(self, message: OutgoingMessage) -> SendResult:
        if self._client is None:
            raise RuntimeError("SesTransport.start() was not called")
        request = self.build_request(message)
        try:
            response = await self._client.send_email(**request)
        except ClientError as exc:
            raise _from_client_error(exc) from exc
        except ParamValidationError as exc:
            raise PermanentError(f"invalid SES request: {exc}", code="ParamValidation") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise SendingPausedError(f"no AWS credentials: {exc}", code="NoCredentials") from exc
        except BotoCoreError as exc:
            # Connection refused/reset, connect and read timeouts, TLS failures.
            raise TransientError(f"SES request failed: {exc}", code=type(exc).__name__) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"SES request failed: {exc!r}", code=type(exc).__name__) from exc
        message_id = response.get("MessageId")
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
