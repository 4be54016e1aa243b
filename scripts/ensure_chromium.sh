#!/usr/bin/env bash
# Install Debian's chromium for the browser tests when we can (root + apt); otherwise say why they will skip.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/tmp/ldn-apt-chromium.log 2>&1 \
    || { apt-get update -q >>/tmp/ldn-apt-chromium.log 2>&1 && apt-get install -y -q chromium >>/tmp/ldn-apt-chromium.log 2>&1; } \
    || echo "chromium could not be installed (see /tmp/ldn-apt-chromium.log): browser tests will skip"
else
  echo "No /usr/bin/chromium and no root apt-get here: browser tests will skip"
fi
exit 0
