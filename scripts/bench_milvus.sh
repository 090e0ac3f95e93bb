#!/usr/bin/env bash
# Search QPS and recall@10 on Milvus against the embedded HNSW index, side by side in one
# run, on the same clustered vectors (issue 13). Starts Milvus standalone from deps/milvus
# on a free loopback port with its data in a temporary folder, runs
# `index_bench --milvus` (the embedded exact and HNSW rows, then the same vectors in a
# Milvus HNSW collection searched through the server's Milvus gallery), and stops Milvus
# by the pid of its process group.
#
#   bash scripts/bench_milvus.sh                       # N=100000, dim 128
#   SKIP_SETUP=1 N=20000 EF=32,64 bash scripts/bench_milvus.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-100000}"
DIM="${DIM:-128}"
EF="${EF:-32,64,128}"
THREADS="${THREADS:-4}"

[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
[ -x deps/milvus/bin/milvus-server ] || { echo "deps/milvus/bin/milvus-server is missing: scripts/setup.sh could not install Milvus" >&2; exit 1; }
cargo build --release -q -p server --features milvus --example index_bench

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PYTHONUNBUFFERED=1 setsid deps/milvus/bin/milvus-server --data "$DATA/milvus" --proxy-port "$PORT" >"$DATA/launcher.log" 2>&1 &
PGID=$!
stop() {
  kill -KILL -- "-$PGID" 2>/dev/null || true
  wait "$PGID" 2>/dev/null || true
  rm -rf "$DATA"
}
trap stop EXIT
for _ in $(seq 1 360); do
  grep -q 'Ctrl+C to exit' "$DATA/launcher.log" 2>/dev/null && break
  kill -0 "$PGID" 2>/dev/null || { cat "$DATA/launcher.log" >&2; exit 1; }
  sleep 0.5
done
grep -q 'Ctrl+C to exit' "$DATA/launcher.log" || { echo "Milvus did not start" >&2; exit 1; }
echo "Milvus 2.3.5 standalone on 127.0.0.1:$PORT; $(nproc) cores; $(date -u +%F)" >&2
target/release/examples/index_bench --n "$N" --dim "$DIM" --ef "$EF" \
  --milvus "http://127.0.0.1:$PORT" --milvus-threads "$THREADS"
