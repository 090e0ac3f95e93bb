#!/usr/bin/env bash
# Soak (issue 14, item 2): a release server on 127.0.0.1 with the tests' tiny model,
# SECONDS (600) of mixed search / insert / delete / read at CONCURRENCY (32) clients from
# `server/examples/soak.rs`, the collection's size held (PREFILL items, as many deletes as
# inserts). Stops by itself after SECONDS or MAX_REQUESTS. Prints the soak's JSON
# (requests, errors, p50/p99 and RSS per minute, the verdict) and exits non-zero when the
# verdict fails: any error, RSS growth of 5 % or more after warm-up, a minute's p99 over
# twice the median minute's, or a collection that changed size.
#
#   bash scripts/soak.sh                 # about 11 minutes, plus a release build
#   SECONDS_=240 WARMUP=60 bash scripts/soak.sh    # a short one (two minutes judged)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench_lib.sh
source scripts/bench_lib.sh
WORK="${WORK:-target/soak}"
DURATION="${SECONDS_:-600}"
CONCURRENCY="${CONCURRENCY:-32}"
PREFILL="${PREFILL:-5000}"
MAX_REQUESTS="${MAX_REQUESTS:-20000000}"
# The first three minutes are warm-up: glibc's per-thread arenas and redb's page cache
# fill over them under this load (the per-minute RSS in BENCHMARKS.md shows the curve).
WARMUP="${WARMUP:-180}"

echo "building the server and the soak client (release)" >&2
cargo build --release -q -p server --bin server --example soak --example fixture
rm -rf "$WORK"
mkdir -p "$WORK"
target/release/examples/fixture "$WORK/fixture" 0 >&2
RUST_LOG=info target/release/server serve --model "$WORK/fixture/model.onnx" --index "$WORK/index" \
  --host 127.0.0.1 --port 0 2> "$WORK/serve.log" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
BASE="$(wait_listening "$SERVER_PID" "$WORK/serve.log")"
echo "server $SERVER_PID at $BASE; soaking for $DURATION s at c = $CONCURRENCY" >&2
target/release/examples/soak --url "$BASE" --pid "$SERVER_PID" --seconds "$DURATION" \
  --concurrency "$CONCURRENCY" --prefill "$PREFILL" --max-requests "$MAX_REQUESTS" --warmup "$WARMUP" \
  | tee "$WORK/soak.json"
