#!/usr/bin/env bash
# Collaborative documents: rowsync's bridges (release builds, on Postgres) against the
# reference y-websocket server (y-websocket 2.1's bin/server.cjs, documents in memory and
# nothing stored), on one generator in the same run (bench/yjs/bench.mjs): propagation on
# one bridge and across two, 100 documents typed at once, 150 clients joining a 4 MB
# document, and memory per idle connection and per open document. Prints one JSON line
# per measurement. @y/websocket-server, the reference's newer package, depends on Yjs 14
# release candidates that the registry here does not have.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_release
npm_install "$ROOT/bench/yjs"
start_cluster
"${psql[@]}" -d postgres -c "CREATE DATABASE yjs" >/dev/null
PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d yjs -v ON_ERROR_STOP=1 -f sql/demo.sql >/dev/null
# 202 tasks on the Launch board, bob an editor there: one document each.
"${psql[@]}" -d yjs -v ON_ERROR_STOP=1 -c "INSERT INTO app.tasks (id, board_id, title)
  SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid,
         '00000000-0000-4000-8000-0000000000b1', 'bench ' || g FROM generate_series(1, 202) g" >/dev/null
yjs_db="host=127.0.0.1 port=$port user=rowsync_authenticator dbname=yjs"

start_yjs_bridge() {
  local p
  p=$(free_port)
  ROWSYNC_DATABASE_URL="$yjs_db" ROWSYNC_JWT_SECRET="$BENCH_SECRET" ROWSYNC_LISTEN="127.0.0.1:$p" \
    "$CARGO_TARGET_DIR/release/rowsync-bridge" > "$run/bridge-$p.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$p/health" >/dev/null && break
    sleep 0.1
  done
  bases+=("ws://127.0.0.1:$p/v1/yjs")
}
pids=()
bases=()
start_yjs_bridge
start_yjs_bridge
ref_port=$(free_port)
HOST=127.0.0.1 PORT=$ref_port node bench/yjs/node_modules/y-websocket-reference/bin/server.cjs > "$run/reference.log" 2>&1 &
ref_pid=$!
sleep 1
bridge_pid=${pids[0]}
trap 'kill "${pids[@]}" 2>/dev/null; stop_all' EXIT
token=$(ROWSYNC_DATABASE_URL="$yjs_db" ROWSYNC_JWT_SECRET="$BENCH_SECRET" "$CARGO_TARGET_DIR/release/rowsync-bridge" --mint-token bob)
docs=$(python3 -c 'import json; print(json.dumps(["tasks/00000000-0000-4000-9000-%012d/description" % g for g in range(1, 203)]))')

BENCH_REF="ws://127.0.0.1:$ref_port" BENCH_A="${bases[0]}" BENCH_B="${bases[1]}" BENCH_TOKEN="$token" \
BENCH_ONLY="${BENCH_ONLY:-}" BENCH_DOCS="$docs" BENCH_PIDS="{\"ref\": $ref_pid, \"a\": ${pids[0]}}" BENCH_SECONDS="${BENCH_SECONDS:-10}" \
  node bench/yjs/bench.mjs
