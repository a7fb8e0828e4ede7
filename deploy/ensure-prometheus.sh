#!/bin/sh
# Make sure promtool is present: the tests check deploy/prometheus/ with `promtool check
# rules`, `promtool test rules` and `promtool check config`. As root on Debian/Ubuntu it
# installs the `prometheus` package (Debian ships promtool in it); only the binary is used,
# so the Prometheus server the package may start is stopped and disabled. Otherwise it
# says how, and those tests skip.
set -eu
{ command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]; } && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing prometheus (for promtool: the alert rules are checked and tested with it)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Where services start on install (systemd, or an init script without a policy-rc.d
  # saying no), the server now listens on 9090: the tests need only promtool.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  if [ -x /etc/init.d/prometheus ]; then /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
  exit 0
fi
echo "note: promtool missing, so the alert rule tests skip: sudo apt-get install prometheus" >&2
exit 0
