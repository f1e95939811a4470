#!/usr/bin/env bash
# Installs the system packages the build needs when they are missing: OpenSSL headers
# and pkg-config (the SQL Server driver uses the platform TLS library, OpenSSL on
# Linux; Windows builds use SChannel and need nothing).
set -euo pipefail
if pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
echo "[build-deps.sh] installing libssl-dev and pkg-config with apt-get" >&2
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config >/dev/null
