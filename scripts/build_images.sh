#!/usr/bin/env bash
# Builds the product's container images from a locally made Debian base (issue 12) and
# checks each one runs:
#   stml-server        CPU search server (the image scripts/test_docker.sh tests)
#   stml-trainer       trainer with libtorch (CPU) and the pretrained weights; checked by a
#                      one-step fit and an export inside the container, served by stml-server
#   stml-server-cuda   server with ONNX Runtime's CUDA provider and the CUDA 13 libraries
#                      from PyPI wheels (a few GB, downloaded once into deps/docker/cuda);
#                      checked here for unresolved libraries, and on the CPU when no GPU
#
#   bash scripts/build_images.sh [server] [trainer] [server-cuda]    # default: all three
#   SAVE=DIR bash scripts/build_images.sh    # also `docker save` each image to DIR/NAME.tar
#
# It starts its own dockerd (state in target/images/daemon; the images stay there for the
# next run) and stops it by pid at the end. Load a saved image into another daemon with
# `docker load -i DIR/NAME.tar`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/docker_lib.sh
source scripts/docker_lib.sh
WORK="$ROOT/target/images"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(server trainer server-cuda)
for t in "${TARGETS[@]}"; do
  case "$t" in server | trainer | server-cuda) ;; *) echo "build_images: unknown image $t (server, trainer, server-cuda)" >&2; exit 2 ;; esac
done
wants() { printf '%s\n' "${TARGETS[@]}" | grep -qx "$1"; }

# PyPI wheels of the CUDA image: ONNX Runtime's GPU build (same version as the CPU one)
# and the CUDA 13 libraries its CUDA provider links or loads.
CUDA_WHEELS=(onnxruntime-gpu==1.31.1 nvidia-cuda-runtime==13.0.96 "nvidia-cublas~=13.0" "nvidia-curand~=10.0"
  nvidia-cudnn-cu13==9.19.0.56)

docker_install
bash scripts/setup.sh >/dev/null
wants server && cargo build --release -q -p server --bin server --example fixture
wants trainer && cargo build --release -q -p trainer
if wants server-cuda; then
  # A separate target folder keeps the CPU binary as it is.
  docker_say "building the server with --features cuda (target/cuda)"
  cargo build --release -q -p server --bin server --features cuda --target-dir target/cuda
  mkdir -p deps/docker/cuda
  if [ ! -f deps/docker/cuda/.done ]; then
    docker_say "downloading ${CUDA_WHEELS[*]} (once)"
    .venv/bin/python -m pip download -q --no-deps -d deps/docker/cuda "${CUDA_WHEELS[@]}"
    touch deps/docker/cuda/.done
  fi
fi

mkdir -p "$WORK"
trap docker_stop EXIT
docker_start "$WORK/daemon"
base_image

check_dir="$WORK/check"
rm -rf "$check_dir" && mkdir -p "$check_dir"
serve_check() { # serve_check IMAGE MODEL_DIR [RUN_ARGS...]: the image serves MODEL_DIR/model.onnx; prints its provider
  local image="$1" models="$2" port name=stml-check-$$
  shift 2
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$DOCKER" run -d --rm --name "$name" --network host -e STML_SERVER_PORT="$port" -v "$models:/models:ro" "$@" "$image" >/dev/null
  for _ in $(seq 1 240); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.5
  done
  local ok=0
  target/release/server search --url "http://127.0.0.1:$port" -k 1 deps/photos/chelsea.png >/dev/null 2>&1 || ok=$?
  "$DOCKER" logs "$name" 2>&1 | grep -o "execution provider: .*" || true
  "$DOCKER" rm -f "$name" >/dev/null
  [ $ok -eq 0 ] || { echo "build_images: $image did not answer a search" >&2; return 1; }
}

if wants server; then
  stage_server "$WORK/server"
  build_image stml-server "$WORK/server"
fi

if wants trainer; then
  stage trainer.Dockerfile "$WORK/trainer" target/release/trainer
  # The libraries the binary resolves outside the system's folders (libtorch and what it links).
  ldd target/release/trainer | awk '$3 ~ /^\// && $3 !~ /^\/(usr\/)?lib(64)?\// { print $3 }' \
    | xargs -r -I{} cp -L {} "$WORK/trainer/lib/"
  mkdir -p "$WORK/trainer/weights" && cp deps/weights/*.safetensors "$WORK/trainer/weights/"
  chmod -R a+rX "$WORK/trainer"
  build_image stml-trainer "$WORK/trainer"
  docker_say "checking stml-trainer: a one-step fit on 120 Fashion-MNIST images, then export"
  mkdir -p "$check_dir/runs" && chmod 777 "$check_dir/runs"
  "$DOCKER" run --rm --network none -v "$ROOT/deps/fashion-mnist:/data:ro" -v "$check_dir/runs:/runs" stml-trainer \
    fit --data /data --out /runs/r1 --limit 120 --eval-limit 60 --epochs 1 --max-steps-per-epoch 1 --batch-size 30 \
    --image-size 64 > "$check_dir/fit.log" 2>&1 || { tail -n 20 "$check_dir/fit.log" >&2; exit 1; }
  "$DOCKER" run --rm --network none -v "$check_dir/runs:/runs" stml-trainer export --run /runs/r1 \
    --out /runs/r1/model.onnx > "$check_dir/export.log" 2>&1 || { tail -n 20 "$check_dir/export.log" >&2; exit 1; }
  if wants server || "$DOCKER" image inspect stml-server >/dev/null 2>&1; then
    docker_say "serving the model the trainer image exported with stml-server"
    serve_check stml-server "$check_dir/runs/r1"
  fi
fi

if wants server-cuda; then
  dir="$WORK/server-cuda"
  stage server.Dockerfile "$dir" target/cuda/release/server
  for whl in deps/docker/cuda/*.whl; do
    case "$(basename "$whl")" in
      onnxruntime_gpu-*) unzip -q -o -j "$whl" 'onnxruntime/capi/libonnxruntime*.so*' -d "$dir/lib" ;;
      *) unzip -q -o -j "$whl" 'nvidia/*/lib/*.so*' -d "$dir/lib" ;;
    esac
  done
  mv "$dir"/lib/libonnxruntime.so.1.* "$dir/lib/libonnxruntime.so"
  chmod -R a+rX "$dir"
  build_image stml-server-cuda "$dir"
  docker_say "checking stml-server-cuda: every library its CUDA provider links resolves (but the host's driver)"
  missing="$("$DOCKER" run --rm --network none --entrypoint ldd stml-server-cuda \
    /opt/stml/lib/libonnxruntime_providers_cuda.so | awk '/not found/ { print $1 }' | grep -vx 'libcuda.so.1' || true)"
  [ -z "$missing" ] || { echo "build_images: stml-server-cuda lacks $missing" >&2; exit 1; }
  cargo build --release -q -p server --bin server --example fixture
  target/release/examples/fixture "$check_dir/fixture" 4 >/dev/null
  gpu=()
  if [ -e /dev/nvidia0 ]; then
    for d in /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm; do [ -e "$d" ] && gpu+=(--device "$d"); done
    driver="$(ldconfig -p | awk '/libcuda\.so\.1 / { print $NF; exit }')"
    [ -n "$driver" ] && gpu+=(-v "$driver:/usr/lib/x86_64-linux-gnu/libcuda.so.1:ro")
    docker_say "a GPU is here: serving with stml-server-cuda on it"
  else
    docker_say "no GPU here: stml-server-cuda serving on the CPU"
  fi
  serve_check stml-server-cuda "$check_dir/fixture" "${gpu[@]}"
fi

"$DOCKER" images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^stml-' >&2
if [ -n "${SAVE:-}" ]; then
  mkdir -p "$SAVE"
  for t in "${TARGETS[@]}"; do
    docker_say "saving stml-$t to $SAVE/stml-$t.tar"
    "$DOCKER" save -o "$SAVE/stml-$t.tar" "stml-$t"
  done
fi
