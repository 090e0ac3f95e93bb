#!/usr/bin/env bash
# Is another JPEG decoder worth having? Decoding and preprocessing the serving benchmark's
# 1-MP JPEG queries (scripts/bench_serving.sh's jpg224 gallery) by this server's code
# (zune-jpeg, `ort_throughput --decode`) and by the Python baseline's (Pillow, which
# decodes with libjpeg-turbo: `baseline_server.py`'s own preprocessing), in full and with
# Pillow's scaled decoding (`draft`: a smaller inverse DCT, the Huffman pass unchanged),
# the three alternated round by round. Prints the median milliseconds per file of each,
# for decoding alone and with the preprocessing.
#
#   bash scripts/bench_jpeg_decode.sh        # after scripts/bench_serving.sh has run
#
# Needs target/bench_serving/ (the JPEG gallery, the 224-px model, the query list) and
# deps/baseline-venv, both made by scripts/bench_serving.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="${WORK:-target/bench_serving}"
ROUNDS="${ROUNDS:-3}"
VENV="$ROOT/deps/baseline-venv"
MODEL="$WORK/model-224.onnx"
QUERIES="$WORK/queries-jpg224.txt"
for need in "$MODEL" "$QUERIES" "$VENV/bin/python"; do
  [ -e "$need" ] || { echo "$need is missing: run scripts/bench_serving.sh first" >&2; exit 1; }
done
cargo build --release -q -p server --example ort_throughput

pillow() { # pillow DRAFT: median ms per file to decode, and with the baseline's preprocessing
  # (DRAFT 1: scaled decoding)
  "$VENV/bin/python" - "$MODEL" "$QUERIES" "$1" <<'PY'
import io, statistics, sys, time
sys.path.insert(0, "scripts")
from PIL import Image
from baseline_server import Model

model, queries, draft = Model(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
files = [open(p.strip(), "rb").read() for p in open(queries) if p.strip()]
decoded, preprocessed = [], []
for data in files:
    for _ in range(3):
        started = time.perf_counter()
        img = Image.open(io.BytesIO(data))
        if draft:
            # The largest reduction that keeps the shorter side at the resize or more.
            img.draft("RGB", (model.resize, model.resize))
        img.load()
        decoded.append((time.perf_counter() - started) * 1e3)
        model.preprocess_image(img)
        preprocessed.append((time.perf_counter() - started) * 1e3)
print(f"{statistics.median(decoded):.2f} / {statistics.median(preprocessed):.2f}")
PY
}

echo "ms per file, decoding / with preprocessing"
echo "round | this server (zune-jpeg) | Pillow, full | Pillow, draft"
for r in $(seq 1 "$ROUNDS"); do
  out="$(target/release/examples/ort_throughput --model "$MODEL" --batch 1 --seconds 0.5 --repeats 1 \
    --decode "$QUERIES")"
  ours="$(grep -o 'decode_only_ms=[0-9.]*' <<< "$out" | cut -d= -f2) / $(grep -o 'decode_ms=[0-9.]*' <<< "$out" | cut -d= -f2)"
  full="$(pillow 0)"
  scaled="$(pillow 1)"
  echo "$r | $ours | $full | $scaled"
done
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u '+%Y-%m-%d %H:%M UTC')"
