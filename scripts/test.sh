#!/usr/bin/env bash
# Run the whole test suite: first on SQLite with the in-process queue, then on PostgreSQL
# with BullMQ on Redis (the machine's servers at 127.0.0.1:5432 and :6379, started here if
# they are down). Installs Debian's Chromium for the console's browser tests when missing.
# Extra arguments go to pytest, e.g. scripts/test.sh -k batches -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dev_environment
ensure_chromium
echo "== tests on SQLite + in-process queue =="
MAILER_TEST_BACKEND=sqlite .venv/bin/pytest "$@"
echo "== tests on PostgreSQL + Redis (BullMQ) =="
MAILER_TEST_BACKEND=postgres .venv/bin/pytest "$@"
