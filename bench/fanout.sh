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

# The load generator reports the CPU the server and Postgres used while it wrote and
# drained: on 2 cores its own share varies from run to run, the servers' work per
# delivered row less.
postmaster=$(head -1 "$run/data/postmaster.pid")
bridge() {
  "$loadgen" --url "$bridge_url" --db "$db" --secret "$BENCH_SECRET" \
    --server-pid "$bridge_pid" --postgres-pid "$postmaster" "$@"
}
reference() { "$loadgen" --url "$ref_url" --reference --server-pid "$ref_pid" "$@"; }

echo "## commit -> row at the client: the four cases of Feed v2, part 2, with the reference"
# Each shared case with as many users as connections (one check per identity) and with
# one user (one check for all), then the no-database reference.
# Then the same scope under `visibility => 'scope'` (bench.scoped), as many users.
for case in "1000 10" "1000 100" "10000 10"; do
  set -- $case
  bridge --connections "$1" --mode shared --rate "$2" --seconds "$seconds"
  bridge --connections "$1" --users 1 --mode shared --rate "$2" --seconds "$seconds"
  bridge --connections "$1" --table scoped --mode shared --rate "$2" --seconds "$seconds" | sed 's/^{/{"visibility": "scope", /'
  reference --connections "$1" --mode shared --rate "$2" --seconds "$seconds"
done
bridge --connections 1000 --mode distinct --rate 100 --seconds "$seconds"
reference --connections 1000 --mode distinct --rate 100 --seconds "$seconds"
echo "## a board where policies hide half the rows (1k users, 10 writes/s)"
bridge --connections 1000 --mode half --rate 10 --seconds "$seconds"

echo "## latency with and without long transactions open (1k connections, 100 writes/s, distinct keys)"
# Open for the whole run: an idle-in-transaction session holding an xid in the bench
# database, and another in the postgres database. Version 0.1 delivered nothing while
# either was open; ticks should not notice them.
hold_open() {
  "${psql[@]}" -d "$1" -c "BEGIN; CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1); SELECT pg_sleep($2); COMMIT;" >/dev/null &
}
bridge --connections 1000 --mode distinct --rate 100 --seconds "$seconds" | sed 's/^{/{"long_transaction": false, /'
hold_open bench $((seconds + 5)); held_here=$!
hold_open postgres $((seconds + 5)); held_there=$!
sleep 1
bridge --connections 1000 --mode distinct --rate 100 --seconds "$seconds" | sed 's/^{/{"long_transaction": true, /'
wait "$held_here" "$held_there"
