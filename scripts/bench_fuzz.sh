#!/usr/bin/env bash
# Fuzzing benchmark (issue 14): a million executions of every target (or EXECS), in the
# dev profile (overflow checks on), from seed SEED. Prints the table BENCHMARKS.md quotes;
# crashing inputs go to target/fuzz/crashes/<target>/. Exits non-zero on any panic, abort
# or hang.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build -q -p fuzz
target/debug/fuzz --execs "${EXECS:-1000000}" --seed "${SEED:-1}" "$@"
