#!/usr/bin/env bash
# Serving benchmarks of `server`, printed as markdown tables:
#   1. index build rate of `server index` on a Fashion-MNIST test gallery;
#   2. /search QPS with p50/p99 latency at several concurrencies (wrk, raw PNG bodies),
#      against the raw ONNX Runtime batch throughput of the same model, measured in the
#      same run, interleaved repeat by repeat (serving overhead = saturated QPS / raw);
#   3. search-only QPS and recall@10 of HNSW vs exact on 100k clustered vectors.
# The model is a real MobileNetV2 exported by `trainer` (a one-step fit: throughput does
# not depend on how well it is trained) at IMAGE_SIZE px. Cached under WORK between runs.
#
#   bash scripts/bench_server.sh              # about 11 minutes on 2 busy cores (plus a first fit)
#   REPEATS=5 DURATION=15 CONCURRENCY="1 8 32" bash scripts/bench_server.sh
#
# Needs wrk (Debian: apt-get install -y wrk) and python3. Settings of the served model
# come from the usual STML_SERVER_* variables, so e.g. STML_SERVER_INTRA_THREADS=1 applies
# to both the server and the raw ONNX Runtime measurement.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="${WORK:-target/bench_server}"
IMAGE_SIZE="${IMAGE_SIZE:-64}"
GALLERY="${GALLERY:-2000}"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-1 4 16 64}"
ORT_SECONDS="${ORT_SECONDS:-4}"
INDEX_N="${INDEX_N:-100000}"
INDEX_EF="${INDEX_EF:-32,64,128,256}"
# Empty: the server's hnsw.ef_construction. The 100k build dominates the run time (7 of 10.7
# minutes at load average 7 on 2 cores); INDEX_EF_CONSTRUCTION=100 halves it.
INDEX_EF_CONSTRUCTION="${INDEX_EF_CONSTRUCTION:-}"

command -v wrk >/dev/null || { echo "wrk is not installed (Debian: apt-get install -y wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed for the summary" >&2; exit 1; }
mkdir -p "$WORK"
LOG="$WORK/logs"
rm -rf "$LOG"
mkdir -p "$LOG"

echo "building server and its benchmark examples (release)" >&2
cargo build --release -q -p server --bin server --example ort_throughput --example index_bench
S=target/release/server
ORT=target/release/examples/ort_throughput
IDX=target/release/examples/index_bench

MODEL="$WORK/model-$IMAGE_SIZE.onnx"
if [ ! -f "$MODEL" ]; then
  echo "exporting a MobileNetV2 model at $IMAGE_SIZE px (one training step; a few minutes on 2 cores)" >&2
  cargo build --release -q -p trainer
  rm -rf "$WORK/fit-$IMAGE_SIZE"
  target/release/trainer fit --data deps/fashion-mnist --out "$WORK/fit-$IMAGE_SIZE" --image-size "$IMAGE_SIZE" \
    --limit 600 --eval-limit 200 --epochs 1 --batch-size 60 --max-steps-per-epoch 1 --served-head f \
    > "$LOG/fit.json" 2> "$LOG/fit.log"
  target/release/trainer export --run "$WORK/fit-$IMAGE_SIZE" --out "$MODEL.tmp" >&2
  mv "$MODEL.tmp" "$MODEL"
fi
IMAGES="$WORK/gallery-$GALLERY"
if [ ! -d "$IMAGES" ]; then
  rm -rf "$IMAGES.tmp"
  target/release/trainer write-images --data deps/fashion-mnist --split test --limit "$GALLERY" --out "$IMAGES.tmp" >&2
  mv "$IMAGES.tmp" "$IMAGES"
fi

# --- 1. index build rate ----------------------------------------------------------------
INDEX="$WORK/index"
: > "$LOG/index_rates"
for r in $(seq 1 "$REPEATS"); do
  rm -rf "$INDEX"
  echo "index build $r/$REPEATS" >&2
  RUST_LOG=info "$S" index --model "$MODEL" --images "$IMAGES" --index "$INDEX" 2> "$LOG/index-$r.log"
  grep -o 'images_per_second=[0-9.]*' "$LOG/index-$r.log" | cut -d= -f2 >> "$LOG/index_rates"
done

# --- 2. serving vs raw ONNX Runtime -----------------------------------------------------
find "$IMAGES" -name '*.png' | sort | awk 'NR <= 64' > "$WORK/queries.txt"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
search_lua "$WORK/search.lua"

RUST_LOG=info "$S" serve --model "$MODEL" --index "$INDEX" --host 127.0.0.1 --port 0 2> "$LOG/serve.log" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
BASE=""
for _ in $(seq 1 300); do
  BASE="$(grep -o 'listening on http://[0-9.:]*' "$LOG/serve.log" | head -n1 | cut -d' ' -f3 || true)"
  [ -n "$BASE" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG/serve.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$BASE" ] || { echo "the server did not start" >&2; cat "$LOG/serve.log" >&2; exit 1; }

metric() { # metric NAME: the value of an unlabelled metric line
  curl -fsS "$BASE/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
load() { # load CONCURRENCY SECONDS OUTFILE
  local c="$1" threads=$(( $1 < 2 ? $1 : 2 ))
  local b0 n0 t0
  b0="$(metric stml_inference_batch_size_sum)"; n0="$(metric stml_inference_batch_size_count)"
  t0="$(metric stml_inference_duration_seconds_sum)"
  BENCH_QUERIES="$WORK/queries.txt" wrk -t "$threads" -c "$c" -d "${2}s" --timeout 10s -s "$WORK/search.lua" "$BASE" \
    | grep '^RESULT' | tr '\n' ' ' > "$3"
  echo "batch_sum=$(python3 -c "print($(metric stml_inference_batch_size_sum) - $b0)") \
batch_count=$(python3 -c "print($(metric stml_inference_batch_size_count) - $n0)") \
infer_s=$(python3 -c "print($(metric stml_inference_duration_seconds_sum) - $t0)")" >> "$3"
}

echo "warming up the server" >&2
load 16 3 "$LOG/warmup"
for r in $(seq 1 "$REPEATS"); do
  echo "repeat $r/$REPEATS: raw ONNX Runtime ${ORT_SECONDS}s, wrk ${DURATION}s at each of: $CONCURRENCY, raw again" >&2
  "$ORT" --model "$MODEL" --seconds "$ORT_SECONDS" --repeats 1 > "$LOG/ort-$r-before"
  for c in $CONCURRENCY; do
    load "$c" "$DURATION" "$LOG/wrk-$r-c$c"
  done
  "$ORT" --model "$MODEL" --seconds "$ORT_SECONDS" --repeats 1 > "$LOG/ort-$r-after"
done
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
trap - EXIT

# --- 3. index search-only -----------------------------------------------------------------
echo "index benchmark: $INDEX_N vectors" >&2
"$IDX" --n "$INDEX_N" --dim 128 --ef "$INDEX_EF" ${INDEX_EF_CONSTRUCTION:+--ef-construction "$INDEX_EF_CONSTRUCTION"} \
  > "$LOG/index_bench.md"

# --- summary ---------------------------------------------------------------------------
LOG="$LOG" REPEATS="$REPEATS" CONCURRENCY="$CONCURRENCY" DURATION="$DURATION" MODEL="$MODEL" \
IMAGE_SIZE="$IMAGE_SIZE" GALLERY="$GALLERY" python3 - <<'PY'
import os, re, statistics, subprocess, datetime
log, reps = os.environ["LOG"], int(os.environ["REPEATS"])
conc = [int(c) for c in os.environ["CONCURRENCY"].split()]
med = statistics.median

def fields(path):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.e+-]+)", open(path).read())}

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
print(f"Machine: {os.cpu_count()} CPUs ({subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} usable), "
      f"{cpu}; {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}.")
load = open("/proc/loadavg").read().split()[:3]
print(f"Load average at the end of the run (1, 5, 15 min): {' '.join(load)}.")
print()
# Raw throughput of a repeat: the mean of the runs just before and just after its load tests.
raw = [(fields(f"{log}/ort-{r}-before")["images_per_second"] + fields(f"{log}/ort-{r}-after")["images_per_second"]) / 2
       for r in range(1, reps + 1)]
info = open(f"{log}/ort-1-before").read()
m = re.search(r"arch=(\S+) input=(\S+) batch=(\d+) intra_threads=(\d+)", info)
print(f"Model: {m.group(1)} at {m.group(2)} px, 128-d embedding ({os.environ['MODEL']}); "
      f"batcher max batch {m.group(3)}, ORT intra-op threads {m.group(4)} (0 = ORT default). "
      f"Medians of {reps} repeats; each repeat measures raw ONNX Runtime, then wrk for {os.environ['DURATION']} s "
      "at each concurrency, then raw ONNX Runtime again; a repeat's ratio divides its QPS by the mean of its two raw "
      "figures. Mean batch: images per inference call; inference busy: share of the wall time the inference thread "
      "spent in ONNX Runtime; in-server ORT: images per second of that time.")
print()
rates = [float(x) for x in open(f"{log}/index_rates").read().split()]
print("| index build (`server index`, %s Fashion-MNIST PNGs) | images/s |" % os.environ["GALLERY"])
print("|---|---:|")
print(f"| median of {len(rates)} | {med(rates):.1f} |")
print()
print("| concurrency | QPS | p50 (ms) | p99 (ms) | errors | mean batch | inference busy | in-server ORT (img/s) "
      "| QPS / raw ORT |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in conc:
    w = [fields(f"{log}/wrk-{r}-c{c}") for r in range(1, reps + 1)]
    qps = [x["requests"] / (x["duration_us"] / 1e6) for x in w]
    ratio = [q / rw for q, rw in zip(qps, raw)]
    batch = [x["batch_sum"] / max(x["batch_count"], 1) for x in w]
    busy = [x["infer_s"] / (x["duration_us"] / 1e6) for x in w]
    inside = [x["batch_sum"] / max(x["infer_s"], 1e-9) for x in w]
    print(f"| {c} | {med(qps):.1f} | {med([x['p50_us'] for x in w]) / 1e3:.1f} | {med([x['p99_us'] for x in w]) / 1e3:.1f} "
          f"| {int(sum(x['errors'] for x in w))} | {med(batch):.1f} | {100 * med(busy):.0f}% | {med(inside):.0f} "
          f"| {med(ratio):.2f} |")
print()
print(f"Raw ONNX Runtime, batches of {m.group(3)} back to back (mean of before and after each repeat): "
      f"median {med(raw):.1f} images/s "
      f"(repeats: {', '.join(f'{x:.1f}' for x in raw)}).")
print()
print(open(f"{log}/index_bench.md").read().rstrip())
PY
