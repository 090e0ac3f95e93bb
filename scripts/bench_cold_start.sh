#!/usr/bin/env bash
# Cold start and memory of a large collection (issue 11, items 4 and 5).
#
# Writes N synthetic items (clustered unit vectors of the model's dimension, a label and
# a path each, a 4 KiB filler thumbnail) for the 96-px benchmark model with
# server/examples/synthetic_collection.rs, once; then, REPEATS times, starts `server serve`
# on it and measures the time from spawning the process to the first 200 of /readyz and
# to the first answered /search, the server's own "opened the index" time, and its RSS
# when ready and after 200 searches. The page cache is warm (the files were just written
# or read), as after a restart on the same machine.
#
#   bash scripts/bench_cold_start.sh                  # N=100000, ~4 minutes on 2 cores
#   SKIP_SETUP=1 N=20000 REPEATS=1 bash scripts/bench_cold_start.sh
#   SKIP_SETUP=1 HEAD=g bash scripts/bench_cold_start.sh     # 1024-d vectors (the default export)
#   SKIP_SETUP=1 HEAD=g QUANT=f16 bash scripts/bench_cold_start.sh   # [hnsw] quantization = "f16"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-100000}"
REPEATS="${REPEATS:-3}"
HEAD="${HEAD:-f}"   # f: issue 11's 128-d model; g: the 1024-d vectors a default fit serves
QUANT="${QUANT:-f32}"   # the graph's copy of the vectors: f32 | f16 (the models are Euclidean: no i8)
export STML_SERVER_HNSW__QUANTIZATION="$QUANT"
WORK="${WORK:-target/bench_serving}"
LOG="$WORK/logs-cold-start"
[ "$HEAD" = f ] || LOG="$LOG-$HEAD"
[ "$QUANT" = f32 ] || LOG="$LOG-$QUANT"

[ -n "${SKIP_SETUP:-}" ] || bash scripts/setup.sh
cargo build --release -q -p trainer -p server --bin trainer --bin server --example synthetic_collection
mkdir -p "$WORK" "$LOG"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

MODEL="$(model 96 "$HEAD")"
INDEX="$WORK/synthetic-$N"
[ "$HEAD" = f ] || INDEX="$WORK/synthetic-$N-$HEAD"
[ "$QUANT" = f32 ] || INDEX="$INDEX-$QUANT"
if [ ! -f "$INDEX/.complete" ]; then
  rm -rf "$INDEX"
  echo "writing $N synthetic items to $INDEX" >&2
  target/release/examples/synthetic_collection --model "$MODEL" --index "$INDEX" --n "$N" >&2
  touch "$INDEX/.complete"
fi
QUERY="$(find deps/photos -type f \( -name '*.jpg' -o -name '*.png' \) | sort | head -n1)"

python3 - "$MODEL" "$INDEX" "$QUERY" "$REPEATS" "$LOG" "$N" <<'PY'
import json, os, re, socket, statistics, subprocess, sys, time, urllib.request

model, index, query, repeats, log, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
body = open(query, "rb").read()

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

def search(url):
    req = urllib.request.Request(url + "/search?k=10", data=body, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and len(json.load(r)["hits"]) == 10

rows = []
for r in range(repeats):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    url = f"http://127.0.0.1:{port}"
    err = open(f"{log}/serve-{r}.log", "w")
    t0 = time.perf_counter()
    p = subprocess.Popen(["target/release/server", "serve", "--model", model, "--index", index,
                          "--host", "127.0.0.1", "--port", str(port)], stderr=err, env={"RUST_LOG": "info,ort=warn", "PATH": "/usr/bin:/bin",
                               "STML_SERVER_HNSW__QUANTIZATION": os.environ["STML_SERVER_HNSW__QUANTIZATION"]})
    ready = None
    while time.perf_counter() - t0 < 300:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    ready = time.perf_counter() - t0
                    break
        except OSError:
            if p.poll() is not None:
                sys.exit(f"the server exited: see {log}/serve-{r}.log")
            time.sleep(0.01)
    search(url)
    first = time.perf_counter() - t0
    rss_ready = rss_kb(p.pid)
    for _ in range(200):
        search(url)
    rss_busy = rss_kb(p.pid)
    p.terminate(); p.wait(timeout=120); err.close()
    text = open(f"{log}/serve-{r}.log").read()
    opened = float(re.search(r"opened the index .*?seconds=([0-9.]+)", text).group(1))
    graph = "reloaded" if "reloaded the HNSW graph" in text else "rebuilt"
    rows.append((ready, first, opened, rss_ready, rss_busy, graph))
    print(f"repeat {r + 1}: ready {ready:.2f} s, first answer {first:.2f} s, index opened in {opened:.2f} s, "
          f"RSS {rss_ready / 1024:.0f} / {rss_busy / 1024:.0f} MiB, graph {graph}", file=sys.stderr)

med = lambda i: statistics.median(row[i] for row in rows)
print(f"| items | ready (s) | first answer (s) | index opened (s) | RSS ready (MiB) | RSS after 200 searches (MiB) |")
print(f"|---:|---:|---:|---:|---:|---:|")
print(f"| {n:,} | {med(0):.2f} | {med(1):.2f} | {med(2):.2f} | {med(3) / 1024:.0f} | {med(4) / 1024:.0f} |")
PY
