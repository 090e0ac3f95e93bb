#!/usr/bin/env bash
# The main job on the embedded defaults: set-up if needed; fit STML without labels on the
# Fashion-MNIST training classes (T-shirt, trouser, pullover, dress, coat) with a short CPU
# schedule; evaluate on the unseen classes; export to ONNX; index the unseen classes'
# images; start the server on 127.0.0.1 and show one example query. The time each part
# took is printed at the end (DEMO_EXIT=1: stop after the example query, for timing a
# fresh machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUN="${RUN:-runs/demo}"
PORT="${PORT:-8080}"
declare -A TOOK
lap() { TOOK[$1]=$((SECONDS - ${LAP_START:-0})); LAP_START=$SECONDS; }
LAP_START=$SECONDS
bash scripts/setup.sh
lap setup
# One build of both binaries (the server never links libtorch: it depends only on `contract`).
cargo build --release -q -p trainer -p server
lap build
T=target/release/trainer
S=target/release/server

if [ ! -f "$RUN/model.onnx" ]; then
  rm -rf "$RUN/fit"
  mkdir -p "$RUN"
  echo "== 1/4 fitting STML on Fashion-MNIST classes 0-4 without labels (short CPU schedule, a few minutes)"
  "$T" fit --data deps/fashion-mnist --out "$RUN/fit" --image-size 64 --limit 3000 --eval-limit 2000 \
    --epochs 2 --batch-size 60 --max-steps-per-epoch 25 --bn-freeze > "$RUN/fit.json"
  echo "== 2/4 exporting $RUN/model.onnx"
  "$T" export --run "$RUN/fit" --out "$RUN/model.onnx"
fi
lap fit
python3 -c "import json; s=json.load(open('$RUN/fit.json')); e=s['eval']; print('held-out classes:', ', '.join(f'R@{k} {100*v:.1f}%' for k, v in e['recall']), f\"MAP@R {100*e['map_at_r']:.1f}%\")"

echo "== 3/4 indexing 2000 images of the unseen classes (sandal, shirt, sneaker, bag, ankle boot)"
if [ ! -d "$RUN/gallery" ]; then
  "$T" write-images --data deps/fashion-mnist --split test --limit 2000 --out "$RUN/gallery.tmp"
  mv "$RUN/gallery.tmp" "$RUN/gallery"
fi
"$S" index --model "$RUN/model.onnx" --images "$RUN/gallery" --index "$RUN/index"
lap index

echo "== 4/4 serving on http://127.0.0.1:$PORT (Ctrl-C stops it)"
"$S" serve --model "$RUN/model.onnx" --index "$RUN/index" --host 127.0.0.1 --port "$PORT" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
Q="$(find "$RUN/gallery" -name '*.png' -print -quit)"
echo "example query: $Q"
curl -fsS --data-binary @"$Q" -H 'content-type: image/png' "http://127.0.0.1:$PORT/search?k=5" | python3 -m json.tool
lap query
echo
echo "first answer after $SECONDS s: set-up ${TOOK[setup]} s, build ${TOOK[build]} s, fit and export ${TOOK[fit]} s, index ${TOOK[index]} s, serve and query ${TOOK[query]} s"
[ -n "${DEMO_EXIT:-}" ] && exit 0
echo "Open http://127.0.0.1:$PORT/ and drop an image on the page."
wait $PID
