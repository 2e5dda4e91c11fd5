"""Run `python -m mailer` as a user would: a subprocess with a clean configuration (nothing
from the developer's environment or .env), in a directory of the test's choosing."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mailer.config import Settings

HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
CONFIG_NAMES = {name.upper() for name in Settings.model_fields} | {
    "APP_ENV",
    "NODE_ENV",
    "XDG_DATA_HOME",
}


@dataclass
class Result:
    code: int
    out: str
    err: str


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in CONFIG_NAMES}
    env.update({"APP_ENV": "test", "LOG_LEVEL": "warning"})
    env.update(settings)
    return env


async def mailer(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def one_key(output: str) -> str:
    keys = HEX64.findall(output)
    assert len(keys) == 1, output
    key: str = keys[0]
    return key
