#!/usr/bin/env bash
# Starting and stopping a local Postgres 15 cluster, written once for the tests, the main
# job and the benchmarks.
#   scripts/cluster.sh start DIR [PORT] [postgres options...]
#       makes the cluster in DIR/data if missing (trust, UTF8, C locale), starts it on PORT
#       (or a free one; a running cluster keeps its port), logs to DIR/postgres.log, puts
#       its socket in DIR, and prints the port
#   scripts/cluster.sh stop DIR [fast|immediate]
set -euo pipefail
source "$(dirname "$0")/env.sh"

command=${1:?start or stop}
dir=${2:?the cluster folder}
data=$dir/data
mkdir -p "$dir"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi

case "$command" in
  start)
    port=${3:-}
    shift $(( $# < 3 ? $# : 3 ))
    if [ ! -f "$data/PG_VERSION" ]; then
      as_postgres "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
    fi
    if as_postgres "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      cat "$dir/port"
      exit 0
    fi
    port=${port:-$(free_port)}
    echo "$port" > "$dir/port"
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $*" start >/dev/null
    echo "$port"
    ;;
  stop)
    as_postgres "$PG_BIN/pg_ctl" -D "$data" -m "${3:-fast}" -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: scripts/cluster.sh start DIR [PORT] [options] | stop DIR [mode]" >&2
    exit 2
    ;;
esac
