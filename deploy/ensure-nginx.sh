#!/bin/sh
# Make sure nginx is present: the mirror tests serve a `tlog mirror` copy with it.
# As root on Debian/Ubuntu it installs the `nginx` package (only the binary is used: the
# tests run their own nginx with a config in a temporary directory, never the system one);
# otherwise it says how, and those tests skip. With --with-wrk (bench/mirror_bench.py), the
# `wrk` HTTP load generator too.
set -eu
want=""
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || want=" nginx"
if [ "${1:-}" = "--with-wrk" ] && ! command -v wrk >/dev/null 2>&1; then want="$want wrk"; fi
[ -z "$want" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing$want ${want:+(nginx serves a static mirror in the tests; wrk loads it in the bench)}..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $want >/dev/null
  case "$want" in *nginx*)
    # The package starts the system nginx on port 80 that it just installed: the tests need
    # only the binary.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    if [ -f /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
  esac
  exit 0
fi
echo "note: $want missing, so the mirror tests skip (or the bench uses aiohttp):" \
  "sudo apt-get install $want" >&2
exit 0
