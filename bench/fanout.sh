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

# Runs a load, then adds the server's CPU seconds during it (user + system) to its line:
# on 2 cores the generator's share varies from run to run, the server's work per frame less.
measure() {
  local pid=$1; shift
  local before after
  before=$(cpu_ticks "$pid")
  "$loadgen" "$@" | while read -r line; do
    after=$(cpu_ticks "$pid")
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); d["server_cpu_seconds"] = round(int(sys.argv[2]) / int(sys.argv[3]), 2); print(json.dumps(d))' \
      "$line" "$((after - before))" "$(getconf CLK_TCK)"
  done
}

echo "## latency with and without long transactions open (1k connections, 100 writes/s, distinct keys)"
# Open for the whole run: an idle-in-transaction session holding an xid in the bench
# database, and another in the postgres database. Version 0.1 delivered nothing while
# either was open; ticks should not notice them. Alternated, twice, for the noise.
hold_open() {
  "${psql[@]}" -d "$1" -c "BEGIN; CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1); SELECT pg_sleep($2); COMMIT;" >/dev/null &
}
for round in 1 2; do
  measure "$bridge_pid" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 1000 --mode distinct --rate 100 --seconds "$seconds" |
    sed 's/^{/{"long_transaction": false, /'
  hold_open bench $((seconds + 5)); held_here=$!
  hold_open postgres $((seconds + 5)); held_there=$!
  sleep 1
  measure "$bridge_pid" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 1000 --mode distinct --rate 100 --seconds "$seconds" |
    sed 's/^{/{"long_transaction": true, /'
  wait "$held_here" "$held_there"
done

echo "## latency: 1k connections, 100 writes/s, distinct and shared keys (shared: reference too)"
for mode in distinct shared; do
  measure "$bridge_pid" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 1000 --mode "$mode" --rate 100 --seconds "$seconds"
done
measure "$ref_pid" --url "$ref_url" --reference --connections 1000 --mode shared --rate 100 --seconds "$seconds"

echo "## fan-out: 10k connections on one shared scope, bridge and reference"
for rate in 20 50; do
  measure "$ref_pid" --url "$ref_url" --reference --connections 10000 --mode shared --rate "$rate" --seconds "$seconds"
  measure "$bridge_pid" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" --connections 10000 --mode shared --rate "$rate" --seconds "$seconds"
done

