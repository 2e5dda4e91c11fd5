# Shared by scripts/*.sh and .ci/run. Source it from the repository root.

PYTHON="${PYTHON:-python3}"

ensure_venv() {
  # ensure_venv runtime|dev : create .venv and install mailer (with test tools and the
  # Python client for "dev")
  local extra="$1" stamp=".venv/.installed-$1"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
      echo "mailer needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1))." >&2; exit 1; }
    "$PYTHON" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
      || [ clients/python/pyproject.toml -nt "$stamp" ]; then
    bash deploy/install.sh .venv "$extra"
    if [ "$extra" = "dev" ]; then
      # The Python client (clients/python), whose tests run against this mailer.
      .venv/bin/python -m pip install --quiet -e clients/python 2>&1 \
        | { grep -v "is ignored: it is neither" || true; }
    fi
    touch "$stamp"
  fi
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "PostgreSQL is not running; starting it." >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
}

ensure_redis() {
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "Redis is not running; starting it." >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
}

ensure_chromium() {
  # The console's browser tests drive Debian's Chromium through Playwright, which downloads
  # no browser of its own.
  if [ ! -x /usr/bin/chromium ]; then
    echo "Chromium is not installed; installing Debian's package for the browser tests." >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "Run as root, or: sudo apt-get install -y chromium" >&2; return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  fi
}

ensure_dev_environment() {
  # The venv with test tools, and the local PostgreSQL and Redis the tests and benchmarks use.
  ensure_venv dev
  ensure_postgres
  ensure_redis
}
