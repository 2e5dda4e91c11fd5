#!/usr/bin/env bash
# Install mailer into a virtual environment. The Dockerfile runs this same script, and so do
# scripts/dev.sh, scripts/test.sh and .ci/run, so every install path is the one CI tests.
#   deploy/install.sh VENV [runtime|dev]
set -euo pipefail
venv="${1:?usage: deploy/install.sh VENV [runtime|dev]}"
kind="${2:-runtime}"
root="$(cd "$(dirname "$0")/.." && pwd)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip_install() {
  # Some machines' pip configuration names index folders that do not exist; pip warns about
  # each on every line. Keep the output readable; failures still fail (pipefail).
  "$venv/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
pip_install --upgrade pip
if [ "$kind" = "dev" ]; then
  pip_install -e "$root[dev]"
else
  pip_install "$root"
fi
"$venv/bin/mailer" --help >/dev/null
echo "mailer installed in $venv ($kind)."
