#!/usr/bin/env bash
# Ensures a local PostgreSQL for batisync's demo and tests is installed and running,
# with a `batisync` role (password `batisync`, CREATEDB) and a `batisync` database.
#
# It uses a cluster of its own (default /var/tmp/batisync-pg, port 55432, loopback
# only) so it never touches a PostgreSQL the machine already runs. PostgreSQL refuses
# to run as root: when run as root, the server runs as the `postgres` user.
#
# Prints nothing but progress on stderr; exports nothing. Variables:
#   BATISYNC_PGDATA  data directory     (default /var/tmp/batisync-pg)
#   BATISYNC_PGPORT  TCP port           (default 55432)
set -euo pipefail

PGDATA_DIR="${BATISYNC_PGDATA:-/var/tmp/batisync-pg}"
PGPORT="${BATISYNC_PGPORT:-55432}"
log() { echo "[postgres.sh] $*" >&2; }

find_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  fi
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
  log "PostgreSQL is not installed: installing it with apt-get"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BINDIR="$(find_bindir)"
fi

# Who runs the server: ourselves, or `postgres` when we are root.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  RUN=(runuser -u postgres --)
else
  RUN=()
fi

if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
  log "creating a cluster in $PGDATA_DIR"
  mkdir -p "$PGDATA_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR"
  chmod 700 "$PGDATA_DIR"
  "${RUN[@]}" "$BINDIR/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi

if ! "${RUN[@]}" "$BINDIR/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PGPORT"
  "${RUN[@]}" "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 \
    -o "-p $PGPORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1" start >/dev/null
fi

psql_admin() { "${RUN[@]}" "$BINDIR/psql" -h "$PGDATA_DIR" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'batisync'")" != 1 ]; then
  log "creating role and database batisync"
  psql_admin -d postgres -c "CREATE ROLE batisync LOGIN CREATEDB PASSWORD 'batisync'"
fi
if [ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'batisync'")" != 1 ]; then
  psql_admin -d postgres -c "CREATE DATABASE batisync OWNER batisync"
fi
log "ready: postgres://batisync@127.0.0.1:$PGPORT/batisync"
