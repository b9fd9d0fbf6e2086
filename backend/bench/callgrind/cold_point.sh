#!/usr/bin/env bash
# Instructions of 100 point reads of flushed rows, counted by callgrind over the whole
# server process (docs/benchmarks.md, "Read path, second pass").
#
#   cold_point.sh SERVER_BIN
#
# Starts SERVER_BIN under callgrind with instrumentation off, fills root's scope of the
# USER table bench.c (id BIGINT PRIMARY KEY, kind INT, payload TEXT) with 100,000 rows,
# flushes it (one segment of 10,000-row row groups), sends 10 warm-up reads, then counts
# 100 `SELECT ... WHERE id = k` of cold rows and prints the total (divide by 100).
# Needs valgrind and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=$1
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
python3 "$here/cold_point.py" "$port" setup
python3 "$here/cold_point.py" "$port" 10
callgrind_control -i on "$server" >/dev/null
python3 "$here/cold_point.py" "$port" 100
callgrind_control -i off "$server" >/dev/null
kill -INT "$server"
wait "$server" || true
server=""
callgrind_annotate "$out" | grep -m1 "PROGRAM TOTALS"
