#!/usr/bin/env bash
# Shared by bench/ingest, bench/deliver, bench/rate and bench/api: on a fresh clone, create
# the venv (with the dev tools) and start PostgreSQL and Redis if they are down, then run
# the benchmark named by $1. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_dev_environment >&2
name="$1"
shift
exec .venv/bin/python "bench/$name.py" "$@"
