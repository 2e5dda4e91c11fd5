"""Words meant for the developers, not for users: the repository never names documents a
clone does not have, nor the scripts of a version users never saw."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Assembled, so that this file does not match itself.
INTERNAL = re.compile(
    "|".join(
        [
            "ORIGINAL" + "-SPEC",
            r"\bSPEC" + r"\.md",
            "DESIGN" + r"\.md",
            "REFERENCE" + r"\.md",
            r"\.\./" + "shared",
        ]
    ),
    re.IGNORECASE,
)
NODE_SCRIPTS = re.compile("npm" + r" (run|start)|prisma" + ":|Node" + " version")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [ROOT / name.decode() for name in names if name]


def test_no_internal_document_or_script_is_mentioned() -> None:
    found = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (screenshots), or deleted but not yet committed
        for pattern in (INTERNAL, NODE_SCRIPTS):
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
    assert found == []
