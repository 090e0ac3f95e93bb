#!/usr/bin/env bash
# Checks the CUDA path on a GPU machine in a few minutes: a few hundred STML training steps
# on Fashion-MNIST and the embedding throughput. The machine needs no Rust: build here with
#   cargo build --release -p trainer --features cuda && mkdir -p .gpu && strip -o .gpu/trainer target/release/trainer
# and copy .gpu/, deps/fashion-mnist and deps/weights/mobilenet_v2.safetensors over. libtorch
# comes from the machine's own PyTorch 2.11 (TORCH_PY, default /opt/torch/.venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_PY="${TORCH_PY:-/opt/torch/.venv/bin/python}"
BIN="${BIN:-.gpu/trainer}"
OUT="${OUT:-${TMPDIR:-/tmp}/stml-gpu}"
STEPS="${STEPS:-300}"
DEVICE="${DEVICE:-cuda}"
LIMIT="${LIMIT:-20000}"
EMBED_N="${EMBED_N:-10000}"
export LD_LIBRARY_PATH="$("$TORCH_PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export STML_DEPS="$PWD/deps"
rm -rf "$OUT"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
echo "== training: up to $STEPS STML steps (one epoch of $LIMIT images), MobileNetV2, B = 120 (240 samples), 64 px, CUDA"
"$BIN" fit --data deps/fashion-mnist --out "$OUT/fit" --device "$DEVICE" --threads 8 \
  --image-size 64 --batch-size 120 --epochs 1 --max-steps-per-epoch "$STEPS" \
  --limit "$LIMIT" --eval-limit 5000 > "$OUT/fit.json"
python3 -c "import json,sys; s=json.load(open('$OUT/fit.json')); print('train images/s:', round(s['images_per_second'],1), '| steps:', s['steps'], '| R@1 on 5000 test images:', round(100*s['eval']['recall'][0][1],2))"
for size in 64 224; do
  echo "== embedding throughput: $EMBED_N images at $size px, $DEVICE (decode + preprocess + forward)"
  t0=$(date +%s.%N)
  "$BIN" eval --arch mobilenet_v2 --data deps/fashion-mnist --image-size "$size" --limit "$EMBED_N" --ks 1 \
    --device "$DEVICE" --threads 8 --json > "$OUT/embed-$size.json"
  t1=$(date +%s.%N)
  python3 -c "print('images/s (incl. metrics):', round($EMBED_N/($t1-$t0),1))"
done
