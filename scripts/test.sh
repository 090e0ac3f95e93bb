#!/usr/bin/env bash
# Runs every test of the product. Performs any missing set-up first (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Headless Chromium (Debian packages) for the web page test.
bash scripts/install_browser.sh
# The models crate's libtorch-backed tests (architectures, ONNX parity) need its `tch` feature.
cargo test --workspace --features models/tch "$@"
