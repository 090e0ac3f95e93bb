#!/usr/bin/env bash
# Fashion-MNIST zero-shot benchmark (protocol of ../shared/DATA.md): train WITHOUT labels on
# classes 0-4 (train + t10k pooled), evaluate retrieval on the unseen classes 5-9.
#   (a) the pretrained MobileNetV2 before training (pooled GAP+GMP feature)
#   (b) STML without labels, the defaults (the 1024-d g served; f 128-d before 2026-12-07)
#   (c) the same pipeline with the true labels as W (supervised upper bound)
# Settings are environment variables; the defaults fit a 2-core CPU box.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TRAINER="${TRAINER:-target/release/trainer}"
OUT="${OUT:-runs/bench-fmnist}"
IMAGE_SIZE="${IMAGE_SIZE:-64}"
LIMIT="${LIMIT:-1800}"          # training images (seeded subset of the 35,000)
EVAL_LIMIT="${EVAL_LIMIT:-2000}" # test images (seeded subset of the 35,000)
EPOCHS="${EPOCHS:-2}"
BATCH="${BATCH:-60}"
DEVICE="${DEVICE:-cpu}"
THREADS="${THREADS:-0}"
EXTRA="${EXTRA---bn-freeze}"      # extra `trainer fit` flags for (b) and (c); EXTRA= for none
if [ -z "${SKIP_SETUP:-}" ]; then
  bash scripts/setup.sh
  cargo build --release -q -p trainer
fi
mkdir -p "$OUT"
rm -rf "$OUT/stml" "$OUT/supervised"
common=(--data deps/fashion-mnist --image-size "$IMAGE_SIZE" --limit "$LIMIT" --eval-limit "$EVAL_LIMIT"
        --epochs "$EPOCHS" --batch-size "$BATCH" --device "$DEVICE" --threads "$THREADS" --eval-every 1 $EXTRA)
t0=$(date +%s)
"$TRAINER" eval --arch mobilenet_v2 --data deps/fashion-mnist --image-size "$IMAGE_SIZE" --limit "$EVAL_LIMIT" \
  --device "$DEVICE" --threads "$THREADS" --json > "$OUT/baseline.json"
t1=$(date +%s)
"$TRAINER" fit "${common[@]}" --out "$OUT/stml" > "$OUT/stml.json"
t2=$(date +%s)
"$TRAINER" fit "${common[@]}" --supervised --out "$OUT/supervised" > "$OUT/supervised.json"
t3=$(date +%s)
python3 - "$OUT" "$((t1-t0))" "$((t2-t1))" "$((t3-t2))" <<'PY'
import json, sys
out, ta, tb, tc = sys.argv[1], *map(int, sys.argv[2:])
a = json.load(open(f"{out}/baseline.json"))
b = json.load(open(f"{out}/stml.json"))
c = json.load(open(f"{out}/supervised.json"))
rows = [("(a) pretrained MobileNetV2, before training", a, ta),
        ("(b) STML, no labels", b["eval"], tb),
        ("(c) true labels as W (upper bound)", c["eval"], tc)]
ks = [k for k, _ in a["recall"]]
print("| model | " + " | ".join(f"R@{k}" for k in ks) + " | NMI | MAP@R | wall time |")
print("|---|" + "---|" * (len(ks) + 3))
for name, r, t in rows:
    rec = " | ".join(f"{100*v:.2f}" for _, v in r["recall"])
    print(f"| {name} | {rec} | {100*r['nmi']:.2f} | {100*r['map_at_r']:.2f} | {t} s |")
ra, rb, rc = a["recall"][0][1], b["eval"]["recall"][0][1], c["eval"]["recall"][0][1]
if rc != ra:
    print(f"\nSTML closes {100*(rb-ra)/(rc-ra):.1f} % of the Recall@1 gap between (a) and (c); "
          f"MAP@R: {100*(b['eval']['map_at_r']-a['map_at_r'])/(c['eval']['map_at_r']-a['map_at_r']):.1f} %.")
PY
