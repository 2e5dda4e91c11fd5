"""schemathesis against /openapi.json of a running `mailer api`, with an admin key and with a
send key: every operation, examples + coverage + fuzzing + stateful phases. No 5xx; every
status, content type and body matches the schema.

Excluded: GET /admin/domains/{domain}/check (resolves through the system's DNS; the security
matrix and tests/domains run it against the tests' own DNS server), POST
/webhook-endpoints/{id}/test (it connects to the endpoint's URL; tests/webhook_endpoints
runs it against a receiver of its own), and, with the admin key,
POST /admin/keys/{key_id}/revoke: stateful testing finds the run's own key in GET /admin/keys
and revokes it, after which every request is a 401 (tested in tests/security instead)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput.conftest import LiveApi
from tests.faults.harness import FULL, SEED

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
MAX_EXAMPLES = int(os.environ.get("MAILER_SCHEMATHESIS_EXAMPLES", "100" if FULL else "15"))


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["admin", "send"])
def test_schemathesis(live_api: LiveApi, scope: str, tmp_path: Path) -> None:
    key = live_api.admin if scope == "admin" else live_api.send
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{live_api.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--exclude-path-regex",
        r"/admin/domains/|/webhook-endpoints/[^/]+/test$"
        if scope == "send"
        else r"/admin/domains/|/revoke$|/webhook-endpoints/[^/]+/test$",
        "--request-timeout",
        "60",
        # One worker: with two, schemathesis draws in two threads, and CPython 3.11's ast.parse
        # (hypothesis calls it to describe lambdas) is not thread-safe: "SystemError: AST
        # constructor recursion depth mismatch" ends the run as a runtime error.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=1800, check=False
    )
    output = result.stdout + result.stderr
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]
    print(f"\nschemathesis ({scope} key, {MAX_EXAMPLES} examples, seed {SEED}):\n{summary}")
    assert result.returncode == 0, output[-20000:]
    assert "Tested:" in output
