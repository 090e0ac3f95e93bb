#!/usr/bin/env bash
# Times the README's main-job command as a new user's machine runs it: a fresh clone of
# HEAD, with no .venv, deps/, target/, pip cache or cargo registry cache (the Rust
# toolchain and Python 3 are installed, as the README assumes). Prints the split that
# scripts/demo.sh reports: set-up, build, fit and export, index, first query.
#
#   bash scripts/time_fresh_machine.sh        # run on an otherwise idle machine
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git clone -q "$ROOT" "$WORK/repo"
export CARGO_HOME="$WORK/cargo-home" PIP_NO_CACHE_DIR=1
cd "$WORK/repo"
echo "[fresh] $(git log -1 --format='%h %s') on $(nproc) cores, $(date -u +%FT%TZ)" >&2
DEMO_EXIT=1 PORT="${PORT:-18080}" RUN="$WORK/run" bash scripts/demo.sh 2>&1 | grep -E "^\[setup\]|^==|first answer" >&2
