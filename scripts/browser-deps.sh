#!/usr/bin/env bash
# Installs Chromium and its WebDriver (Debian packages) when missing: the console's
# end-to-end test drives a real headless Chromium.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "[browser-deps.sh] installing chromium and chromium-driver with apt-get" >&2
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
