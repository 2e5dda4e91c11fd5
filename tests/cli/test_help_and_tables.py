"""`mailer --version`; every `--help` shows plain names (NAME, --port PORT, flags without a
type); list commands print a header over their columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from mailer import __version__
from mailer.cli import app as cli_app
from tests.cli.process import clean_env, mailer


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*prefix, name))


def test_version() -> None:
    result = CliRunner().invoke(cli_app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"mailer {__version__}\n"


def test_help_shows_names_and_no_internal_words() -> None:
    runner = CliRunner()
    paths = list(command_paths(typer.main.get_command(cli_app)))
    assert len(paths) > 20
    for path in paths:
        result = runner.invoke(cli_app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        for bad in (
            "<bool>",
            "<str>",
            "<int",
            "<float",
            "<list",
            "{",
            "ORIGINAL",
            "SPEC",
            "npm",
            "prisma",
        ):
            assert bad not in text, (path, bad, text)
    create = runner.invoke(cli_app, ["keys", "create", "--help"]).output
    assert "keys create [OPTIONS] NAME\n" in create
    assert "--admin  " in create
    dev = runner.invoke(cli_app, ["dev", "--help"]).output
    assert "--port PORT" in dev and "--host HOST" in dev


async def test_list_commands_print_headers(database_url: str, tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=database_url)
    headers = {
        ("keys", "list"): ["ID", "PREFIX", "SCOPES", "USES", "STATE", "NAME"],
        ("dlq", "list"): ["ID", "BATCH", "SEQ", "RCPT", "TRIES", "ERROR"],
        ("suppressions", "list"): ["SUPPRESSED", "AT", "REASON", "EMAIL"],
        ("webhooks", "list"): ["ID", "STATE", "EVENTS", "URL"],
    }
    for command, header in headers.items():
        result = await mailer(*command, env=env, cwd=tmp_path)
        assert result.code == 0, result.err
        assert result.out.splitlines()[0].split() == header, command
