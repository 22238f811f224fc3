#!/usr/bin/env bash
# Fan-out, memory and resume benchmarks (docs/benchmarks.md), bridge and reference server
# driven by the same load generator in the same run. Prints JSON lines.
#   bench/fanout.sh [seconds per run, default 10]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-10}
build_release
start_cluster
start_bridge
loadgen=$CARGO_TARGET_DIR/release/rowsync-loadgen
"$CARGO_TARGET_DIR/release/rowsync-refserver" 127.0.0.1:0 > "$run/ref.log" &
ref_pid=$!
sleep 0.5
ref_url="ws://$(awk '/listening/ { print $2 }' "$run/ref.log")/v1/ws"

echo "## memory: bridge RSS with idle connections (each sent one subscribe)"
echo "{\"connections\": 0, \"rss_kb\": $(rss_kb "$bridge_pid")}"
for n in 1000 10000; do
  "$loadgen" --url "$bridge_url" --secret "$BENCH_SECRET" --connections "$n" --mode idle --seconds 8 >/dev/null &
  gen=$!
  sleep $(( n / 1000 + 3 ))
  echo "{\"connections\": $n, \"rss_kb\": $(rss_kb "$bridge_pid")}"
  wait "$gen" || true
done

# Before the fan-out runs, which leave the bridge busy draining slow clients for a while.
echo "## resume: a client 10k changes behind"
"$loadgen" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --resume 10000

echo "## latency: 1k connections, 100 writes/s, shared and distinct keys"
for mode in shared distinct; do
  "$loadgen" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 1000 --mode "$mode" --rate 100 --seconds "$seconds"
done

echo "## fan-out: 10k connections on one shared scope, bridge and reference"
for rate in 20 50; do
  "$loadgen" --url "$ref_url" --reference --connections 10000 --mode shared --rate "$rate" --seconds "$seconds"
  "$loadgen" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 10000 --mode shared --rate "$rate" --seconds "$seconds"
done

