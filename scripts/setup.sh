#!/usr/bin/env bash
# Installs what rowsync needs on a Debian machine with Rust, skipping what is already there.
# Idempotent: every step checks before it acts, so warm runs take seconds.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
PGRX_VERSION=0.18.0

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo pkg-config libssl-dev curl chromium nodejs)
# Debian's nodejs comes without npm; NodeSource's bundles it (and conflicts with Debian's npm).
command -v npm >/dev/null || apt_packages+=(npm)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "apt packages present"
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (about 8 minutes cold)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
else
  log "cargo-pgrx $PGRX_VERSION present"
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -q "pg15 = \"$PG_BIN/pg_config\"" "$PGRX_HOME/config.toml" 2>/dev/null; then
  log "cargo pgrx init against Debian's Postgres 15"
  cargo pgrx init --pg15 "$PG_BIN/pg_config"
else
  log "pgrx already initialised for pg15"
fi

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
log "npm packages: the client (TypeScript, React, fake-indexeddb), the React board (Vite), the Yjs tests (yjs, y-websocket)"
npm_install "$ROOT/client"
npm_install "$ROOT/examples/react-board"
npm_install "$ROOT/tests/yjs"
