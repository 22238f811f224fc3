#!/usr/bin/env bash
# The main job: a local Postgres 15 cluster (data in .run/ under the project, on a free
# port) with the rowsync extension and the example app loaded. Ctrl-C stops it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
install_extension

run=$ROOT/.run
data=$run/pgdata
mkdir -p "$run"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$run"; fi
if [ ! -f "$data/PG_VERSION" ]; then
  as_postgres "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
fi
if as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  port=$(cat "$run/port")
else
  port=$(free_port)
  echo "$port" > "$run/port"
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$run/postgres.log" -w \
    -o "-p $port -k $run -c listen_addresses=127.0.0.1" start >/dev/null
fi
stop() { as_postgres "$PG_BIN/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true; }
trap 'stop; exit 0' INT TERM

export PGOPTIONS='-c client_min_messages=warning'
psql_admin=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres)
if ! "${psql_admin[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'rowsync'" | grep -q 1; then
  "${psql_admin[@]}" -d postgres -c "CREATE DATABASE rowsync"
fi
"${psql_admin[@]}" -d rowsync -v ON_ERROR_STOP=1 -f sql/demo.sql >/dev/null

cat <<MSG

rowsync is running: Postgres 15 on 127.0.0.1:$port, database "rowsync", with the example app.

  psql -h 127.0.0.1 -p $port -U postgres rowsync

Then, as a user of the example app:

  SET ROLE app_user;
  SET request.jwt.claims = '{"sub": "bob"}';
  SELECT rowsync.apply('{"ops": [{"type": "set", "table": "tasks",
      "id": "00000000-0000-4000-8000-000000000001", "key": "status", "value": "doing"}]}');
  RESET ROLE;
  SELECT * FROM rowsync.read_changes(0);

docs/sql.md has the whole SQL surface. Logs: $run/postgres.log. Ctrl-C stops the cluster.
MSG

if [ "${ROWSYNC_DETACH:-0}" = 1 ]; then
  trap - INT TERM
  exit 0
fi
while as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; do sleep 2; done
