#!/usr/bin/env bash
# Runs batisync end to end on embedded defaults: a local PostgreSQL (installed and
# started when missing), migrations, then `batisync demo`: the real pipeline between a
# SIMULATED Batigest and a SIMULATED BatiSimply, admin listener on
# http://127.0.0.1:8080 (health, readiness, metrics). Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-deps.sh
./scripts/postgres.sh
export BATISYNC__POSTGRES__PORT="${BATISYNC_PGPORT:-55432}"
export BATISYNC__POSTGRES__PASSWORD=batisync
cargo build --release --bin batisync
echo
echo "démo batisync / batisync demo:  http://127.0.0.1:8080/healthz  /readyz  /metrics"
echo "état / status:  BATISYNC__POSTGRES__PORT=$BATISYNC__POSTGRES__PORT BATISYNC__POSTGRES__PASSWORD=batisync ./target/release/batisync status"
echo
exec ./target/release/batisync demo
