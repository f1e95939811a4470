#!/usr/bin/env bash
# The whole test suite, as CI runs it: local PostgreSQL and headless Chromium (installed
# when missing), formatting, lints, then every test. Screenshots of the console's
# end-to-end test land in target/e2e-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-deps.sh
./scripts/browser-deps.sh
./scripts/postgres.sh
export BATISYNC_TEST_PG_HOST=127.0.0.1 BATISYNC_TEST_PG_PORT="${BATISYNC_PGPORT:-55432}"
export BATISYNC_TEST_PG_USER=batisync BATISYNC_TEST_PG_PASSWORD=batisync

# Databases left by interrupted test runs.
PGPASSWORD=batisync psql -h 127.0.0.1 -p "$BATISYNC_TEST_PG_PORT" -U batisync -d postgres -qtA \
  -c "SELECT datname FROM pg_database WHERE datname LIKE 'batisync\_test\_%' OR datname LIKE 'batisync\_bench\_%'" |
  while read -r db; do
    PGPASSWORD=batisync psql -h 127.0.0.1 -p "$BATISYNC_TEST_PG_PORT" -U batisync -d postgres -q \
      -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done

if [ -z "${BATISYNC_TEST_MSSQL_URL:-}" ]; then
  echo "note: BATISYNC_TEST_MSSQL_URL is not set: SQL Server tests will be skipped" >&2
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
