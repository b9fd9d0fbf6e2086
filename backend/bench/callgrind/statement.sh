#!/usr/bin/env bash
# Instructions per request of one statement (or of GET /health), counted by callgrind
# over the whole server process (docs/benchmarks.md, "Read path, second pass"):
# repeatable where wall-clock figures drift.
#
#   statement.sh SERVER_BIN 'SQL'     ($i in the SQL becomes a key of the table, $u a new key)
#   statement.sh SERVER_BIN health
#
# Starts SERVER_BIN under callgrind with instrumentation off, creates the SHARED table
# bench.t (id BIGINT PRIMARY KEY, kind INT, payload TEXT) with 10,000 rows — and, when
# the SQL names bench.c, root's USER table bench.c of the same shape with 100,000 rows,
# flushed to Parquet (point reads of cold rows) —, sends 20 warm-up requests as root,
# then counts the instructions of 200 requests and prints the total (divide by 200).
# Needs valgrind and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=$1 query=$2
work=$(mktemp -d)
out=$work/callgrind.out
cleanup() {
  [ -n "${server:-}" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "$bin" --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do grep -q "listening" "$work/server.log" && break; sleep 1; done
setup=setup
case "$query" in *bench.c*) setup=setup-cold ;; esac
python3 "$here/statement.py" "$port" "$setup"
python3 "$here/statement.py" "$port" 20 "$query"
callgrind_control -i on "$server" >/dev/null
python3 "$here/statement.py" "$port" 200 "$query"
callgrind_control -i off "$server" >/dev/null
kill -INT "$server"
wait "$server" || true
server=""
callgrind_annotate "$out" | grep -m1 "PROGRAM TOTALS"
