#!/usr/bin/env bash
# Write-path benchmark (docs/benchmarks.md): pgbench at 1, 8 and 16 clients, with a
# bridge listening, on the same single-row update seven ways: a plain table; a synced
# table written in plain SQL (the capture trigger); rowsync.apply with one `set`, with a
# transaction id, and with an expected version; the same guarantees written by hand (lock,
# version, outbox, NOTIFY); and a naive feed that NOTIFYs on every write. Prints a
# markdown table, with the WAL each transaction wrote (pg_current_wal_lsn() before and
# after the run, over the transactions pgbench counted), the goals of issue 14 at 16
# clients, and the instructions one transaction costs a backend (callgrind, in
# single-user mode: stable where timings are not; this VM has no hardware counters).
# After one checkpoint and a warm-up of every variant, no checkpoint falls inside the runs
# (max_wal_size in lib.sh): each variant is measured past its full-page writes.
# BENCH_ONLY=bridge instead alternates the plain UPDATE and the trigger path at 16
# clients, without and with a bridge listening, two rounds: what a listening bridge costs.
# BENCH_ONLY=waits samples what the 16 writers wait on (pg_stat_activity every 20 ms)
# during the plain UPDATE, the trigger path and `apply`, with a bridge listening.
#   [BENCH_ONLY=bridge|waits] bench/write_path.sh [seconds per run, default 8]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-8}
build_release
start_cluster

bench() {
  "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$1" -j "$1" -T "$2" \
    -M prepared -f "bench/pgbench/$3.sql" bench 2>&1
}
if [ "${BENCH_ONLY:-}" = bridge ]; then
  tps_of() { bench 16 "$seconds" "$1" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1; }
  "${psql[@]}" -d bench -c CHECKPOINT >/dev/null
  for script in plain_update synced_update; do bench 16 2 "$script" >/dev/null; done
  echo "| round | bridge | plain UPDATE tps | trigger path tps | × plain |"
  echo "|---|---|---|---|---|"
  for round in 1 2; do
    for listening in no yes; do
      [ "$listening" = yes ] && start_bridge
      plain=$(tps_of plain_update)
      synced=$(tps_of synced_update)
      printf '| %s | %s | %.0f | %.0f | %.2f |\n' "$round" "$listening" "$plain" "$synced" \
        "$(awk "BEGIN { print $synced / $plain }")"
      if [ "$listening" = yes ]; then
        kill "$bridge_pid"
        wait "$bridge_pid" 2>/dev/null || true
        bridge_pid=
      fi
    done
  done
  exit 0
fi
start_bridge
if [ "${BENCH_ONLY:-}" = waits ]; then
  "${psql[@]}" -d bench -c CHECKPOINT >/dev/null
  for script in plain_update synced_update apply_set; do bench 16 2 "$script" >/dev/null; done
  for script in plain_update synced_update apply_set; do
    samples=$run/waits.$script
    : > "$samples"
    bench 16 "$seconds" "$script" > "$run/pgbench.$script" &
    pgbench_pid=$!
    while kill -0 "$pgbench_pid" 2>/dev/null; do
      "${psql[@]}" -d bench -Atc "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
        FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active'" >> "$samples"
      sleep 0.02
    done
    echo "## $script: $(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$run/pgbench.$script" | head -1) tps; samples of the writers:"
    sort "$samples" | uniq -c | sort -rn | head -6
  done
  exit 0
fi
variants="plain_update synced_update apply_set apply_set_txid apply_set_version by_hand naive_notify"
"${psql[@]}" -d bench -c CHECKPOINT >/dev/null
for script in $variants; do
  bench 1 2 "$script" >/dev/null
done

lsn() { "${psql[@]}" -d bench -Atc "SELECT pg_current_wal_lsn()"; }
declare -A tps latency wal
for clients in 1 8 16; do
  for script in $variants; do
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
  for script in $variants; do
    t=${tps[$script,$clients]}
    printf '| %s | %s | %.0f | %s | %.2f | %s |\n' "$clients" "$script" "$t" "${latency[$script,$clients]}" "$(awk "BEGIN { print $t / $base }")" "${wal[$script,$clients]}"
  done
done

ratio() { awk "BEGIN { printf \"%.2f\", ${tps[$1,16]} / ${tps[$2,16]} }"; }
echo
echo "| at 16 clients | apply_set | apply_set_txid | apply_set_version | goal |"
echo "|---|---|---|---|---|"
echo "| × bare UPDATE | $(ratio apply_set plain_update) | $(ratio apply_set_txid plain_update) | $(ratio apply_set_version plain_update) | ≥ 0.5 |"
echo "| × trigger path | $(ratio apply_set synced_update) | $(ratio apply_set_txid synced_update) | $(ratio apply_set_version synced_update) | ≥ 0.85 |"
echo "| × by hand | $(ratio apply_set by_hand) | $(ratio apply_set_txid by_hand) | $(ratio apply_set_version by_hand) | ≥ 2 |"

# Instructions per transaction: each variant's statements, 300 of them, in one
# single-user backend under callgrind, less the same backend doing nothing.
kill "$bridge_pid" 2>/dev/null || true
bridge_pid=
bash scripts/cluster.sh stop "$run"
calls=300
statements() {
  local id n
  for _ in $(seq 1 "$1"); do
    id=$((RANDOM % 10000 + 1)); n=$RANDOM
    case $2 in
      plain_update) echo "UPDATE bench.plain SET n = n + 1 WHERE id = $id;" ;;
      synced_update) echo "UPDATE bench.synced SET n = n + 1 WHERE id = $id;" ;;
      naive_notify) echo "UPDATE bench.naive SET n = n + 1 WHERE id = $id;" ;;
      apply_set) echo "SELECT rowsync.apply('{\"ops\": [{\"type\": \"set\", \"table\": \"synced\", \"id\": $id, \"key\": \"n\", \"value\": $n}]}');" ;;
      apply_set_txid) echo "SELECT rowsync.apply(('{\"id\": \"' || gen_random_uuid() || '\", \"ops\": [{\"type\": \"set\", \"table\": \"synced\", \"id\": $id, \"key\": \"n\", \"value\": $n}]}')::jsonb);" ;;
      apply_set_version) echo "SELECT rowsync.apply(('{\"ops\": [{\"type\": \"set\", \"table\": \"synced\", \"id\": $id, \"key\": \"n\", \"value\": $n, \"version\": ' || (SELECT s.version FROM bench.synced s WHERE s.id = $id) || '}]}')::jsonb);" ;;
      by_hand) printf '%s\n' "BEGIN;" "SELECT version FROM bench.hand WHERE id = $id FOR UPDATE;" \
        "UPDATE bench.hand SET n = $n, version = version + 1 WHERE id = $id;" \
        "INSERT INTO bench.hand_outbox (row_id) VALUES ($id);" "SELECT pg_notify('hand', '$id');" "COMMIT;" ;;
    esac
  done
}
instructions() {
  local out=$run/callgrind.$1
  statements "$2" "$1" > "$run/$1.sql"
  chmod a+r "$run/$1.sql"
  as_postgres valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$PG_BIN/postgres" --single -D "$run/data" bench < "$run/$1.sql" > /dev/null 2>&1
  awk '/^summary:/ { print $2 }' "$out"
}
chmod a+rwx "$run"
echo
echo "| variant | instructions per transaction (callgrind) | × plain UPDATE |"
echo "|---|---|---|"
declare -A ir
# The first statements plan and cache: a run of 20 is subtracted from one of 320.
for script in $variants; do
  warm=$(instructions "$script" 20)
  total=$(instructions "$script" $((calls + 20)))
  ir[$script]=$(( (total - warm) / calls ))
done
for script in $variants; do
  printf '| %s | %s | %.2f |\n' "$script" "${ir[$script]}" "$(awk "BEGIN { print ${ir[$script]} / ${ir[plain_update]} }")"
done
