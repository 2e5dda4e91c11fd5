#!/usr/bin/env bash
# The Python client's tests. They start a real mailer (`python -m mailer dev` on a free
# 127.0.0.1 port): SQLite by default, PostgreSQL + Redis with MAILER_TEST_BACKEND=postgres
# (the database is made and dropped by the tests; MAILER_TEST_REDIS_DB picks the Redis
# database). Runs in the repository's .venv, where scripts/lib.sh installs mailer and this
# package (`pip install -e clients/python`). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${MAILER_VENV:-../../.venv}/bin/python"
"$python" -m pytest "$@"
