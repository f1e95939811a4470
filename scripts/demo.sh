#!/usr/bin/env bash
# Runs batisync end to end on embedded defaults: a local PostgreSQL (installed and
# started when missing), migrations, then the worker with its admin listener on
# http://127.0.0.1:8080 (health, readiness, metrics). Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-deps.sh
./scripts/postgres.sh
export BATISYNC__POSTGRES__PORT="${BATISYNC_PGPORT:-55432}"
export BATISYNC__POSTGRES__PASSWORD=batisync
cargo build --release --bin batisync
echo
echo "batisync tourne / is running:  http://127.0.0.1:8080/healthz  /readyz  /metrics"
echo "état / status:  BATISYNC__POSTGRES__PORT=$BATISYNC__POSTGRES__PORT BATISYNC__POSTGRES__PASSWORD=batisync ./target/release/batisync status"
echo
exec ./target/release/batisync run
