#!/bin/sh
# Make the files deploy/compose.yaml mounts as secrets, in deploy/secrets/ (or $1): never
# in the image, never in git (deploy/.gitignore). Idempotent: what exists is kept.
#   log.key, log.vkey            the log's key pair (tlog keygen)
#   witness.key, witness.vkey    the demo witness's key pair (tlog-verify witness keygen)
#   witness.policy               the log and that witness, its URL in the compose network
#   postgres_password, pgpass    the database password, and the libpq password file tlog reads
#   grafana_admin_password
# Needs `tlog` and `tlog-verify` (pip install . ; or set TLOG and TLOG_VERIFY, e.g. to
# ".venv/bin/tlog"). Compose bind-mounts secret files as they are on the host, so each is
# given to the user of the container that reads it: 10001 (the tlog image), 999
# (postgres), 472 (grafana). That needs root; otherwise it says what to run.
set -eu
out=${1:-$(dirname "$0")/secrets}
origin=${TLOG_ORIGIN:-log.example.org/releases}
witness=${TLOG_WITNESS_NAME:-witness.example/w1}
tlog=${TLOG:-tlog}
verify=${TLOG_VERIFY:-tlog-verify}
umask 077
mkdir -p "$out"

stem() { echo "$1" | tr / _; }

if [ ! -e "$out/log.key" ]; then
  $tlog keygen --name "$origin" --out "$out/tmp" >/dev/null
  mv "$out/tmp/$(stem "$origin").key" "$out/log.key"
  mv "$out/tmp/$(stem "$origin").vkey" "$out/log.vkey"
  rmdir "$out/tmp"
fi
if [ ! -e "$out/witness.key" ]; then
  $verify witness keygen --name "$witness" --out "$out/tmp" >/dev/null
  mv "$out/tmp/$(stem "$witness").key" "$out/witness.key"
  mv "$out/tmp/$(stem "$witness").vkey" "$out/witness.vkey"
  rmdir "$out/tmp"
fi
if [ ! -e "$out/witness.policy" ]; then
  printf 'log %s\nwitness w1 %s http://witness:7380\nquorum w1\n' \
    "$(cat "$out/log.vkey")" "$(cat "$out/witness.vkey")" > "$out/witness.policy"
fi
password() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
[ -e "$out/postgres_password" ] || password > "$out/postgres_password"
[ -e "$out/pgpass" ] || echo "postgres:5432:tlog:tlog:$(cat "$out/postgres_password")" > "$out/pgpass"
[ -e "$out/grafana_admin_password" ] || password > "$out/grafana_admin_password"

chmod 600 "$out/log.key" "$out/witness.key" "$out/pgpass" "$out/postgres_password" \
  "$out/grafana_admin_password"
chmod 644 "$out/log.vkey" "$out/witness.vkey" "$out/witness.policy"
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 "$out/log.key" "$out/witness.key" "$out/pgpass"
  chown 999:999 "$out/postgres_password"
  chown 472:0 "$out/grafana_admin_password"
else
  echo "note: as root, give the secrets to the containers' users:" >&2
  echo "  sudo chown 10001:10001 $out/log.key $out/witness.key $out/pgpass" >&2
  echo "  sudo chown 999:999 $out/postgres_password; sudo chown 472:0 $out/grafana_admin_password" >&2
fi
echo "secrets in $out; log key $(cat "$out/log.vkey")"
