#!/usr/bin/env bash
# The cost of row-level security policies, per-row helpers against per-statement ones:
# the demo's policies on app.tasks as they are (sql/demo.sql) and as they were
# (bench/policies/per_row.sql), read as bob, one row by key through rowsync.get and a
# board of 1,000 tasks, side by side and alternating. One client: latency, not throughput.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${SECONDS_PER_RUN:-8}
build_release
start_cluster
for db in per_statement per_row; do
  "${psql[@]}" -d postgres -c "CREATE DATABASE $db" >/dev/null
  PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d "$db" -v ON_ERROR_STOP=1 -f sql/demo.sql >/dev/null
  "${psql[@]}" -d "$db" -c "INSERT INTO app.tasks (board_id, title) SELECT '00000000-0000-4000-8000-0000000000b1', 'task ' || i FROM generate_series(1, 996) i" >/dev/null
done
"${psql[@]}" -d per_row -v ON_ERROR_STOP=1 -f bench/policies/per_row.sql >/dev/null
pgbench() {
  as_postgres "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 1 -T "$seconds" -f "$1" "$2" 2>&1 |
    awk '/^latency average/ { print $4 }'
}
printf '| read | per-row helpers, ms | per-statement, ms | ratio |\n|---|---|---|---|\n'
for script in read_one read_board; do
  for round in 1 2; do
    slow=$(pgbench "bench/policies/$script.sql" per_row)
    fast=$(pgbench "bench/policies/$script.sql" per_statement)
    printf '| %s (round %s) | %s | %s | %.2f× |\n' "$script" "$round" "$slow" "$fast" "$(awk -v a="$slow" -v b="$fast" 'BEGIN { print a / b }')"
  done
done
