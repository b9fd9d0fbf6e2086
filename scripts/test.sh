#!/usr/bin/env bash
# Runs every check and test of KalamDB: formatting, clippy, unit tests, the
# integration tests (real server, real RocksDB, real HTTP) and the sqllogictest files.
# Installs what a fresh Debian machine lacks first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The storage tests run a real S3-compatible server: moto_server (PyPI moto[server]).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server] (PyPI)" >&2
  python3 -m pip install --quiet --user 'moto[server]>=5.1,<6'
  export PATH="$HOME/.local/bin:$PATH"
fi
export KALAMDB_MOTO_SERVER="${KALAMDB_MOTO_SERVER:-$(command -v moto_server)}"
# Build outside the clone so that repeated runs are incremental; a fresh machine
# starts from an empty directory.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kalamdb/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
