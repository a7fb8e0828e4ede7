#!/bin/sh
# Make sure headless Chromium and its WebDriver are present for the explorer's browser tests
# (tests/browser/). As root on Debian/Ubuntu it installs the `chromium` and `chromium-driver`
# packages, failing if that fails; otherwise it says what is missing and carries on (those
# tests then skip, saying why). The tests drive /usr/bin/chromium through /usr/bin/chromedriver
# and never download a browser.
set -eu
want=""
{ command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; } || want=" chromium"
{ command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ]; } || want="$want chromium-driver"
[ -z "$want" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing$want (headless Chromium for the explorer's browser tests)..."
  # Refresh the package lists only when they do not know the packages yet: chromium is large
  # and the update is the slow, networked part.
  for p in $want; do
    if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      break
    fi
  done
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $want >/dev/null
  exit 0
fi
echo "note:$want missing, so the explorer's browser tests will skip:" \
  "sudo apt-get install$want" >&2
exit 0
