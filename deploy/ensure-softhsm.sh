#!/bin/sh
# Make sure SoftHSM2 (a PKCS#11 token in files) is present for the PKCS#11 signing tests.
# As root on Debian/Ubuntu it installs the `softhsm2` package, failing if that fails;
# otherwise it says how and carries on (tests/tlog/log/test_hsm.py then skips, saying why).
set -eu
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so \
         /usr/local/lib/softhsm/libsofthsm2.so; do
  [ -f "$m" ] && command -v softhsm2-util >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the softhsm2 package (a PKCS#11 token for the HSM signing tests)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  exit 0
fi
echo "note: SoftHSM2 is missing, so the PKCS#11 tests will skip: sudo apt-get install softhsm2" >&2
exit 0
