#!/bin/sh
# Make sure a Compose is present to validate deploy/compose.yaml (`docker-compose config`
# parses, merges and checks the file against the Compose schema without a Docker engine).
# As root on Debian/Ubuntu it installs the `docker-compose` package (1.29 on Debian 12),
# without the recommended docker.io engine. `docker compose` (v2) is used when present.
# Otherwise it says how, and that test skips.
set -eu
command -v docker-compose >/dev/null 2>&1 && exit 0
docker compose version >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing docker-compose (to validate deploy/compose.yaml; no engine is installed)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  exit 0
fi
echo "note: docker-compose missing, so the compose validation test skips:" \
  "sudo apt-get install --no-install-recommends docker-compose" >&2
exit 0
