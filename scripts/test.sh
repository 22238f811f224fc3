#!/usr/bin/env bash
# Runs every test: formatting and lints, the core's unit tests and shared vectors, the
# extension's in-database tests, and the end-to-end tests against real clusters.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (every crate, every target)"
cargo clippy --workspace --all-targets -- -D warnings

step "extension: in-database tests (cargo pgrx test)"
pgdata=/tmp/rowsync-pgrx-test-$(id -u)
mkdir -p "$pgdata"
runas=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$pgdata"
  runas=(--runas postgres)
fi
(cd extension && cargo pgrx test pg15 "${runas[@]}" --pgdata "$pgdata/data")

step "extension: install into Postgres 15 for the end-to-end tests"
install_extension

step "client unit tests and shared vectors (node's test runner)"
node --test client/test/

step "client types: declarations from the JSDoc, a typed app compiles, misuses do not"
(cd client && npm run --silent check)

step "the client as a package: npm pack, installed in a fresh project, imported in node, tsc and Vite"
node client/pack-test/run.mjs

step "the React board: type-checked and built with Vite"
build_board

step "core and bridge unit tests, shared vectors, end-to-end and browser tests"
cargo test --workspace --exclude rowsync
