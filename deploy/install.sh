#!/usr/bin/env bash
# Install mailer into a virtual environment. The Dockerfile runs this same script, and so do
# scripts/dev.sh, scripts/test.sh and .ci/run, so every install path is the one CI tests.
#   deploy/install.sh VENV [runtime|dev]
set -euo pipefail
venv="${1:?usage: deploy/install.sh VENV [runtime|dev]}"
kind="${2:-runtime}"
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
if [ "$kind" = "dev" ]; then
  "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
else
  "$venv/bin/python" -m pip install --quiet "$root"
fi
"$venv/bin/mailer" --help >/dev/null
echo "mailer installed in $venv ($kind)."
