#!/usr/bin/env bash
# Runs every test of the product. Performs any missing set-up first (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Headless Chromium (Debian packages) for the web page test.
bash scripts/install_browser.sh
# The HTTPS test makes its certificates with the openssl command.
command -v openssl >/dev/null || { echo "installing openssl (apt-get)..." >&2; apt-get install -y -qq openssl >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null; }; }
# One invocation for the whole workspace. The server depends on `contract`, not on
# `models`, so it never links libtorch (a test checks its binary); the trainer turns on
# `models`' libtorch backend, which its architecture and ONNX-parity tests need. The
# server's Milvus backend is built in, so its test (which starts a real Milvus from
# deps/milvus) runs too.
cargo test --features server/milvus "$@"
# The server's container image, built from a local Debian base and tested over 127.0.0.1
# with its own dockerd (no bridge network), made of the build `cargo test` just made.
STML_IMAGE_BUILD=debug bash scripts/test_docker.sh
