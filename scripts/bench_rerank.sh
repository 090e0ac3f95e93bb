#!/usr/bin/env bash
# Query-time re-ranking (rerank=true) on the development domains: Recall@1 of more-like-
# this without and with re-ranking, and the median search time of each, in-process
# (server/examples/bench_rerank.rs), interleaved query by query.
#
# For each domain: a short CPU fit (the demo's schedule) on its training classes, exported;
# galleries of its training classes (where the re-ranking settings may be chosen) and of
# its unseen test classes (where they are only reported), indexed with their labels.
#
#   bash scripts/bench_rerank.sh                       # -> runs/rerank/<domain>/*.jsonl
#   DOMAINS=fmnist CONFIGS=50:10:1 bash scripts/bench_rerank.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DOMAINS="${DOMAINS:-fmnist fonts}"
GRID="${GRID:-20:3:1,20:5:1,20:10:1,50:5:1,50:10:1,50:20:1,100:10:1,50:5:0.1,50:10:0.1,50:5:0.03,50:10:0.03}"
CONFIGS="${CONFIGS:-50:5:0.03,50:10:1}"
QUERIES="${QUERIES:-2000}"
OUT="${OUT:-runs/rerank}"
bash scripts/setup.sh
cargo build --release -q -p trainer -p server --example bench_rerank
T=target/release/trainer
S=target/release/server
B=target/release/examples/bench_rerank

for domain in $DOMAINS; do
  dir="$OUT/$domain"
  mkdir -p "$dir"
  case "$domain" in
    fmnist) data=(--data deps/fashion-mnist); train=(--data deps/fashion-mnist --split train --limit 2000);
            test=(--data deps/fashion-mnist --split test --limit 2000) ;;
    fonts) bash scripts/make_fonts_dataset.sh
           data=(--data deps/fonts-dataset/train --eval-data deps/fonts-dataset/test)
           train=(--data deps/fonts-dataset/train --split all); test=(--data deps/fonts-dataset/test --split all) ;;
    *) echo "unknown domain $domain (fmnist, fonts)" >&2; exit 2 ;;
  esac
  if [ ! -f "$dir/model.onnx" ]; then
    rm -rf "$dir/fit"
    "$T" fit "${data[@]}" --out "$dir/fit" --image-size 64 --limit 3000 --eval-limit 2000 \
      --epochs 2 --batch-size 60 --max-steps-per-epoch 25 --served-head f > "$dir/fit.json"
    "$T" export --run "$dir/fit" --out "$dir/model.onnx"
  fi
  for split in train test; do
    if [ ! -d "$dir/$split-images" ]; then
      if [ "$split" = train ]; then args=("${train[@]}"); else args=("${test[@]}"); fi
      rm -rf "$dir/$split-images.tmp"
      "$T" write-images "${args[@]}" --out "$dir/$split-images.tmp"
      mv "$dir/$split-images.tmp" "$dir/$split-images"
    fi
    "$S" index --model "$dir/model.onnx" --images "$dir/$split-images" --index "$dir/$split-index" --label-from-folder
  done
  # Settings may be chosen on the training classes; the unseen classes only report.
  "$B" --model "$dir/model.onnx" --index "$dir/train-index" --queries "$QUERIES" --configs "$GRID" | tee "$dir/train.jsonl"
  "$B" --model "$dir/model.onnx" --index "$dir/test-index" --queries "$QUERIES" --configs "$CONFIGS" | tee "$dir/test.jsonl"
done
