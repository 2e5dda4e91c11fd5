"""Settings: every environment variable mailer reads, validated once at start.

Names are those of the Node service mailer replaces (NODE_ENV is accepted for APP_ENV). A
bad configuration raises ConfigError with one line per bad variable.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./data/mailer.db"
_DEV_UNSUBSCRIBE_SECRET = "mailer-development-unsubscribe-secret-change-me"  # noqa: S105


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"
    TEST = "test"


class TransportName(StrEnum):
    SES = "ses"
    SMTP = "smtp"
    OUTBOX = "outbox"


class LogFormat(StrEnum):
    JSON = "json"
    PRETTY = "pretty"


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad variable."""


def normalize_database_url(url: str) -> str:
    """Map the URL forms users write to SQLAlchemy async driver URLs."""
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite://" + url[len("sqlite:") + 2 :] if url != "sqlite://" else url
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ValueError(
        "must start with postgres://, postgresql:// or sqlite:/// "
        f"(got scheme {url.split(':', 1)[0]!r})"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    # App
    app_env: AppEnv = Field(
        AppEnv.DEVELOPMENT, validation_alias=AliasChoices("APP_ENV", "NODE_ENV")
    )
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:3000"
    log_level: str = "info"
    log_format: LogFormat | None = None

    # Storage and queue
    # URLs may carry passwords: kept out of repr (and so out of logs and tracebacks).
    database_url: str = Field(DEFAULT_DATABASE_URL, repr=False)
    db_pool_size: int = Field(10, ge=1, le=500)
    redis_url: str | None = Field(None, repr=False)
    queue_name: str = "mailer-send"

    # Delivery
    mail_transport: TransportName = TransportName.OUTBOX
    mail_from: str = "no-reply@localhost"
    outbox_dir: Path = Path("./data/outbox")
    smtp_url: SecretStr | None = None
    # Connections per worker process to the relay (fewer when WORKER_CONCURRENCY is lower).
    # postfix accepts 50 per client by default and answers more with 421.
    smtp_max_connections: int = Field(50, ge=1, le=1000)
    aws_region: str = "us-east-1"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_endpoint_url: str | None = None
    ses_configuration_set: str | None = None
    send_rate: float | None = Field(None, ge=0)

    # Worker
    worker_concurrency: int = Field(10, ge=1, le=1000)
    job_attempts: int = Field(3, ge=1, le=100)
    job_backoff_delay: int = Field(5000, ge=0, description="first retry delay, ms")
    chunk_size: int = Field(100, ge=1, le=10_000)
    shutdown_timeout: float = Field(30.0, gt=0)
    claim_lease: float = Field(300.0, gt=0, description="seconds before a SENDING claim expires")
    reconcile_interval: float = Field(30.0, gt=0)

    # API limits
    max_batch_recipients: int = Field(100_000, ge=1)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    api_rate_limit: int = Field(6000, ge=0, description="requests per minute per key; 0 = off")
    metrics_require_key: bool = False

    # Notifications, suppression, unsubscribe
    sns_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sns_verify: bool = True
    soft_bounce_limit: int = Field(3, ge=1)
    unsubscribe_secret: SecretStr | None = None
    unsubscribe_mailto: str | None = None

    # Reputation guard
    bounce_rate_threshold: float = Field(0.04, gt=0, le=1)
    complaint_rate_threshold: float = Field(0.0008, gt=0, le=1)
    reputation_min_sends: int = Field(200, ge=1)

    # DKIM for smtp/outbox
    dkim_private_key: SecretStr | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _split_arns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        normalize_database_url(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("public_url", "aws_endpoint_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return value

    @field_validator("mail_from")
    @classmethod
    def _check_mail_from(cls, value: str) -> str:
        from mailer.addresses import InvalidAddress, parse_mailbox

        try:
            _, addr = parse_mailbox(value)
        except InvalidAddress as exc:
            raise ValueError(str(exc)) from None
        if "@" not in addr:
            raise ValueError("must be an email address, optionally with a name: 'Name <a@b.c>'")
        return value

    @field_validator("unsubscribe_mailto")
    @classmethod
    def _check_unsubscribe_mailto(cls, value: str | None) -> str | None:
        # Written into the List-Unsubscribe header as <mailto:VALUE?subject=…>.
        if not value:
            return None
        from mailer.addresses import InvalidAddress, parse_mailbox

        try:
            name, addr = parse_mailbox(value)
        except InvalidAddress:
            name, addr = "", ""
        if name or addr != value or "@" not in addr or any(c in addr for c in "?%&#"):
            raise ValueError("must be one bare address, e.g. unsubscribe@example.com")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        problems: list[str] = []
        if self.mail_transport is TransportName.SMTP and self.smtp_url is None:
            problems.append("SMTP_URL: required when MAIL_TRANSPORT=smtp")
        if self.smtp_url is not None:
            scheme = urlsplit(self.smtp_url.get_secret_value()).scheme
            if scheme not in {"smtp", "smtps", "smtp+starttls"}:
                problems.append("SMTP_URL: must start with smtp://, smtps:// or smtp+starttls://")
        if self.app_env is AppEnv.PRODUCTION and self.unsubscribe_secret is None:
            problems.append("UNSUBSCRIBE_SECRET: required when APP_ENV=production")
        if self.unsubscribe_secret is not None and len(self.unsubscribe_secret) < 16:
            problems.append("UNSUBSCRIBE_SECRET: must be at least 16 characters")
        if self.dkim_private_key is not None and not self.dkim_selector:
            problems.append("DKIM_SELECTOR: required when DKIM_PRIVATE_KEY is set")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _report_every_problem(
        cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
    ) -> Settings:
        """A field error stops validation before _check_combinations runs, hiding its
        problems; validate again without the bad fields so one error names them all."""
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            bad = {str(e["loc"][0]).lower() for e in errors if e["loc"]}
            if not bad or not isinstance(data, dict):
                raise
            rest = {k: v for k, v in data.items() if str(k).lower() not in bad}
            try:
                handler(rest)
            except ValidationError as again:
                hidden = [e for e in again.errors() if not e["loc"]]
            else:
                hidden = []
            if not hidden:
                raise
            # Messages are final: no context, so PydanticCustomError leaves braces alone.
            details: list[InitErrorDetails] = [
                {
                    "type": PydanticCustomError(e["type"], e["msg"]),
                    "loc": e["loc"],
                    "input": e["input"],
                }
                for e in errors + hidden
            ]
            raise ValidationError.from_exception_data(exc.title, details) from None

    # Derived values

    @property
    def sqlalchemy_url(self) -> str:
        return normalize_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.JSON if self.app_env is AppEnv.PRODUCTION else LogFormat.PRETTY

    @property
    def sns_any_topic(self) -> bool:
        """Whether SNS messages of every topic are accepted: only when SNS_TOPIC_ARNS is
        unset outside production. In production, unset accepts none."""
        return not self.sns_topic_arns and self.app_env is not AppEnv.PRODUCTION

    @property
    def unsubscribe_key(self) -> bytes:
        if self.unsubscribe_secret is not None:
            return self.unsubscribe_secret.get_secret_value().encode()
        return _DEV_UNSUBSCRIBE_SECRET.encode()


def _format_errors(error: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        if loc == "settings" and ": " in message:
            for part in message.split("; "):
                lines.append(f"  {part}")
            continue
        lines.append(f"  {loc.upper()}: {message}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (and .env), raising ConfigError on any problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
