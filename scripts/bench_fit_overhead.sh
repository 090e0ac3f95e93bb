#!/usr/bin/env bash
# A whole fit's seconds per step against the isolated training step (issue 7, item 3):
# the trainer's exact step alone (trainer/examples/bench_step.rs, synthetic batches, no
# data loading), then a real `trainer fit` on the fonts domain at the same batch and size,
# then the isolated step again; prints the fit's epoch time split (sampler pass, steps,
# evaluation, checkpoint) and the ratio
#   (sampler + steps + checkpoint seconds, all epochs) / steps / isolated step
# (monitoring evaluation excluded), with the start-up (weights, PCA start, baseline) apart.
#   bash scripts/bench_fit_overhead.sh              # B 120, 96 px, 2 epochs of the fonts
#   BATCH=60 IMAGE_SIZE=64 EPOCHS=3 bash scripts/bench_fit_overhead.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BATCH="${BATCH:-120}"
IMAGE_SIZE="${IMAGE_SIZE:-96}"
EPOCHS="${EPOCHS:-2}"
OUT="${OUT:-runs/bench-overhead}"
if [ -z "${SKIP_SETUP:-}" ]; then
  bash scripts/setup.sh
  bash scripts/make_fonts_dataset.sh
fi
cargo build --release -q -p trainer --bin trainer --example bench_step
mkdir -p "$OUT"
step_ms() { # the isolated step's median, in ms
  target/release/examples/bench_step --batch-size "$BATCH" --image-size "$IMAGE_SIZE" --steps 4 --warmup 1 \
    --bn-freeze --threads 0 | tee -a "$OUT/step.log" | awk '/^median_step_ms/ { print $2 }'
}
before="$(step_ms)"
run="$OUT/fonts-b$BATCH-s$IMAGE_SIZE"
rm -rf "$run"
started=$(date +%s.%N)
target/release/trainer fit --data deps/fonts-dataset/train --eval-data deps/fonts-dataset/test --batch-size "$BATCH" \
  --image-size "$IMAGE_SIZE" --epochs "$EPOCHS" --threads 0 --out "$run" > "$OUT/fit.json" 2> "$OUT/fit.log"
ended=$(date +%s.%N)
after="$(step_ms)"
python3 - "$run/metrics.jsonl" "$before" "$after" "$started" "$ended" "$BATCH" "$IMAGE_SIZE" <<'PY'
import json, sys
path, batch, size = sys.argv[1], sys.argv[6], sys.argv[7]
before, after, started, ended = (float(a) for a in sys.argv[2:6])
wall = ended - started
epochs = [json.loads(l) for l in open(path) if l.strip()]
epochs = [e for e in epochs if e.get("epoch", 0) > 0]
steps = epochs[-1]["step"]
t = {k: sum(e["time"][k] for e in epochs) for k in ("sampler", "steps", "eval", "checkpoint")}
isolated = (before + after) / 2 / 1e3
print(f"| epoch | sampler s | steps s | steps | s/step | evaluation s | checkpoint s |")
print(f"|---|---:|---:|---:|---:|---:|---:|")
prev = 0
for e in epochs:
    n = e["step"] - prev
    prev = e["step"]
    tt = e["time"]
    print(f"| {e['epoch']} | {tt['sampler']:.1f} | {tt['steps']:.1f} | {n} | {tt['steps'] / n:.2f} | {tt['eval']:.1f} | {tt['checkpoint']:.1f} |")
work = t["sampler"] + t["steps"] + t["checkpoint"]
start = wall - sum(t.values())
print()
print(f"B {batch}, {size} px: isolated step {before / 1e3:.2f} s before, {after / 1e3:.2f} s after the fit")
print(f"fit: {steps} steps, sampler + steps + checkpoint {work:.1f} s = {work / steps:.2f} s/step "
      f"= {work / steps / isolated:.2f}x the isolated step (steps alone {t['steps'] / steps / isolated:.2f}x); "
      f"start-up (weights, PCA start, baseline evaluation) {start:.1f} s, monitoring evaluation {t['eval']:.1f} s")
PY
