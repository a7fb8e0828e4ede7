#!/bin/sh
# Make sure the PostgreSQL server binaries tlog runs itself are present.
# As root on Debian/Ubuntu it installs the `postgresql` package; otherwise it says how.
set -eu
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && exit 0
done
command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the postgresql package (server binaries for tlog's local database)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  exit 0
fi
echo "tlog needs the PostgreSQL server binaries: sudo apt-get install postgresql" >&2
exit 1
