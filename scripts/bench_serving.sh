#!/usr/bin/env bash
# Serving and ingestion against the raw inference limit and the Python stack (issue 11).
#
# For each gallery, in one run: `server index` (images/s) beside raw ONNX Runtime batch
# throughput; then this server and scripts/baseline_server.py (aiohttp + onnxruntime +
# hnswlib) serve the same model and gallery side by side, and repeat by repeat, interleaved,
# the script measures raw ONNX Runtime (batches of 1, 8 and 32 on the model's wide
# session, 8 and 32 on all its streams at once, and the decode + preprocess time of the
# query files) and `wrk` POSTing gallery files to `/search?k=10`
# at each concurrency, with keep-alive and with a new connection per request
# (`Connection: close`), against each server in turn, with raw ONNX Runtime's best
# configuration measured again right before and after each load of this server (the
# "beside" ratio). A last ratio divides by the best batch of the one session of all the
# cores alone (batch 1, 8 or 32, the same repeat): the raw figure of issue 11's own table
# ("2 threads"), which the server's streams outrun. The client's CPU use is reported.
# A markdown summary (medians of the repeats) is printed and kept in WORK/summary.md
# (summary-g.md for HEAD=g).
#
#   bash scripts/bench_serving.sh                         # both galleries, ~30 minutes on 2 cores
#   GALLERIES=png96 REPEATS=1 DURATION=4 bash scripts/bench_serving.sh   # a quick look
#
# Galleries: png96 (the fonts domain's 4,795 unseen-class 128-px PNGs, a 96-px model) and
# jpg224 (JPEG_COUNT 1-megapixel JPEGs made from them by scripts/make_jpeg_gallery.py, a
# 224-px model). Models: MobileNetV2, d = 128 (its `f`), exported after one training step
# (speed does not depend on training); HEAD=g serves the 1024-d `g` a default fit exports.
# Needs root for `apt-get install wrk` if wrk is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="${WORK:-target/bench_serving}"
GALLERIES="${GALLERIES:-png96 jpg224}"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-8}"
CONCURRENCY="${CONCURRENCY:-1 8 32}"
JPEG_COUNT="${JPEG_COUNT:-1000}"
ORT_SECONDS="${ORT_SECONDS:-2}"
VENV="$ROOT/deps/baseline-venv"

if [ -z "${SKIP_SETUP:-}" ]; then
  bash scripts/setup.sh
  bash scripts/make_fonts_dataset.sh
fi
cargo build --release -q -p trainer -p server --bin trainer --bin server --example ort_throughput
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "wrk is missing: apt-get install -y wrk (as root)" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq wrk >&2
fi
if [ ! -f "$VENV/.ready" ]; then
  echo "installing the Python baseline's packages into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q aiohttp==3.14.5 onnxruntime==1.31.1 hnswlib==0.8.0 pillow==11.3.0 numpy==2.2.6 >&2
  touch "$VENV/.ready"
fi

S=target/release/server
ORT=target/release/examples/ort_throughput
mkdir -p "$WORK"
HEAD="${HEAD:-f}"
SUFFIX=""   # HEAD=g keeps its logs, indexes and summary apart from the 128-d model's
[ "$HEAD" = f ] || SUFFIX="-$HEAD"
LOG="$WORK/logs$SUFFIX"
rm -rf "$LOG"
mkdir -p "$LOG"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

gallery() { # gallery NAME: the folder of images
  case "$1" in
    png96) echo "deps/fonts-dataset/test" ;;
    jpg224)
      local g="$WORK/jpeg-$JPEG_COUNT"
      [ -d "$g" ] || "$VENV/bin/python" scripts/make_jpeg_gallery.py --src deps/fonts-dataset/test --out "$g" \
        --count "$JPEG_COUNT" >&2
      echo "$g" ;;
    *) echo "unknown gallery $1 (png96, jpg224)" >&2; exit 2 ;;
  esac
}
search_lua "$WORK/search.lua"

load() { # load URL CONCURRENCY CLOSE OUTFILE
  local threads=$(( $2 < 2 ? $2 : 2 ))
  BENCH_QUERIES="$QUERIES" BENCH_CLOSE="$3" /usr/bin/time -f "CLIENT user_s=%U sys_s=%S wall_s=%e" -o "$4.time" \
    wrk -t "$threads" -c "$2" -d "${DURATION}s" --timeout 10s -s "$WORK/search.lua" "$1" | grep '^RESULT' > "$4"
  cat "$4.time" >> "$4"
}

for g in $GALLERIES; do
  case "$g" in png96) size=96 ;; jpg224) size=224 ;; *) echo "unknown gallery $g" >&2; exit 2 ;; esac
  MODEL="$(model "$size" "$HEAD")"
  IMAGES="$(gallery "$g")"
  QUERIES="$WORK/queries-$g.txt"
  find "$IMAGES" -type f | sort | awk 'NR % 37 == 1 && n++ < 64' > "$QUERIES"

  # --- ingestion: `server index` beside raw batch throughput ----------------------------
  echo "[$g] server index $IMAGES" >&2
  "$ORT" --model "$MODEL" --batch 16 --seconds "$ORT_SECONDS" --repeats 1 > "$LOG/$g-index-ort-before"
  "$ORT" --model "$MODEL" --batch 16 --seconds "$ORT_SECONDS" --repeats 1 --streams > "$LOG/$g-index-orts-before"
  rm -rf "$WORK/index-$g$SUFFIX"
  RUST_LOG=info "$S" index --model "$MODEL" --images "$IMAGES" --index "$WORK/index-$g$SUFFIX" 2> "$LOG/$g-index.log"
  grep -o 'images_per_second=[0-9.]*' "$LOG/$g-index.log" | tail -n1 > "$LOG/$g-index-rate"
  "$ORT" --model "$MODEL" --batch 16 --seconds "$ORT_SECONDS" --repeats 1 > "$LOG/$g-index-ort-after"
  "$ORT" --model "$MODEL" --batch 16 --seconds "$ORT_SECONDS" --repeats 1 --streams > "$LOG/$g-index-orts-after"

  # --- serving ---------------------------------------------------------------------------
  RUST_LOG=info "$S" serve --model "$MODEL" --index "$WORK/index-$g$SUFFIX" --host 127.0.0.1 --port 0 2> "$LOG/$g-rust.log" &
  RUST_PID=$!
  PY_PORT="$(free_port)"
  "$VENV/bin/python" scripts/baseline_server.py --model "$MODEL" --gallery "$IMAGES" --port "$PY_PORT" \
    2> "$LOG/$g-python.log" &
  PY_PID=$!
  trap 'kill "$RUST_PID" "$PY_PID" 2>/dev/null || true' EXIT
  RUST_URL="$(wait_listening "$RUST_PID" "$LOG/$g-rust.log")"
  echo "[$g] the Python baseline indexes the gallery at start" >&2
  PY_URL="$(wait_listening "$PY_PID" "$LOG/$g-python.log")"
  for url in "$RUST_URL" "$PY_URL"; do
    DURATION=3 load "$url" 8 0 "$LOG/$g-warmup"
  done
  for r in $(seq 1 "$REPEATS"); do
    echo "[$g] repeat $r/$REPEATS" >&2
    for b in 1 8 32; do
      "$ORT" --model "$MODEL" --batch "$b" --seconds "$ORT_SECONDS" --repeats 1 --decode "$QUERIES" > "$LOG/$g-ort-$r-b$b"
    done
    # The same batches on all the model's streams at once, side by side.
    for b in 8 32; do
      "$ORT" --model "$MODEL" --batch "$b" --seconds "$ORT_SECONDS" --repeats 1 --streams > "$LOG/$g-orts-$r-b$b"
    done
    # The box's speed drifts within minutes, so each load of this server also has raw ONNX
    # Runtime measured right before and right after it, in this repeat's best configuration
    # of the five above: the "beside" ratio compares the two at the same moment.
    best_raw="$(for f in "$LOG/$g-ort-$r-b"* "$LOG/$g-orts-$r-b"*; do
      echo "$(grep -o 'images_per_second=[0-9.]*' "$f" | cut -d= -f2) $f"; done | sort -g | tail -n1 | cut -d' ' -f2)"
    beside_args=(--batch "${best_raw##*-b}")
    [[ "$best_raw" == *"-orts-"* ]] && beside_args+=(--streams)
    # Keep-alive first in odd repeats, a new connection per request first in even ones, so
    # that the box's drift within a repeat does not favour one of the two.
    order="0 1"
    [ $((r % 2)) = 0 ] && order="1 0"
    for c in $CONCURRENCY; do
      for close in $order; do
        beside="$LOG/$g-beside-$r-c$c-close$close"
        "$ORT" --model "$MODEL" "${beside_args[@]}" --seconds "$ORT_SECONDS" --repeats 1 > "$beside-before"
        load "$RUST_URL" "$c" "$close" "$LOG/$g-rust-$r-c$c-close$close"
        "$ORT" --model "$MODEL" "${beside_args[@]}" --seconds "$ORT_SECONDS" --repeats 1 > "$beside-after"
        load "$PY_URL" "$c" "$close" "$LOG/$g-python-$r-c$c-close$close"
      done
    done
  done
  echo "rust_rss_kb=$(rss_kb "$RUST_PID") python_rss_kb=$(rss_kb "$PY_PID")" > "$LOG/$g-rss"
  kill "$RUST_PID" "$PY_PID"
  wait "$RUST_PID" "$PY_PID" 2>/dev/null || true
  trap - EXIT
done

LOG="$LOG" REPEATS="$REPEATS" CONCURRENCY="$CONCURRENCY" GALLERIES="$GALLERIES" DURATION="$DURATION" HEAD="$HEAD" \
  python3 scripts/bench_serving_table.py | tee "$WORK/summary$SUFFIX.md"
