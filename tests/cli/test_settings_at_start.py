"""Settings checked before anything starts: PUBLIC_URL derived from HOST/PORT in development
and required in production, OUTBOX_DIR checked and named."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mailer.config import ConfigError, load_settings
from tests.cli.process import clean_env, mailer, one_key
from tests.cli.test_readme_try_it import free_port


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", "3000", "http://127.0.0.1:3000"),
        ("127.0.0.1", "3100", "http://127.0.0.1:3100"),
        ("0.0.0.0", "3100", "http://127.0.0.1:3100"),
        ("::", "8080", "http://127.0.0.1:8080"),
        ("::1", "8080", "http://[::1]:8080"),
        ("mail.internal", "80", "http://mail.internal:80"),
    ],
)
def test_public_url_follows_host_and_port_in_development(
    tmp_path: Path, host: str, port: str, expected: str
) -> None:
    settings = load_settings(_env_file=None, mailer_data_dir=tmp_path, host=host, port=port)
    assert settings.public_url == expected


def test_command_line_host_and_port_move_a_derived_public_url_only(tmp_path: Path) -> None:
    derived = load_settings(_env_file=None, mailer_data_dir=tmp_path)
    assert derived.with_bind("0.0.0.0", 3200).public_url == "http://127.0.0.1:3200"
    assert derived.with_bind(None, None).public_url == "http://127.0.0.1:3000"
    explicit = load_settings(
        _env_file=None, mailer_data_dir=tmp_path, public_url="https://mail.example.com"
    )
    moved = explicit.with_bind("0.0.0.0", 3200)
    assert (moved.host, moved.port) == ("0.0.0.0", 3200)
    assert moved.public_url == "https://mail.example.com"


def test_production_requires_public_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            _env_file=None,
            mailer_data_dir=tmp_path,
            app_env="production",
            unsubscribe_secret="0123456789abcdef-secret",
        )
    assert (
        str(info.value).splitlines()[1].startswith("  PUBLIC_URL: required when APP_ENV=production")
    )


@pytest.mark.parametrize("command", ["api", "worker", "dev"])
async def test_processes_refuse_to_start_in_production_without_public_url(
    tmp_path: Path, command: str
) -> None:
    env = clean_env(
        APP_ENV="production",
        UNSUBSCRIBE_SECRET="0123456789abcdef-secret",
        MAILER_DATA_DIR=str(tmp_path / "data"),
    )
    result = await mailer(command, env=env, cwd=tmp_path)
    assert result.code == 2, result.err
    assert "Invalid configuration:" in result.err
    assert "PUBLIC_URL: required when APP_ENV=production" in result.err
    assert "Traceback" not in result.err


async def test_a_bad_outbox_dir_is_named_before_anything_starts(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    env = clean_env(
        MAILER_DATA_DIR=str(tmp_path / "data"),
        OUTBOX_DIR=str(not_a_dir / "outbox"),
        PORT="1",  # never reached
    )
    result = await mailer("dev", env=env, cwd=tmp_path)
    assert result.code == 2, result.err
    assert f"OUTBOX_DIR: {not_a_dir / 'outbox'} cannot be created: {not_a_dir} is not a " in (
        result.err
    )
    assert "Traceback" not in result.err
    assert "docs:" not in result.out  # never got as far as serving
    assert not (tmp_path / "data").exists()  # nothing created before the check


def test_outbox_dir_problems(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for outbox, problem in ((a_file, "is not a directory"), (a_file / "x" / "y", "cannot be")):
        with pytest.raises(ConfigError) as info:
            load_settings(_env_file=None, mailer_data_dir=tmp_path, outbox_dir=outbox)
        assert f"OUTBOX_DIR: {outbox} {problem}" in str(info.value)
    # Only the outbox transport writes there.
    load_settings(
        _env_file=None,
        mailer_data_dir=tmp_path,
        outbox_dir=a_file,
        mail_transport="smtp",
        smtp_url="smtp://relay:25",
    )
    # A directory that does not exist yet but can be made is fine.
    load_settings(_env_file=None, mailer_data_dir=tmp_path, outbox_dir=tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # the check creates nothing


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_outbox_dir_is_tried_not_judged_by_permission_bits(tmp_path: Path) -> None:
    """Root passes every permission check, yet cannot write to /proc (as to a read-only
    file system): `mailer dev` used to start and fail with a traceback after serving."""
    for outbox, problem in (
        (Path("/proc/mailer-outbox"), "OUTBOX_DIR: /proc/mailer-outbox cannot be created in /proc"),
        (Path("/proc/self"), "OUTBOX_DIR: /proc/self is not writable"),
    ):
        with pytest.raises(ConfigError) as info:
            load_settings(_env_file=None, mailer_data_dir=tmp_path, outbox_dir=outbox)
        assert problem in str(info.value)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_the_sqlite_folder_is_checked_and_named_as_it_was_set() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None, mailer_data_dir="/proc/mailer")
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 1  # one problem: the outbox in it is not named again
    assert lines[0].startswith("  MAILER_DATA_DIR: /proc/mailer cannot be created in /proc (")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None, database_url="sqlite:////proc/mailer/m.db")
    assert "DATABASE_URL: /proc/mailer (the SQLite file's folder) cannot be created" in str(
        info.value
    )


async def test_api_port_option_moves_the_derived_public_url(
    database_url: str, tmp_path: Path
) -> None:
    """`mailer api --port P`: links the API writes (the render preview's unsubscribe link)
    pointed at PORT's default, 3000."""
    env = clean_env(DATABASE_URL=database_url, PORT="3000")
    created = await mailer("keys", "create", "api", env=env, cwd=tmp_path)
    key = one_key(created.out)
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "mailer", "api", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(600):
                try:
                    if (await http.get("/api/v1/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    assert api.poll() is None, "mailer api exited"
                await asyncio.sleep(0.1)
            headers = {"Authorization": f"Bearer {key}"}
            template = await http.post(
                "/api/v1/templates",
                json={"name": "t", "subject": "s", "html": "<a href='{{unsubscribe_url}}'>x</a>"},
                headers=headers,
            )
            assert template.status_code == 201, template.text
            preview = await http.post(
                f"/api/v1/templates/{template.json()['id']}/render",
                json={"variables": {}},
                headers=headers,
            )
        assert f"http://127.0.0.1:{port}/api/v1/unsubscribe/" in preview.json()["html"]
    finally:
        api.terminate()
        api.wait(timeout=60)
