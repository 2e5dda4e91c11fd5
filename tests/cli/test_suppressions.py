"""`mailer suppressions …` as a user runs it (subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def mailer(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(DATABASE_URL=database_url, APP_ENV="test", LOG_LEVEL="warning")
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_add_list_remove_import_export(database_url: str, tmp_path: Path) -> None:
    added = mailer(database_url, "suppressions", "add", "One@Example.com", "two@example.com")
    assert added.returncode == 0, added.stderr
    assert "Suppressed 2 new" in added.stdout
    bad = mailer(database_url, "suppressions", "add", "not-an-address")
    assert bad.returncode == 1
    assert "Invalid address" in bad.stderr

    listed = mailer(database_url, "suppressions", "list", "--reason", "manual")
    assert "one@example.com" in listed.stdout
    assert "2 suppressed" in listed.stdout

    csv_in = tmp_path / "in.csv"
    rows = ["email,reason"] + [f"user{i}@example.org,COMPLAINT" for i in range(500)]
    rows += ["broken,COMPLAINT", "one@example.com,BOUNCE"]
    csv_in.write_text("\n".join(rows) + "\n")
    imported = mailer(database_url, "suppressions", "import", str(csv_in))
    assert imported.returncode == 0, imported.stderr
    assert "500 added" in imported.stdout
    assert "1 invalid" in imported.stdout

    out = tmp_path / "out.csv"
    exported = mailer(database_url, "suppressions", "export", str(out), "--reason", "complaint")
    assert exported.returncode == 0, exported.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("email,reason")
    assert len(lines) == 501

    removed = mailer(database_url, "suppressions", "remove", "ONE@example.com")
    assert removed.returncode == 0
    again = mailer(database_url, "suppressions", "remove", "one@example.com")
    assert again.returncode == 1


def test_help(database_url: str) -> None:
    for command in ("list", "add", "remove", "import", "export"):
        result = mailer(database_url, "suppressions", command, "--help")
        assert result.returncode == 0, command
