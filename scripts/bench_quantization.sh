#!/usr/bin/env bash
# The HNSW graph's copy of the vectors in f32 against the default `auto` (f16 for vectors of
# 512 coordinates or more), on the 1024-d `g` a default fit exports: `server index` and
# `server serve` at c = 32 (wrk, keep-alive), each beside raw ONNX Runtime measured right
# before and after it, the two settings alternated round by round. Prints one line a
# measurement and a markdown table of the medians.
#
#   SKIP_SETUP=1 bash scripts/bench_quantization.sh          # ~6 minutes on 2 cores
#   ROUNDS=5 HEAD=f bash scripts/bench_quantization.sh       # the 128-d model (auto = f32)
#   NORMALIZE=1 bash scripts/bench_quantization.sh           # the same 1024-d `g`, exported
#                                                            # with --normalize (cosine)
#
# Gallery: the fonts domain's unseen-class 128-px PNGs with a 96-px MobileNetV2 (as
# scripts/bench_serving.sh's png96). Needs wrk (apt-get install wrk).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="${WORK:-target/bench_serving}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
HEAD="${HEAD:-g}"
SETTINGS="${SETTINGS:-f32 auto}"
if [ -z "${SKIP_SETUP:-}" ]; then
  bash scripts/setup.sh
  bash scripts/make_fonts_dataset.sh
fi
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q -p trainer -p server --bin trainer --bin server --example ort_throughput
S=target/release/server
ORT=target/release/examples/ort_throughput
LOG="$WORK/logs-quantization"
rm -rf "$LOG"
mkdir -p "$LOG"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
MODEL="$(model 96 "$HEAD")"
if [ -n "${NORMALIZE:-}" ]; then
  # The same weights with the embedding scaled to unit length: served by cosine distance.
  COSINE="${MODEL%.onnx}-cos.onnx"
  fit="$WORK/fit-96"
  [ "$HEAD" = f ] || fit="$fit-$HEAD"
  [ -f "$COSINE" ] || { target/release/trainer export --run "$fit" --normalize --out "$COSINE.tmp" >&2 \
    && mv "$COSINE.tmp" "$COSINE"; }
  MODEL="$COSINE"
fi
IMAGES=deps/fonts-dataset/test
QUERIES="$WORK/queries-png96.txt"
find "$IMAGES" -type f | sort | awk 'NR % 37 == 1 && n++ < 64' > "$QUERIES"
search_lua "$WORK/search.lua"

rate() { grep -o "$1=[0-9.]*" "$2" | tail -n1 | cut -d= -f2; }
raw() { # raw OUTFILE: raw ONNX Runtime, batches of 16 on all the model's streams
  "$ORT" --model "$MODEL" --batch 16 --streams --seconds 2 --repeats 1 > "$1"
  rate images_per_second "$1"
}

for r in $(seq 1 "$ROUNDS"); do
  order="$SETTINGS"
  [ $((r % 2)) = 0 ] && order="$(echo "$SETTINGS" | tr ' ' '\n' | tac | tr '\n' ' ')"
  for q in $order; do
    base="$LOG/$q-$r"
    # --- ingestion ---
    before="$(raw "$base-index-raw-before")"
    rm -rf "$WORK/index-quant-$q"
    STML_SERVER_HNSW__QUANTIZATION="$q" RUST_LOG=info "$S" index --model "$MODEL" --images "$IMAGES" \
      --index "$WORK/index-quant-$q" 2> "$base-index.log"
    after="$(raw "$base-index-raw-after")"
    indexed="$(rate images_per_second "$base-index.log")"
    # --- serving at c = 32, keep-alive ---
    STML_SERVER_HNSW__QUANTIZATION="$q" RUST_LOG=info "$S" serve --model "$MODEL" --index "$WORK/index-quant-$q" \
      --host 127.0.0.1 --port 0 2> "$base-serve.log" &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' EXIT
    url="$(wait_listening "$pid" "$base-serve.log")"
    BENCH_QUERIES="$QUERIES" BENCH_CLOSE=0 wrk -t2 -c32 -d2s -s "$WORK/search.lua" "$url" > /dev/null
    sbefore="$(raw "$base-serve-raw-before")"
    BENCH_QUERIES="$QUERIES" BENCH_CLOSE=0 wrk -t2 -c32 -d"${DURATION}s" --timeout 10s -s "$WORK/search.lua" "$url" \
      | grep '^RESULT' > "$base-wrk"
    safter="$(raw "$base-serve-raw-after")"
    rss="$(rss_kb "$pid")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    python3 - "$q" "$r" "$indexed" "$before" "$after" "$base-wrk" "$sbefore" "$safter" "$rss" <<'PY' | tee -a "$LOG/rows"
import re, sys
q, r, indexed, before, after, wrk, sbefore, safter, rss = sys.argv[1:]
m = dict(re.findall(r"(\w+)=(\d+)", open(wrk).read()))
qps = int(m["requests"]) / (int(m["duration_us"]) / 1e6)
print(f"{q} round={r} index_ips={float(indexed):.0f} index_ratio={float(indexed) / ((float(before) + float(after)) / 2):.3f} "
      f"qps={qps:.0f} serve_ratio={qps / ((float(sbefore) + float(safter)) / 2):.3f} errors={m['errors']} "
      f"p50_ms={int(m['p50_us']) / 1000:.1f} p99_ms={int(m['p99_us']) / 1000:.1f} rss_mib={int(rss) / 1024:.0f}")
PY
  done
done

python3 - "$LOG/rows" "$SETTINGS" <<'PY'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) | {"q": l.split()[0]} for l in open(sys.argv[1])]
print("\n| graph | rounds | `server index` (img/s) | index / raw | QPS c = 32 | serve / raw beside | p99 (ms) | RSS (MiB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for q in sys.argv[2].split():
    mine = [r for r in rows if r["q"] == q]
    med = lambda k: statistics.median(float(r[k]) for r in mine)
    print(f"| {q} | {len(mine)} | {med('index_ips'):.0f} | {med('index_ratio'):.2f}x | {med('qps'):.0f} | "
          f"{med('serve_ratio'):.2f}x | {med('p99_ms'):.1f} | {med('rss_mib'):.0f} |")
PY
