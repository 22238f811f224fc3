#!/usr/bin/env bash
# Write-path benchmark (docs/benchmarks.md): pgbench at 1, 8 and 16 clients, with a
# bridge listening, on the same single-row update four ways: a plain table; a synced
# table written in plain SQL (the capture trigger); rowsync.apply with one `set`; and a
# naive feed that NOTIFYs on every write. Prints a markdown table, with the WAL each
# transaction wrote (pg_current_wal_lsn() before and after the run, over the transactions
# pgbench counted).
# After one checkpoint and a warm-up of every variant, no checkpoint falls inside the runs
# (max_wal_size in lib.sh): each variant is measured past its full-page writes.
#   bench/write_path.sh [seconds per run, default 8]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-8}
build_release
start_cluster
start_bridge

bench() {
  "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$1" -j "$1" -T "$2" \
    -M prepared -f "bench/pgbench/$3.sql" bench 2>&1
}
"${psql[@]}" -d bench -c CHECKPOINT >/dev/null
for script in plain_update synced_update apply_set naive_notify; do
  bench 1 2 "$script" >/dev/null
done

lsn() { "${psql[@]}" -d bench -Atc "SELECT pg_current_wal_lsn()"; }
declare -A tps latency wal
for clients in 1 8 16; do
  for script in plain_update synced_update apply_set naive_notify; do
    before=$(lsn)
    out=$(bench "$clients" "$seconds" "$script")
    after=$(lsn)
    tps[$script,$clients]=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    latency[$script,$clients]=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    done_tx=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
    bytes=$("${psql[@]}" -d bench -Atc "SELECT pg_wal_lsn_diff('$after', '$before')")
    wal[$script,$clients]=$(awk "BEGIN { printf \"%.0f\", $bytes / $done_tx }")
  done
done

echo "| clients | variant | tps | latency (ms) | × plain UPDATE | WAL bytes per transaction |"
echo "|---|---|---|---|---|---|"
for clients in 1 8 16; do
  base=${tps[plain_update,$clients]}
  for script in plain_update synced_update apply_set naive_notify; do
    t=${tps[$script,$clients]}
    printf '| %s | %s | %.0f | %s | %.2f | %s |\n' "$clients" "$script" "$t" "${latency[$script,$clients]}" "$(awk "BEGIN { print $t / $base }")" "${wal[$script,$clients]}"
  done
done
