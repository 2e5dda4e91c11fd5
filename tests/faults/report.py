"""Turn the figures a run recorded (MAILER_FAULTS_REPORT, JSON lines) into the Markdown
tables of docs/reliability.md:

    python -m tests.faults.report data/faults-report.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(states.items()))


def _notes(notes: dict[str, Any]) -> str:
    skip = {"seed"}
    return "; ".join(f"{k}: {v}" for k, v in notes.items() if k not in skip)


def tables(entries: list[dict[str, Any]]) -> str:
    faults = [e for e in entries if e.get("scenario") != "load"]
    loads = [e for e in entries if e.get("scenario") == "load"]
    lines = []
    if faults:
        lines += [
            "| scenario | recipients | received | lost | duplicates (allowed) | final states "
            "| notes |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for e in faults:
            lines.append(
                f"| {e['scenario']} | {e['recipients']} | {e['received']} | {e['lost']} "
                f"| {e['duplicates']} (≤ {e['allowed_duplicates']}) | {_states(e['states'])} "
                f"| {_notes(e.get('notes', {}))} |"
            )
    for e in loads:
        lines += [
            "",
            f"Load: {e['requests']} requests at {e['offered_rate']}/s ({e['duration_s']} s), "
            f"errors {e['errors']}, 5xx {e['server_errors']}; latency p50 {e['p50_ms']} ms, "
            f"p90 {e['p90_ms']} ms, p99 {e['p99_ms']} ms, max {e['max_ms']} ms; "
            f"{e['messages_sent_during_load']} messages sent meanwhile "
            f"({e['send_rate_during_load']}/s).",
            "",
            "| call | n | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for name, k in e["per_kind"].items():
            lines.append(f"| {name} | {k['n']} | {k['p50']} | {k['p99']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "data/faults-report.jsonl")
    if not path.exists():
        print(f"no figures recorded at {path}", file=sys.stderr)
        return 1
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(tables(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
