#!/usr/bin/env bash
# Runs batisync end to end on embedded defaults: a local PostgreSQL (installed and
# started when missing), migrations, then `batisync demo`: the real pipeline between a
# SIMULATED Batigest and a SIMULATED BatiSimply (job sites one way, validated hours the
# other, into a SIMULATED SuiviMO ledger), web console and health/metrics on
# http://127.0.0.1:8080 (the demo prints its console password). Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-deps.sh
./scripts/postgres.sh
export BATISYNC__POSTGRES__PORT="${BATISYNC_PGPORT:-55432}"
export BATISYNC__POSTGRES__PASSWORD=batisync
cargo build --release --bin batisync
echo
echo "démo batisync / batisync demo:  console http://127.0.0.1:8080/   santé / health /healthz /readyz /metrics"
echo "état / status:  BATISYNC__POSTGRES__PORT=$BATISYNC__POSTGRES__PORT BATISYNC__POSTGRES__PASSWORD=batisync ./target/release/batisync status"
echo
exec ./target/release/batisync demo
