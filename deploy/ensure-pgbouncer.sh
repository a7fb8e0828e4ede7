#!/bin/sh
# Make sure PgBouncer is present for the transaction-pooling tests (tests/tlog/store/
# test_pgbouncer.py). As root on Debian/Ubuntu it installs the `pgbouncer` package, failing
# if that fails; otherwise it says how and carries on (those tests then skip, saying why).
set -eu
for b in /usr/sbin/pgbouncer /usr/bin/pgbouncer; do
  [ -x "$b" ] && exit 0
done
command -v pgbouncer >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the pgbouncer package (for the transaction-pooling tests)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  exit 0
fi
echo "note: PgBouncer is missing, so the PgBouncer tests will skip: sudo apt-get install pgbouncer" >&2
exit 0
