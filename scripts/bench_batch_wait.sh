#!/usr/bin/env bash
# A/B of the batcher's wait (batch.max_wait_ms), interleaved: one keep-alive client
# (p50 / p99 and the server's own embed_ms) and eight for 8 s (QPS), for each wait in WAITS,
# twice. Needs a model and a labelled or plain index with PNGs, e.g. after
# scripts/bench_rerank.sh:
#
#   MODEL=runs/rerank/fonts/model.onnx INDEX=runs/rerank/fonts/test-index \
#   IMAGES=runs/rerank/fonts/test-images bash scripts/bench_batch_wait.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:?set MODEL}"; INDEX="${INDEX:?set INDEX}"; IMAGES="${IMAGES:?set IMAGES}"
WAITS="${WAITS:-1 0}"; PORT="${PORT:-8191}"
cargo build --release -q -p server
client() { # port images clients
  python3 - "$@" <<'PY'
import glob, http.client, json, statistics, sys, threading, time
port, images, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bodies = [open(f, 'rb').read() for f in sorted(glob.glob(images + '/**/*.png', recursive=True))[:200]]
def post(c, b):
    c.request('POST', '/search?k=10', body=b, headers={'content-type': 'image/png'})
    return c.getresponse().read()
if n == 1:
    c, lat, emb = http.client.HTTPConnection('127.0.0.1', port), [], []
    for b in bodies * 3:
        t = time.perf_counter(); d = post(c, b); lat.append((time.perf_counter() - t) * 1e3)
        emb.append(json.loads(d)['timings']['embed_ms'])
    lat.sort()
    print('c=1: p50 %.2f ms, p99 %.2f ms, embed_ms p50 %.2f' % (statistics.median(lat), lat[int(len(lat) * .99)], statistics.median(emb)))
else:
    done, stop = [0], time.time() + 8
    def work(i):
        c, j = http.client.HTTPConnection('127.0.0.1', port), i
        while time.time() < stop:
            post(c, bodies[j % len(bodies)]); done[0] += 1; j += n
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t = time.time(); [x.start() for x in ts]; [x.join() for x in ts]
    print('c=%d: %.0f QPS' % (n, done[0] / (time.time() - t)))
PY
}
for round in 1 2; do
  for w in $WAITS; do
    STML_SERVER_BATCH__MAX_WAIT_MS=$w target/release/server serve --model "$MODEL" --index "$INDEX" --port "$PORT" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
    echo "round $round, max_wait_ms=$w: $(client "$PORT" "$IMAGES" 1); $(client "$PORT" "$IMAGES" 8)"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
