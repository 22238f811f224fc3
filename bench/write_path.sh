#!/usr/bin/env bash
# Write-path benchmark (docs/benchmarks.md): pgbench at 1, 8 and 16 clients, with a
# bridge listening, on the same single-row update four ways: a plain table; a synced
# table written in plain SQL (the capture trigger); rowsync.apply with one `set`; and a
# naive feed that NOTIFYs on every write. Prints a markdown table.
#   bench/write_path.sh [seconds per run, default 8]
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
seconds=${1:-8}
bash scripts/setup.sh >/dev/null
install_extension --release >/dev/null 2>&1
cargo build --release -p rowsync-bridge 2>/dev/null
run=$ROOT/.run/bench
rm -rf "$run"; mkdir -p "$run"
[ "$(id -u)" -eq 0 ] && chown postgres "$run"
port=$(free_port)
as_postgres "$PG_BIN/initdb" -D "$run/pgdata" -A trust -U postgres -E UTF8 --locale=C >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$run/pgdata" -l "$run/postgres.log" -w \
  -o "-p $port -k $run -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
cleanup() {
  [ -n "${bridge_pid:-}" ] && kill "$bridge_pid" 2>/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$run/pgdata" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres)
"${psql[@]}" -d postgres -c "CREATE DATABASE bench" >/dev/null
PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d bench -v ON_ERROR_STOP=1 -f bench/pgbench/setup.sql >/dev/null

ROWSYNC_DATABASE_URL="host=127.0.0.1 port=$port user=postgres dbname=bench" \
ROWSYNC_JWT_SECRET="benchmark-secret-benchmark-secret-0123" \
ROWSYNC_LISTEN="127.0.0.1:$(free_port)" \
  "$CARGO_TARGET_DIR/release/rowsync-bridge" > "$run/bridge.log" 2>&1 &
bridge_pid=$!
sleep 1

declare -A tps latency
for clients in 1 8 16; do
  for script in plain_update synced_update apply_set naive_notify; do
    out=$("$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$clients" -j "$clients" -T "$seconds" \
      -M prepared -f "bench/pgbench/$script.sql" bench 2>&1)
    tps[$script,$clients]=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    latency[$script,$clients]=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
  done
done

echo "| clients | variant | tps | latency (ms) | × plain UPDATE |"
echo "|---|---|---|---|---|"
for clients in 1 8 16; do
  base=${tps[plain_update,$clients]}
  for script in plain_update synced_update apply_set naive_notify; do
    t=${tps[$script,$clients]}
    printf '| %s | %s | %.0f | %s | %.2f |\n' "$clients" "$script" "$t" "${latency[$script,$clients]}" "$(awk "BEGIN { print $t / $base }")"
  done
done
