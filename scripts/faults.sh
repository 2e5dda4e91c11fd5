#!/usr/bin/env bash
# The reliability and security suite at full size: every fault scenario with batches of 5,000
# recipients and more (SIGKILL/SIGTERM, Redis restarted and emptied, PostgreSQL restarted,
# provider errors, slow provider), the load run, schemathesis with more examples, the
# targeted bad-input cases and the security matrix; then the figures as the Markdown tables
# of docs/reliability.md. Restarts the machine's PostgreSQL and Redis (don't run it while
# others use them; MAILER_FAULTS_SERVICES=private uses instances of its own instead).
# Extra arguments go to pytest, e.g. scripts/faults.sh -k sigkill
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dev_environment
export MAILER_FAULTS="${MAILER_FAULTS:-full}"
report="${MAILER_FAULTS_REPORT:-data/faults-report.jsonl}"
mkdir -p "$(dirname "$report")"
: > "$report"
export MAILER_FAULTS_REPORT="$report"
status=0
echo "== reliability suite ($MAILER_FAULTS) on PostgreSQL + Redis =="
MAILER_TEST_BACKEND=postgres .venv/bin/pytest -p no:cacheprovider \
  tests/faults tests/load tests/badinput tests/security "$@" || status=$?
echo "== bad input and security on SQLite =="
MAILER_TEST_BACKEND=sqlite .venv/bin/pytest -p no:cacheprovider \
  tests/badinput tests/security "$@" || status=$?
echo "== figures (for docs/reliability.md) =="
.venv/bin/python -m tests.faults.report "$report" || true
exit "$status"
