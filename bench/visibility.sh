#!/usr/bin/env bash
# Micro-benchmark of rowsync.visible_rows, the fan-out's check: microseconds per
# (identity, batch) check against identities (1 to 1,000, one user each) and rows per
# batch (1 to 100), under bench.items' policy. Prints JSON lines.
#   bench/visibility.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_release
start_cluster
for rows in 1 10 100; do
  for identities in 1 10 100 1000; do
    # Five runs after a first that makes the plans: the median. (Repeating the call in one
    # statement would not do: Postgres runs a function scan whose arguments do not change
    # once, and reads its result again.)
    call="SELECT count(*) FROM rowsync.visible_rows((SELECT identities FROM args), (SELECT tables FROM args), (SELECT ids FROM args))"
    ms=$("${psql[@]}" -d bench -At -c "
      CREATE TEMP TABLE args AS SELECT
        (SELECT jsonb_agg(jsonb_build_object('role', 'bench_user',
                  'claims', jsonb_build_object('sub', 'u' || u)::text,
                  'rows', (SELECT jsonb_agg(r) FROM generate_series(0, $rows - 1) r)))
           FROM generate_series(0, $identities - 1) u) AS identities,
        (SELECT array_agg('items'::text) FROM generate_series(1, $rows)) AS tables,
        (SELECT array_agg(i::text) FROM generate_series(1, $rows) i) AS ids;
      SELECT count(*) FROM rowsync.visible_rows((SELECT identities FROM args), (SELECT tables FROM args), (SELECT ids FROM args));" \
      -c '\timing on' \
      -c "$call" -c "$call" -c "$call" -c "$call" -c "$call" |
      awk '/^Time:/ { print $2 }' | sort -n | sed -n 3p)
    python3 -c 'import json, sys; i, r, ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]); print(json.dumps({"identities": i, "rows": r, "ms": round(ms, 2), "us_per_check": round(ms * 1000 / i, 1)}))' "$identities" "$rows" "$ms"
  done
done
