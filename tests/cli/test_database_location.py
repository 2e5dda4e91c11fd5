"""The default SQLite database is one file in MAILER_DATA_DIR (default
$XDG_DATA_HOME/mailer): every command finds it whatever directory it runs from, nothing
is created in the working directory, and database errors say which database."""

from __future__ import annotations

from pathlib import Path

from tests.cli.process import clean_env, mailer, one_key


async def test_every_command_finds_the_database_from_any_directory(tmp_path: Path) -> None:
    data = tmp_path / "data-home"
    env = clean_env(MAILER_DATA_DIR=str(data))
    here, there, elsewhere = (tmp_path / name for name in ("here", "there", "elsewhere"))
    for directory in (here, there, elsewhere):
        directory.mkdir()

    migrated = await mailer("migrate", env=env, cwd=here)
    assert migrated.code == 0, migrated.err
    created = await mailer("keys", "create", "Ops", "--admin", env=env, cwd=there)
    assert created.code == 0, created.err
    listed = await mailer("keys", "list", env=env, cwd=elsewhere)
    assert listed.code == 0, listed.err
    assert one_key(created.out)[:8] in listed.out

    assert (data / "mailer.db").is_file()
    for directory in (here, there, elsewhere):
        assert list(directory.iterdir()) == [], f"{directory} got files"


async def test_the_default_data_directory_is_the_users(tmp_path: Path) -> None:
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    result = await mailer("migrate", env=env, cwd=tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / "xdg" / "mailer" / "mailer.db").is_file()
    assert not (tmp_path / "data").exists()


async def test_database_errors_name_the_resolved_database(tmp_path: Path) -> None:
    data = tmp_path / "empty-home"
    unmigrated = await mailer(
        "keys", "list", env=clean_env(MAILER_DATA_DIR=str(data)), cwd=tmp_path
    )
    assert unmigrated.code == 1
    assert "Database error" in unmigrated.err
    assert f"Database: SQLite file {data / 'mailer.db'}" in unmigrated.err
    assert "mailer migrate" in unmigrated.err
    relative = await mailer(
        "keys", "list", env=clean_env(DATABASE_URL="sqlite:///rel/x.db"), cwd=tmp_path
    )
    assert f"Database: SQLite file {tmp_path.resolve() / 'rel' / 'x.db'}" in relative.err
    unreachable = await mailer(
        "keys",
        "list",
        env=clean_env(DATABASE_URL="postgresql://someone:secret-pw@127.0.0.1:1/mailerdb"),
        cwd=tmp_path,
    )
    assert unreachable.code == 1
    assert "Database: PostgreSQL someone@127.0.0.1:1/mailerdb" in unreachable.err
    assert "secret-pw" not in unreachable.err
    for result in (unmigrated, relative, unreachable):
        assert "Traceback" not in result.err
