#!/usr/bin/env bash
# Training-step throughput, Rust trainer against the PyTorch reference, side by side.
#
# Builds trainer/examples/bench_step.rs in release and starts it and scripts/bench_step.py
# with the same batch, image size, thread count and step counts. After both have warmed
# up, their timed steps ALTERNATE one at a time (lockstep, the order swapped every pair),
# so that load from other processes on a shared machine hits both alike. Prints a
# markdown table: median step time and images/s of each, the ratio of the medians, and
# the median of the per-pair ratios (rust / pytorch images/s; above 1: Rust is faster).
#
#   scripts/bench_train_step.sh [--batch-size 60] [--image-size 64] [--threads 2]
#                               [--steps 20] [--warmup 2] [--bn-freeze]
#
# RUST_CMD / TORCH_CMD replace the two commands (e.g. to compare two builds).
set -euo pipefail

cd "$(dirname "$0")/.."
BATCH=60 SIZE=64 THREADS=2 STEPS=20 WARMUP=2 BN=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --batch-size) BATCH=$2; shift 2 ;;
        --image-size) SIZE=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --bn-freeze) BN=(--bn-freeze); shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || { echo "no $PYTHON; run scripts/setup.sh first" >&2; exit 1; }
$PYTHON -c 'import torch' 2>/dev/null || {
  echo "$PYTHON cannot import torch: the PyTorch reference needs the wheel's CUDA libraries too; run STML_TORCH=full bash scripts/setup.sh" >&2
  exit 1
}
if [[ -z ${RUST_CMD:-} ]]; then
    cargo build --release -q -p trainer --example bench_step
    RUST_CMD=target/release/examples/bench_step
fi
TORCH_CMD=${TORCH_CMD:-"$PYTHON scripts/bench_step.py"}
# The example links libtorch from deps/ (LIBTORCH in .cargo/config.toml); `cargo run`
# would set the library path, a direct call needs it.
export LD_LIBRARY_PATH="$PWD/deps/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# libtorch and the Python wheel read the same OpenMP / MKL settings; pin them for both.
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

ARGS=(--batch-size "$BATCH" --image-size "$SIZE" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --lockstep "${BN[@]}")
LOG=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$LOG"
}
trap cleanup EXIT

# start NAME IN_FD OUT_FD CMD...: runs CMD with its stdin/stdout on fifos opened here as
# IN_FD / OUT_FD, and copies its output up to `ready` (after warm-up) into $LOG/NAME.txt.
start() {
    local name=$1 in_fd=$2 out_fd=$3 line
    shift 3
    mkfifo "$LOG/$name.in" "$LOG/$name.out"
    # The child must not inherit the other child's fifo ends, or it would never see EOF.
    "$@" <"$LOG/$name.in" >"$LOG/$name.out" 3>&- 4<&- 5>&- 6<&- &
    PIDS+=($!)
    eval "exec $in_fd>\"\$LOG/\$name.in\" $out_fd<\"\$LOG/\$name.out\""
    echo "$name: warming up" >&2
    while true; do
        read -r line <&"$out_fd" || { echo "$name exited before it was ready: $*" >&2; exit 1; }
        echo "$line" >>"$LOG/$name.txt"
        [[ $line == ready ]] && break
    done
}

# step NAME IN_FD OUT_FD: one timed step.
step() {
    local name=$1 in_fd=$2 out_fd=$3 line
    echo go >&"$in_fd"
    read -r line <&"$out_fd" || { echo "$name exited mid-run" >&2; exit 1; }
    echo "$line" >>"$LOG/$name.txt"
    echo "$name $line" >&2
}

# shellcheck disable=SC2086 # the commands are word-split on purpose
start rust 3 4 $RUST_CMD "${ARGS[@]}"
# shellcheck disable=SC2086
start pytorch 5 6 $TORCH_CMD "${ARGS[@]}"
for i in $(seq 1 "$STEPS"); do
    if ((i % 2)); then
        step rust 3 4; step pytorch 5 6
    else
        step pytorch 5 6; step rust 3 4
    fi
done
exec 3>&- 5>&-
# What they print after the last step (medians; the breakdown with --breakdown in the command).
sed 's/^/rust /' <&4 | tee -a "$LOG/rust.txt" >&2
sed 's/^/pytorch /' <&6 | tee -a "$LOG/pytorch.txt" >&2
wait

# Step times in ms, one per timed step, in order.
times() { awk '/^step +[0-9]+:/ { print $3 }' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.4f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
RUST_MS=$(times "$LOG/rust.txt" | median)
TORCH_MS=$(times "$LOG/pytorch.txt" | median)
# Per pair i: rust / pytorch images/s = pytorch time / rust time.
PAIR_RATIO=$(paste <(times "$LOG/rust.txt") <(times "$LOG/pytorch.txt") | awk '{ print $2 / $1 }' | median)
N=$(times "$LOG/rust.txt" | wc -l)
read -r RUST_IPS TORCH_IPS RATIO < <(awk -v b="$BATCH" -v r="$RUST_MS" -v t="$TORCH_MS" \
    'BEGIN { printf "%.2f %.2f %.2f\n", b * 1000 / r, b * 1000 / t, t / r }')
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
TORCH_VERSION=$($PYTHON -c 'import torch; print(torch.__version__)')

cat <<EOF

STML training step (forward student + teacher, pseudo labels, loss, backward, EMA, AdamP),
MobileNetV2 pretrained, d = 128, g = 1024, B = $BATCH images ($((2 * BATCH)) samples), S = $SIZE, $THREADS threads.
Machine: $(nproc) cores, $CPU, $(date -u +%Y-%m-%dT%H:%MZ); libtorch = torch $TORCH_VERSION.
$WARMUP warm-up steps each, then $N timed steps each, alternating one step at a time.

| implementation | median step (ms) | median images/s |
|---|---:|---:|
| Rust (trainer, tch) | $(printf %.1f "$RUST_MS") | $RUST_IPS |
| PyTorch reference (scripts/bench_step.py) | $(printf %.1f "$TORCH_MS") | $TORCH_IPS |
| **rust / pytorch** | ratio of medians **$RATIO** | median of per-pair ratios **$(printf %.2f "$PAIR_RATIO")** |
EOF
