#!/usr/bin/env bash
# Run the whole test suite: first on SQLite with the in-process queue, then on PostgreSQL
# with BullMQ on Redis (the machine's servers at 127.0.0.1:5432 and :6379, started here if
# they are down). Installs Debian's Chromium for the console's browser tests when missing.
# Without arguments, the Python client's tests (clients/python) run too, against a live mailer
# on each backend. Extra arguments go to pytest (the main suite only), e.g.
# scripts/test.sh -k batches -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dev_environment
ensure_chromium
echo "== tests on SQLite + in-process queue =="
MAILER_TEST_BACKEND=sqlite .venv/bin/pytest "$@"
[ $# -gt 0 ] || { echo "== Python client on SQLite =="; MAILER_TEST_BACKEND=sqlite clients/python/scripts/test.sh; }
echo "== tests on PostgreSQL + Redis (BullMQ) =="
MAILER_TEST_BACKEND=postgres .venv/bin/pytest "$@"
[ $# -gt 0 ] || { echo "== Python client on PostgreSQL + Redis =="; MAILER_TEST_BACKEND=postgres clients/python/scripts/test.sh; }
