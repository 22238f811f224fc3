# Shared by the scripts: paths, the build cache, and running things as `postgres` when
# we are root (Postgres refuses to run as root).
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BIN/pg_config
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Outside the clone, so that a fresh clone on the same machine builds warm.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rowsync/target}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Installs the extension into Debian's Postgres 15 (the system's extension folders).
install_extension() {
  local flags=(--pg-config "$PG_CONFIG")
  [ "$(id -u)" -eq 0 ] || flags+=(--sudo)
  (cd "$ROOT/extension" && cargo pgrx install "${flags[@]}" "$@")
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Builds the React board (examples/react-board/dist), the demo the bridge serves at /demo/:
# the client's type declarations first, which the board's type check reads.
build_board() {
  (cd "$ROOT/client" && npm run --silent types)
  (cd "$ROOT/examples/react-board" && npm run --silent check && npm run --silent build -- --logLevel warn)
}

# Installs a folder's npm packages exactly as its lock says, only when the lock changed
# since the last install.
npm_install() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
