#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian `chromium` + `chromium-driver`) for the
# browser tests, when missing. Chromium needs dozens of shared libraries, so it is installed with
# apt (no service is started) rather than unpacked into .tools. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium chromium-driver (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
else
  echo "missing: chromium, chromedriver. Install them (Debian: sudo apt-get install chromium chromium-driver) and re-run." >&2
  exit 1
fi
