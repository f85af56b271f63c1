#!/usr/bin/env bash
# Install Debian's chromium for the browser tests if it is missing (idempotent, needs root or sudo).
set -euo pipefail

BROWSER=${DFP_TEST_CHROMIUM:-/usr/bin/chromium}
[ -x "$BROWSER" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing chromium for the browser tests" >&2
# Another install may hold dpkg's lock for a while: wait for it rather than fail.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q \
  --no-install-recommends chromium fonts-dejavu-core
[ -x "$BROWSER" ] || { echo "chromium is not at $BROWSER after installing it" >&2; exit 1; }
