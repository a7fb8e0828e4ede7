#!/bin/sh
# Make sure nginx is present: the mirror tests serve a `tlog mirror` copy with it.
# As root on Debian/Ubuntu it installs the `nginx` package (only the binary is used: the
# tests run their own nginx with a config in a temporary directory, never the system one);
# otherwise it says how, and those tests skip.
set -eu
command -v nginx >/dev/null 2>&1 && exit 0
[ -x /usr/sbin/nginx ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the nginx package (serves a static mirror in the tests)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # The package starts the system nginx on port 80: the tests need only the binary.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  if [ -f /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
  exit 0
fi
echo "note: nginx is missing, so the mirror tests skip: sudo apt-get install nginx" >&2
exit 0
