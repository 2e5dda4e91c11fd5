"""`mailer suppressions import|export|add` as subprocesses: a 100,000-row CSV round trip,
a closed pipe ending quietly, and file and address errors named as what they are."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailer.cli.common import EXIT_BROKEN_PIPE
from tests.cli.process import clean_env, mailer

ROWS = 100_000


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=database_url)


def emails_in(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["email", "reason", "created_at", "source"]
    return [row[0] for row in rows[1:]]


async def test_100k_rows_import_export_and_import_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "list.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([f"user{n}@example.com"] for n in range(ROWS))
        writer.writerow(["not-an-address"])

    imported = await mailer("suppressions", "import", str(source), env=env, cwd=tmp_path)
    assert imported.code == 0, imported.err
    assert f"Read {ROWS + 1} row(s): {ROWS} added, 0 already suppressed" in imported.out
    assert "1 invalid" in imported.out
    assert f"line {ROWS + 1}: 'not-an-address'" in imported.err

    exported = await mailer(
        "suppressions", "export", str(tmp_path / "out.csv"), env=env, cwd=tmp_path
    )
    assert exported.code == 0, exported.err
    assert f"Exported {ROWS} address(es)." in exported.err
    emails = emails_in(tmp_path / "out.csv")
    assert sorted(emails) == sorted(f"user{n}@example.com" for n in range(ROWS))

    again = await mailer("suppressions", "import", str(tmp_path / "out.csv"), env=env, cwd=tmp_path)
    assert again.code == 0, again.err
    assert f"Read {ROWS} row(s): 0 added, {ROWS} already suppressed" in again.out

    # `mailer suppressions export - | head -1`: the reader goes away after one line.
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "suppressions", "export", "-"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"email,reason,created_at,source\n"
    process.stdout.close()
    err = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""


async def test_file_errors_name_the_file_not_the_database(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing, unwritable = (
        await mailer("suppressions", "import", "nope.csv", env=env, cwd=tmp_path),
        await mailer("suppressions", "export", "no/such/dir/out.csv", env=env, cwd=tmp_path),
    )
    for result, name in ((missing, "nope.csv"), (unwritable, "no/such/dir/out.csv")):
        assert result.code == 1, result.err
        assert f"Cannot use {name}: No such file or directory." in result.err
        assert "Database" not in result.err
        assert "Traceback" not in result.err


async def test_add_names_each_invalid_address_and_adds_the_valid_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    added = await mailer(
        "suppressions", "add", "a@x.com", "notanemail", "b@x.com", env=env, cwd=tmp_path
    )
    assert added.code == 1
    assert "Suppressed 2 new address(es) of 2 valid." in added.out
    assert "Invalid address 'notanemail'" in added.err
    assert "not added" in added.err
    listed = await mailer("suppressions", "list", env=env, cwd=tmp_path)
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].split() == ["SUPPRESSED", "AT", "REASON", "EMAIL"]
    assert sorted(line.split()[-1] for line in lines[1:3]) == ["a@x.com", "b@x.com"]
    assert lines[-1] == "2 suppressed address(es)"


def run_mailer(
    *args: str, env: dict[str, str], cwd: Path, stdin: bytes = b"", stdout: Any = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_full_disk_names_the_file_or_standard_output(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A write error has no file name of its own: it read as a database error."""
    assert (await mailer("suppressions", "add", "a@x.com", env=env, cwd=tmp_path)).code == 0
    to_file = run_mailer("suppressions", "export", "/dev/full", env=env, cwd=tmp_path)
    with open("/dev/full", "wb") as full:
        to_stdout = run_mailer("suppressions", "export", "-", env=env, cwd=tmp_path, stdout=full)
    for result, name in ((to_file, "/dev/full"), (to_stdout, "standard output")):
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert err.startswith(f"Cannot use {name}: No space left on device.\n"), err
        assert "Database" not in err and "Traceback" not in err


async def test_a_file_that_is_not_utf8_is_named_and_nothing_is_imported(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"\xef\xbb\xbfemail\nann@example.com\ncaf\xe9@example.com\n")
    result = await mailer("suppressions", "import", str(source), env=env, cwd=tmp_path)
    assert result.code == 1, result.err
    assert f"Cannot use {source}: line 3 is not UTF-8 text" in result.err
    assert "nothing was imported" in result.err and "Traceback" not in result.err
    listed = await mailer("suppressions", "list", env=env, cwd=tmp_path)
    assert listed.out.splitlines()[-1] == "0 suppressed address(es)"


async def test_import_reads_standard_input(env: dict[str, str], tmp_path: Path) -> None:
    """`mailer suppressions export - | mailer suppressions import -` (export took `-`,
    import answered "Cannot use -: No such file or directory")."""

    piped = run_mailer(
        "suppressions",
        "import",
        "-",
        env=env,
        cwd=tmp_path,
        stdin=b"\xef\xbb\xbfa@x.com\r\nb@x.com\r\n",  # a spreadsheet's BOM and CRLF
    )
    assert piped.returncode == 0, piped.stderr.decode()
    assert b"Read 2 row(s): 2 added" in piped.stdout
    exported = run_mailer("suppressions", "export", "-", env=env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr.decode()
    again = run_mailer("suppressions", "import", "-", env=env, cwd=tmp_path, stdin=exported.stdout)
    assert b"Read 2 row(s): 0 added, 2 already suppressed" in again.stdout
