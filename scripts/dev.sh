#!/usr/bin/env bash
# The main job: a local Postgres 15 cluster (data in .run/ under the project, on a free
# port) with the rowsync extension and the example app, and rowsync-bridge in front of
# it. Ctrl-C stops both.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
install_extension
build_board
cargo build -p rowsync-bridge
bridge_bin=$CARGO_TARGET_DIR/debug/rowsync-bridge

run=$ROOT/.run
port=$(bash scripts/cluster.sh start "$run")
stop() {
  [ -n "${bridge_pid:-}" ] && kill "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null
  bash scripts/cluster.sh stop "$run"
}
trap 'stop; exit 0' INT TERM

export PGOPTIONS='-c client_min_messages=warning'
psql_admin=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres)
# The extension is still 0.1.0 while it is developed: when its script changed since the
# database was made, make the database again (the example data is reloaded).
script_sum=$(cat /usr/share/postgresql/15/extension/rowsync--*.sql | sha256sum | cut -d' ' -f1)
if [ "$(cat "$run/extension.sum" 2>/dev/null)" != "$script_sum" ]; then
  echo "rowsync's SQL changed since the last run: recreating the database"
  "${psql_admin[@]}" -d postgres -c "DROP DATABASE IF EXISTS rowsync WITH (FORCE)" >/dev/null
  echo "$script_sum" > "$run/extension.sum"
fi
if ! "${psql_admin[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'rowsync'" | grep -q 1; then
  "${psql_admin[@]}" -d postgres -c "CREATE DATABASE rowsync"
fi
"${psql_admin[@]}" -d rowsync -v ON_ERROR_STOP=1 -f sql/demo.sql >/dev/null

# The development secret is public: never use it, or tokens minted with it, in production.
export ROWSYNC_DATABASE_URL="host=127.0.0.1 port=$port user=rowsync_authenticator dbname=rowsync"
export ROWSYNC_JWT_SECRET="rowsync-development-secret-never-use-in-production"
bridge_port=8787
if ! python3 -c "import socket; socket.socket().bind(('127.0.0.1', $bridge_port))" 2>/dev/null; then
  bridge_port=$(free_port)
fi
export ROWSYNC_LISTEN="127.0.0.1:$bridge_port"
export ROWSYNC_STATIC_DIR="$ROOT/examples/react-board/dist"
"$bridge_bin" > "$run/bridge.log" 2>&1 &
bridge_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$bridge_port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
token_bob=$("$bridge_bin" --mint-token bob)
token_alice=$("$bridge_bin" --mint-token alice)

cat <<MSG

rowsync-bridge is running on http://127.0.0.1:$bridge_port (log: $run/bridge.log).
Development tokens (an hour; WARNING: signed with a public development secret; never
use that secret in production):
  alice: $token_alice
  bob:   $token_bob

  Demo board, two users (open both; edit, go offline, undo with Ctrl+Z):
    http://127.0.0.1:$bridge_port/demo/?token=$token_alice
    http://127.0.0.1:$bridge_port/demo/?token=$token_bob

  WebSocket: ws://127.0.0.1:$bridge_port/v1/ws?access_token=<token>
  curl -s -H "Authorization: Bearer $token_bob" -d '["tasks:00000000-0000-4000-8000-000000000001"]' \
       http://127.0.0.1:$bridge_port/v1/records

rowsync is running: Postgres 15 on 127.0.0.1:$port, database "rowsync", with the example app.

  psql -h 127.0.0.1 -p $port -U postgres rowsync

Then, as a user of the example app:

  SET ROLE app_user;
  SET request.jwt.claims = '{"sub": "bob"}';
  SELECT rowsync.apply('{"ops": [{"type": "set", "table": "tasks",
      "id": "00000000-0000-4000-8000-000000000001", "key": "status", "value": "doing"}]}');
  RESET ROLE;
  SELECT cursor, tbl, row_id, kind FROM rowsync.changes ORDER BY xid DESC, cursor DESC LIMIT 5;

docs/sql.md has the SQL surface, docs/protocol.md the WebSocket protocol. Postgres log:
$run/postgres.log. Ctrl-C stops the bridge and the cluster.
MSG

if [ "${DETACH:-0}" = 1 ]; then
  trap - INT TERM
  exit 0
fi
wait "$bridge_pid"
stop
