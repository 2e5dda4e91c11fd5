#!/usr/bin/env bash
# Run mailer on the embedded default: SQLite file, in-process queue, mail written as .eml
# files to the outbox; both in the data directory (~/.local/share/mailer, or MAILER_DATA_DIR).
# First run: creates .venv, installs, migrates and seeds (the admin key is printed once).
# Then serves http://127.0.0.1:3000, or PORT (docs at /docs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_venv runtime
exec .venv/bin/mailer dev "$@"
