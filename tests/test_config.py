"""Settings: every bad variable named (all at once), aliases, URL forms, secrets hidden,
and `mailer` refusing to start on a bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.config import (
    AppEnv,
    ConfigError,
    Settings,
    TransportName,
    load_settings,
    normalize_database_url,
)

GOOD_SECRET = "0123456789abcdef-secret"
ENV_NAMES = [name.upper() for name in Settings.model_fields] + ["APP_ENV", "NODE_ENV"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's environment must not leak into these tests."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def load_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_from_env(monkeypatch, **env)
    return str(info.value)


def problem_lines(message: str) -> dict[str, str]:
    """{VARIABLE: message} from a ConfigError's text."""
    lines = message.splitlines()
    assert lines[0] == "Invalid configuration:"
    return dict(line.strip().split(": ", 1) for line in lines[1:])


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"PORT": "abc"}, "PORT", "integer"),
        ({"PORT": "70000"}, "PORT", "65535"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL", "mysql"),
        ({"MAIL_TRANSPORT": "smtp"}, "SMTP_URL", "MAIL_TRANSPORT=smtp"),
        ({"MAIL_TRANSPORT": "pigeon"}, "MAIL_TRANSPORT", "ses"),
        ({"MAIL_TRANSPORT": "smtp", "SMTP_URL": "ftp://h"}, "SMTP_URL", "smtp://"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL", "redis://"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "debug"),
        (
            {"APP_ENV": "production", "PUBLIC_URL": "https://m.example"},
            "UNSUBSCRIBE_SECRET",
            "production",
        ),
        ({"APP_ENV": "production", "UNSUBSCRIBE_SECRET": GOOD_SECRET}, "PUBLIC_URL", "production"),
        ({"UNSUBSCRIBE_SECRET": "short"}, "UNSUBSCRIBE_SECRET", "16"),
        ({"PUBLIC_URL": "example.com"}, "PUBLIC_URL", "http"),
        ({"MAIL_FROM": "nobody"}, "MAIL_FROM", "email address"),
        ({"MAIL_FROM": "Name <a@example.com>, b@evil.com"}, "MAIL_FROM", "one address"),
        ({"MAIL_FROM": "bob@x.org <alice@example.org>"}, "MAIL_FROM", "one address"),
        ({"UNSUBSCRIBE_MAILTO": "u@example.com>, <https://evil"}, "UNSUBSCRIBE_MAILTO", "bare"),
        ({"UNSUBSCRIBE_MAILTO": "Unsub <u@example.com>"}, "UNSUBSCRIBE_MAILTO", "bare"),
        ({"UNSUBSCRIBE_MAILTO": "u@example.com?cc=x@evil.com"}, "UNSUBSCRIBE_MAILTO", "bare"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY", "1"),
        ({"JOB_ATTEMPTS": "many"}, "JOB_ATTEMPTS", "integer"),
        ({"DKIM_PRIVATE_KEY": "k"}, "DKIM_SELECTOR", "DKIM_PRIVATE_KEY"),
    ],
)
def test_each_bad_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str, fragment: str
) -> None:
    problems = problem_lines(config_error(monkeypatch, **env))
    assert list(problems) == [variable]
    assert fragment in problems[variable]


def test_every_problem_is_reported_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Field errors (PORT, ...) must not hide the cross-field ones (SMTP_URL, ...)."""
    problems = problem_lines(
        config_error(
            monkeypatch,
            PORT="abc",
            DATABASE_URL="mysql://u@h/db",
            MAIL_TRANSPORT="smtp",
            REDIS_URL="http://x",
            LOG_LEVEL="loud",
            APP_ENV="production",
        )
    )
    assert set(problems) == {
        "PORT",
        "DATABASE_URL",
        "SMTP_URL",
        "REDIS_URL",
        "LOG_LEVEL",
        "UNSUBSCRIBE_SECRET",
        "PUBLIC_URL",
    }


def test_a_bad_field_does_not_invent_cross_field_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = problem_lines(
        config_error(
            monkeypatch,
            PORT="abc",
            MAIL_TRANSPORT="smtp",
            SMTP_URL="smtp://relay:25",
            APP_ENV="production",
            UNSUBSCRIBE_SECRET=GOOD_SECRET,
            PUBLIC_URL="https://mail.example.com",
        )
    )
    assert list(problems) == ["PORT"]


def test_node_env_is_accepted_for_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_from_env(
        monkeypatch,
        NODE_ENV="production",
        UNSUBSCRIBE_SECRET=GOOD_SECRET,
        PUBLIC_URL="https://mail.example.com",
    )
    assert settings.app_env is AppEnv.PRODUCTION
    monkeypatch.delenv("UNSUBSCRIBE_SECRET")
    monkeypatch.delenv("PUBLIC_URL")
    problems = problem_lines(config_error(monkeypatch, NODE_ENV="prod"))
    assert list(problems) == ["APP_ENV"]
    assert "production" in problems["APP_ENV"]


def test_node_env_production_requires_the_unsubscribe_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems = problem_lines(
        config_error(monkeypatch, NODE_ENV="production", PUBLIC_URL="https://mail.example.com")
    )
    assert list(problems) == ["UNSUBSCRIBE_SECRET"]


def test_original_spec_environment_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The original Node service's example .env, as written (plus the settings production
    requires now: the unsubscribe secret and the public URL)."""
    settings = load_from_env(
        monkeypatch,
        NODE_ENV="production",
        PORT="3000",
        DATABASE_URL="postgres://user:password@host:5432/mailer",
        REDIS_URL="redis://host:6379",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="your_key",
        AWS_SECRET_ACCESS_KEY="your_secret",
        MAIL_FROM="no-reply@yourdomain.com",
        WORKER_CONCURRENCY="10",
        JOB_ATTEMPTS="3",
        JOB_BACKOFF_DELAY="5000",
        UNSUBSCRIBE_SECRET=GOOD_SECRET,
        PUBLIC_URL="https://mail.yourdomain.com",
    )
    assert settings.port == 3000
    assert settings.sqlalchemy_url == "postgresql+asyncpg://user:password@host:5432/mailer"
    assert not settings.is_sqlite
    assert (settings.worker_concurrency, settings.job_attempts) == (10, 3)
    assert settings.job_backoff_delay == 5000
    assert settings.mail_transport is TransportName.OUTBOX


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_from_env(monkeypatch)
    assert settings.is_sqlite
    assert settings.redis_url is None
    assert settings.mail_transport is TransportName.OUTBOX
    assert settings.app_env is AppEnv.DEVELOPMENT


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./data/mailer.db", "sqlite+aiosqlite:///./data/mailer.db"),
        ("sqlite:////var/lib/mailer.db", "sqlite+aiosqlite:////var/lib/mailer.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_url_forms_are_normalized(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    assert normalize_database_url(url) == expected
    settings = load_from_env(monkeypatch, DATABASE_URL=url)
    assert settings.sqlalchemy_url == expected
    assert settings.is_sqlite == expected.startswith("sqlite")


def test_values_are_normalized(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_from_env(
        monkeypatch,
        LOG_LEVEL="WARNING",
        SNS_TOPIC_ARNS=" arn:aws:sns:us-east-1:1:a , arn:aws:sns:us-east-1:1:b,,",
        PUBLIC_URL="https://mail.example.com/",
        REDIS_URL="",
    )
    assert settings.log_level == "warning"
    assert settings.sns_topic_arns == ["arn:aws:sns:us-east-1:1:a", "arn:aws:sns:us-east-1:1:b"]
    assert settings.public_url == "https://mail.example.com"
    assert settings.redis_url is None


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "SMTP_URL": "smtp://user:smtp-pass-1@relay:587",
        "AWS_ACCESS_KEY_ID": "AKIA-secret-id-2",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-3",
        "UNSUBSCRIBE_SECRET": "unsubscribe-secret-4-long-enough",
        "DKIM_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----dkim-5",
    }
    settings = load_from_env(
        monkeypatch,
        MAIL_TRANSPORT="smtp",
        DKIM_SELECTOR="s1",
        DATABASE_URL="postgres://u:db-pass-6@h/db",
        REDIS_URL="redis://:redis-pass-7@h:6379/0",
        **secrets,
    )
    shown = repr(settings) + str(settings)
    for value in [*secrets.values(), "db-pass-6", "redis-pass-7"]:
        assert value not in shown
    # Still usable where they are needed.
    assert settings.smtp_url is not None
    assert settings.smtp_url.get_secret_value() == secrets["SMTP_URL"]
    assert settings.unsubscribe_key == secrets["UNSUBSCRIBE_SECRET"].encode()
    assert "db-pass-6" in settings.sqlalchemy_url


def test_config_errors_do_not_echo_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(
        monkeypatch, MAIL_TRANSPORT="smtp", SMTP_URL="ftp://user:hunter2-secret@relay"
    )
    assert "SMTP_URL" in message
    assert "hunter2-secret" not in message


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4321\nNODE_ENV=test\n")
    settings = load_settings(_env_file=env_file)
    assert (settings.port, settings.app_env) == (4321, AppEnv.TEST)
    # The real environment wins over the file.
    monkeypatch.setenv("PORT", "4000")
    assert load_settings(_env_file=env_file).port == 4000


def test_cli_exits_2_with_the_message_on_a_bad_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ENV_NAMES}
    env.update({"PORT": "abc", "MAIL_TRANSPORT": "smtp", "LOG_LEVEL": "loud"})
    result = subprocess.run(
        [sys.executable, "-m", "mailer", "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Invalid configuration" in result.stderr
    for name in ("PORT", "SMTP_URL", "LOG_LEVEL"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
