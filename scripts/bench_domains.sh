#!/usr/bin/env bash
# Quality benchmark on the development domains (issue 7): for each domain, variant and
# seed, one `trainer fit` at the CPU schedule (96 px, 3 epochs, B 120), evaluated after
# every epoch on the unseen classes, beside the pretrained pooled feature on the same
# images (the fit's epoch-0 line). Finished runs are kept and skipped, so a long
# measurement can span sessions; the table is printed from the run directories.
#
#   bash scripts/bench_domains.sh                                   # default preset, both domains, seed 0
#   VARIANTS="default paper supervised semi10" SEEDS="0 1 2" bash scripts/bench_domains.sh
#   DOMAINS=fonts VARIANTS="default no-pca no-bn-freeze no-warmup" bash scripts/bench_domains.sh
#
# Domains: fonts (scripts/make_fonts_dataset.sh: 600 + 600 characters x 8 fonts) and
# fmnist (Fashion-MNIST: 6,000 training images of classes 0-4, 5,000 test images of 5-9).
# Variants: default (the product's defaults), served-f (the defaults serving the 128-d f,
# as they did until 2026-12-07), paper (--preset paper), supervised (true
# labels as W), semi10 (10 % of training images labelled, the default preset's
# --label-weight: 16 since 2026-12-07, 1 in the runs before), semi10-nn and supervised-nn
# (the same with batches from neighbours only: --known-positives false), semi10-lwX
# (10 % labelled, --label-weight X), no-pca, no-bn-freeze,
# no-warmup (the default preset with one change undone; no-warmup has been the default
# itself since 2026-12-03, warmup is the quarter-epoch warm-up it had before), lrX (e.g. lr3e-4: --lr and
# --emb-lr X, backbone and heads), emblrX (--emb-lr X: the heads only), momX (e.g. mom0.99: the
# teacher's EMA momentum), batchX (--batch-size X), dimX (--dim X --served-head f: an
# X-d `f`, served), cropX (--crop-scale X: the smallest crop area of a training view).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TRAINER="${TRAINER:-target/release/trainer}"
OUT="${OUT:-runs/bench}"
DOMAINS="${DOMAINS:-fonts fmnist}"
VARIANTS="${VARIANTS:-default}"
SEEDS="${SEEDS:-0}"
IMAGE_SIZE="${IMAGE_SIZE:-96}"
EPOCHS="${EPOCHS:-3}"
DEVICE="${DEVICE:-cpu}"
THREADS="${THREADS:-0}"
if [ -z "${SKIP_SETUP:-}" ]; then
  bash scripts/setup.sh
  bash scripts/make_fonts_dataset.sh
  cargo build --release -q -p trainer
fi

domain_flags() {
  case "$1" in
    fonts) echo "--data deps/fonts-dataset/train --eval-data deps/fonts-dataset/test" ;;
    fmnist) echo "--data deps/fashion-mnist --limit 6000 --eval-limit 5000" ;;
    *) echo "unknown domain $1 (fonts, fmnist)" >&2; exit 2 ;;
  esac
}
variant_flags() {
  case "$1" in
    default) echo "" ;;
    served-f) echo "--served-head f" ;;   # the paper's served head (the default until 2026-12-07)
    paper) echo "--preset paper" ;;
    supervised) echo "--supervised" ;;
    semi10) echo "--label-fraction 0.1" ;;
    semi10-nn) echo "--label-fraction 0.1 --known-positives false" ;;   # neighbours-only batches (before 2026-12-07)
    semi10-lw*) echo "--label-fraction 0.1 --label-weight ${1#semi10-lw}" ;;
    supervised-nn) echo "--supervised --known-positives false" ;;
    no-pca) echo "--head-init orthogonal" ;;
    no-bn-freeze) echo "--bn-freeze false" ;;
    no-warmup) echo "--warmup-epochs 0" ;;   # the default since 2026-12-03
    warmup) echo "--warmup-epochs 0.25" ;;   # the default until then
    lr*) echo "--lr ${1#lr} --emb-lr ${1#lr}" ;;
    mom*) echo "--momentum ${1#mom}" ;;
    emblr*) echo "--emb-lr ${1#emblr}" ;;
    batch*) echo "--batch-size ${1#batch}" ;;
    dim*) echo "--dim ${1#dim} --served-head f" ;;
    crop*) echo "--crop-scale ${1#crop}" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT"
for seed in $SEEDS; do
  for variant in $VARIANTS; do
    for domain in $DOMAINS; do
      run="$OUT/$domain-$variant-s$seed"
      [ -f "$run/summary.json" ] && continue
      rm -rf "$run"
      # shellcheck disable=SC2046
      cmd=("$TRAINER" fit $(domain_flags "$domain") $(variant_flags "$variant") --image-size "$IMAGE_SIZE"
           --epochs "$EPOCHS" --seed "$seed" --device "$DEVICE" --threads "$THREADS" --out "$run")
      echo "[bench] ${cmd[*]}" >&2
      mkdir -p "$run.log.d"
      "${cmd[@]}" > "$run.log.d/stdout.json" 2> "$run.log.d/stderr.log"
      echo "${cmd[*]}" > "$run/command.txt"
    done
  done
done
python3 scripts/bench_table.py "$OUT"
