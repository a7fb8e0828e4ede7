#!/bin/sh
# Make sure systemd-analyze is present: the tests check deploy/systemd/*.service with
# `systemd-analyze verify` and `systemd-analyze security --offline=true`, which read the
# unit files and need no running systemd. As root on Debian/Ubuntu it installs the
# `systemd` package (nothing starts: it is not PID 1 here); otherwise it says how, and
# those tests skip.
set -eu
command -v systemd-analyze >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing systemd (for systemd-analyze: the unit files are checked with it)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
  exit 0
fi
echo "note: systemd-analyze missing, so the unit file tests skip: sudo apt-get install systemd" >&2
exit 0
