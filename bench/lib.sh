# Shared by the benchmarks: a fresh cluster with bench/pgbench/setup.sql loaded, and a
# release bridge in front of it. Sets $port, $bridge_url, $bridge_pid, $run.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
BENCH_SECRET="benchmark-secret-benchmark-secret-0123"

build_release() {
  bash scripts/setup.sh >/dev/null
  install_extension --release >/dev/null 2>&1
  cargo build --release -p rowsync-bridge -p rowsync-bench 2>/dev/null
}

start_cluster() {
  run=$ROOT/.run/bench
  rm -rf "$run"
  port=$(bash scripts/cluster.sh start "$run" "" -c max_connections=200 -c shared_buffers=256MB \
    -c max_wal_size=4GB -c checkpoint_timeout=30min)
  trap stop_all EXIT
  psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres)
  "${psql[@]}" -d postgres -c "CREATE DATABASE bench" >/dev/null
  PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d bench -v ON_ERROR_STOP=1 -f bench/pgbench/setup.sql >/dev/null
  db="host=127.0.0.1 port=$port user=postgres dbname=bench"
}

start_bridge() {
  local bridge_port
  bridge_port=$(free_port)
  ROWSYNC_DATABASE_URL="$db" ROWSYNC_JWT_SECRET="$BENCH_SECRET" ROWSYNC_LISTEN="127.0.0.1:$bridge_port" \
  ROWSYNC_DEFAULT_ROLE=postgres ROWSYNC_MESSAGES_PER_SECOND=1000 \
    "$CARGO_TARGET_DIR/release/rowsync-bridge" > "$run/bridge.log" 2>&1 &
  bridge_pid=$!
  bridge_url="ws://127.0.0.1:$bridge_port/v1/ws"
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$bridge_port/health" >/dev/null && return
    sleep 0.1
  done
  echo "the bridge did not become healthy" >&2
  exit 1
}

stop_all() {
  [ -n "${ref_pid:-}" ] && kill "$ref_pid" 2>/dev/null
  [ -n "${bridge_pid:-}" ] && kill "$bridge_pid" 2>/dev/null
  bash scripts/cluster.sh stop "$run"
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
