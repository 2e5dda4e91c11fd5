"""Settings: every environment variable mailer reads, validated once at start.

NODE_ENV is accepted for APP_ENV. A bad configuration raises ConfigError with one line per
bad variable.

Files of the embedded default (the SQLite database, the outbox) live in one data directory,
MAILER_DATA_DIR, by default the user's data directory ($XDG_DATA_HOME/mailer, i.e.
~/.local/share/mailer): every command finds them whatever directory it runs from.
"""

from __future__ import annotations

import functools
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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


def default_data_dir() -> Path:
    """Where the embedded default keeps its files when MAILER_DATA_DIR is not set."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailer"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# Bind addresses meaning "every interface": links point at the loopback address instead.
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


def url_for_bind(host: str, port: int) -> str:
    """http://HOST:PORT as a browser on this machine reaches a server bound to HOST:PORT."""
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


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
    # Unset: derived from HOST/PORT in development; required with APP_ENV=production.
    public_url: str | None = None
    log_level: str = "info"
    log_format: LogFormat | None = None

    # Storage and queue
    # The directory holding the embedded default's files (SQLite database, outbox).
    mailer_data_dir: Path = Field(default_factory=default_data_dir)
    # URLs may carry passwords: kept out of repr (and so out of logs and tracebacks).
    # Unset: the SQLite file mailer.db in MAILER_DATA_DIR (filled in by _default_paths).
    database_url: str = Field("", repr=False)
    db_pool_size: int = Field(10, ge=1, le=500)
    redis_url: str | None = Field(None, repr=False)
    queue_name: str = "mailer-send"

    # Delivery
    mail_transport: TransportName = TransportName.OUTBOX
    mail_from: str = "no-reply@localhost"
    outbox_dir: Path = Path()  # unset: MAILER_DATA_DIR/outbox (filled in by _default_paths)
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
    # Under SEND_RATE, the share of sends bulk mail keeps while transactional mail (POST
    # /emails, priority "high" batches) also waits; transactional takes the rest first.
    # While transactional sends are in flight, bulk sends in flight are held to this share
    # of WORKER_CONCURRENCY (delivery/lanes.py).
    bulk_min_share: float = Field(0.5, ge=0, le=1)

    # Worker
    worker_concurrency: int = Field(10, ge=1, le=1000)
    job_attempts: int = Field(3, ge=1, le=100)
    job_backoff_delay: int = Field(5000, ge=0, description="first retry delay, ms")
    chunk_size: int = Field(100, ge=1, le=10_000)
    shutdown_timeout: float = Field(30.0, gt=0)
    # Last resort only: a claim that names no worker (made before claims recorded their
    # worker) expires after this long. Claims of a worker go when the worker is dead.
    claim_lease: float = Field(300.0, gt=0, description="seconds before a SENDING claim expires")
    # A worker whose heartbeat (every WORKER_DEAD_AFTER / 6 s) is older than this is dead:
    # its claims are released and its recipients sent by another worker.
    worker_dead_after: float = Field(30.0, ge=3.0, le=3600.0)
    reconcile_interval: float = Field(30.0, gt=0)
    # Finished batches' recipients and events, dead letters and metrics older than this are
    # deleted (the batch rows and their counters stay); 0 keeps everything.
    retention_days: float = Field(90, ge=0)

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

    # Outbound webhooks (POST /api/v1/webhook-endpoints)
    webhook_allow_private: bool = False  # lift the SSRF guard (local development, tests)
    webhook_allow_http: bool = False  # allow http:// endpoint URLs when APP_ENV=production
    webhook_concurrency: int = Field(64, ge=1, le=2000, description="requests in flight per worker")
    webhook_endpoint_concurrency: int = Field(
        32, ge=1, le=2000, description="of WEBHOOK_CONCURRENCY, at most this many per endpoint"
    )
    webhook_timeout: float = Field(10.0, gt=0, le=120)
    webhook_retry_delays: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_lease: float = Field(60.0, gt=0, description="seconds a claimed delivery is held")
    webhook_poll_interval: float = Field(1.0, gt=0, le=60)
    webhook_disable_after_days: float = Field(5.0, gt=0)

    # Reputation guard
    bounce_rate_threshold: float = Field(0.04, gt=0, le=1)
    complaint_rate_threshold: float = Field(0.0008, gt=0, le=1)
    reputation_min_sends: int = Field(200, ge=1)

    # DKIM for smtp/outbox
    dkim_private_key: SecretStr | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None

    _public_url_derived: bool = PrivateAttr(False)

    @model_validator(mode="before")
    @classmethod
    def _default_paths(cls, data: Any) -> Any:
        """DATABASE_URL and OUTBOX_DIR default to files in MAILER_DATA_DIR."""
        if not isinstance(data, dict):
            return data
        given = {str(key).lower(): value for key, value in data.items()}
        raw_dir = given.get("mailer_data_dir")
        base = Path(str(raw_dir)).expanduser() if raw_dir else default_data_dir()
        data = dict(data)
        if not given.get("database_url"):
            data["database_url"] = sqlite_url(base / "mailer.db")
        if not given.get("outbox_dir"):
            data["outbox_dir"] = base / "outbox"
        return data

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _split_arns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_delays", mode="before")
    @classmethod
    def _split_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_delays")
    @classmethod
    def _check_delays(cls, value: list[float]) -> list[float]:
        if not value or any(d < 0 for d in value):
            raise ValueError("must be a comma-separated list of seconds, each 0 or more")
        return value

    @field_validator("mailer_data_dir", "outbox_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

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
        if self.public_url is None:
            if self.app_env is AppEnv.PRODUCTION:
                problems.append(
                    "PUBLIC_URL: required when APP_ENV=production (the address recipients "
                    "reach this API at, e.g. https://mail.example.com: unsubscribe links "
                    "in every message start with it)"
                )
            else:
                self.public_url = url_for_bind(self.host, self.port)
                self._public_url_derived = True
        problems.extend(self._directory_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _directory_problems(self) -> list[str]:
        """The SQLite file's directory and the outbox must be writable; a problem of the
        data directory holding both is named once, as MAILER_DATA_DIR."""
        problems: list[str] = []
        data_dir_problem = False
        database = self._sqlite_file()
        if database is not None:
            problem = _directory_problem(database.parent)
            if problem and database.parent == self.mailer_data_dir:
                problems.append(f"MAILER_DATA_DIR: {self.mailer_data_dir} {problem}")
                data_dir_problem = True
            elif problem:
                problems.append(
                    f"DATABASE_URL: {database.parent} (the SQLite file's folder) {problem}"
                )
        if self.mail_transport is TransportName.OUTBOX and not (
            data_dir_problem and self.outbox_dir.parent == self.mailer_data_dir
        ):
            problem = _directory_problem(self.outbox_dir)
            if problem:
                problems.append(f"OUTBOX_DIR: {self.outbox_dir} {problem}")
        return problems

    def _sqlite_file(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, or SQLite in memory)."""
        url = normalize_database_url(self.database_url)
        if not url.startswith("sqlite") or ":///" not in url:
            return None
        path = url.split(":///", 1)[1].split("?", 1)[0]
        if not path or path.startswith(":memory:"):
            return None
        return Path(path).expanduser()

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

    def with_bind(self, host: str | None, port: int | None) -> Settings:
        """These settings serving on HOST/PORT given on the command line; a PUBLIC_URL that
        was derived from HOST/PORT follows them."""
        update: dict[str, Any] = {"host": host or self.host, "port": port or self.port}
        if self._public_url_derived:
            update["public_url"] = url_for_bind(update["host"], update["port"])
        copy = self.model_copy(update=update)
        copy._public_url_derived = self._public_url_derived
        return copy

    @property
    def database_description(self) -> str:
        """The database for messages: the SQLite file's absolute path, or the server's URL
        without its password."""
        url = self.sqlalchemy_url
        if self.is_sqlite:
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if not path or path.startswith(":memory:"):
                return "SQLite in memory"
            return f"SQLite file {Path(path).expanduser().resolve()}"
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        return f"PostgreSQL {netloc}{parts.path}"

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


def _directory_problem(directory: Path) -> str | None:
    """Why files cannot be written in `directory` (created when missing), or None. Tried
    rather than judged from permission bits: root passes every os.access check, yet cannot
    write to a read-only file system or /proc. The probes leave nothing behind."""
    if directory.exists():
        if not directory.is_dir():
            return "is not a directory"
        try:
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            return f"is not writable ({exc.strerror or exc})"
        return None
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent))
    except OSError as exc:
        return f"cannot be created in {parent} ({exc.strerror or exc})"
    return None


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
