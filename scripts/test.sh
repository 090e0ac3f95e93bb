#!/usr/bin/env bash
# Runs every test of the product. Performs any missing set-up first (idempotent).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Headless Chromium (Debian packages) for the web page test.
bash scripts/install_browser.sh
# The server is built and tested on its own: in one cargo invocation with the trainer,
# feature unification would compile `models` with `tch` into it, and the server must
# never link libtorch (a test checks its binary).
cargo test -p server "$@"
# Everything else; the models crate's libtorch-backed tests (architectures, ONNX parity)
# need its `tch` feature.
cargo test --workspace --exclude server --features models/tch "$@"
