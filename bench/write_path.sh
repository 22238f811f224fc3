#!/usr/bin/env bash
# Write-path benchmark (docs/benchmarks.md): pgbench at 1, 8 and 16 clients, with a
# bridge listening, on the same single-row update four ways: a plain table; a synced
# table written in plain SQL (the capture trigger); rowsync.apply with one `set`; and a
# naive feed that NOTIFYs on every write. Prints a markdown table.
#   bench/write_path.sh [seconds per run, default 8]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-8}
build_release
start_cluster
start_bridge

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
