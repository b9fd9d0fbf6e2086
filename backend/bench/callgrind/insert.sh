#!/usr/bin/env bash
# Instructions of 1,000 single-row INSERTs, counted by callgrind over the whole server
# process (docs/benchmarks.md, "Live queries"): repeatable where wall-clock figures drift.
#
#   insert.sh SERVER_BIN SOCKETS [VAR=value ...]
#
# Starts SERVER_BIN under callgrind with instrumentation off, creates a USER table and
# users, opens SOCKETS x 100 idle subscriptions of other users (0 for none), sends 200
# warm-up INSERTs, then counts the instructions of 1,000 INSERTs. VAR=value pairs go to
# the server's environment (e.g. KALAMDB_LIVE_HISTORY_SECONDS=0). Needs valgrind and,
# for SOCKETS > 0, `pip install websocket-client`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=$1 sockets=$2
shift 2
work=$(mktemp -d)
out=$work/callgrind.out
subs=""
cleanup() {
  [ -n "$subs" ] && kill "$subs" 2>/dev/null || true
  [ -n "${server:-}" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 10000))
env "$@" RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
  "$bin" --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do grep -q "listening" "$work/server.log" && break; sleep 1; done
python3 "$here/insert.py" "$port" setup
if [ "$sockets" -gt 0 ]; then
  python3 "$here/subs.py" "$port" "$sockets" "$work/ready" &
  subs=$!
  while [ ! -f "$work/ready" ]; do sleep 2; kill -0 "$subs"; done
fi
python3 "$here/insert.py" "$port" count
python3 "$here/insert.py" "$port" warm
callgrind_control -i on "$server" >/dev/null
python3 "$here/insert.py" "$port" measure
callgrind_control -i off "$server" >/dev/null
kill "$subs" 2>/dev/null || true
subs=""
kill -INT "$server"
wait "$server" || true
server=""
callgrind_annotate "$out" | grep -m1 "PROGRAM TOTALS"
