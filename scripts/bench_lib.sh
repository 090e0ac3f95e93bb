# Shared by the serving benchmarks (sourced; needs WORK and LOG set and the release
# trainer built).

model() { # model SIZE [HEAD]: a MobileNetV2 exported at SIZE px after one step, cached in
  # WORK; HEAD f (the default here: issue 11's 128-d model) or g (the 1024-d head a default
  # fit serves)
  local head="${2:-f}" m="$WORK/model-$1.onnx" fit="$WORK/fit-$1"
  [ "$head" = f ] || { m="$WORK/model-$1-$head.onnx"; fit="$WORK/fit-$1-$head"; }
  if [ ! -f "$m" ]; then
    echo "exporting a MobileNetV2 model at $1 px, head $head (one training step)" >&2
    rm -rf "$fit"
    target/release/trainer fit --data deps/fashion-mnist --out "$fit" --image-size "$1" --limit 600 \
      --eval-limit 200 --epochs 1 --batch-size 20 --max-steps-per-epoch 1 --served-head "$head" \
      > "$LOG/fit-$1-$head.json" 2> "$LOG/fit-$1-$head.log" \
      || { echo "the fit for the $1-px model failed (out of memory?): see $LOG/fit-$1-$head.log" >&2; return 1; }
    target/release/trainer export --run "$fit" --out "$m.tmp" >&2 || return 1
    mv "$m.tmp" "$m"
  fi
  echo "$m"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_listening() { # wait_listening PID LOGFILE: the base URL once the log says it listens
  for _ in $(seq 1 1500); do
    local url
    url="$(grep -o 'listening on http://[0-9.:]*' "$2" | head -n1 | cut -d' ' -f3 || true)"
    [ -n "$url" ] && { echo "$url"; return; }
    kill -0 "$1" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.2
  done
  echo "$2: the server did not start" >&2; exit 1
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
search_lua() { # search_lua FILE: the wrk script that POSTs a rotating set of image files
  # (paths in BENCH_QUERIES) to /search?k=10; BENCH_CLOSE=1 asks for a new connection per
  # request
  cat > "$1" <<'LUA'
-- POST a rotating set of image files (paths in BENCH_QUERIES) to /search?k=10; with
-- BENCH_CLOSE=1 every request asks for its connection to be closed, so wrk opens a new
-- one per request.
local requests = {}
local next_request = 0
function init(_)
  for path in io.lines(os.getenv("BENCH_QUERIES")) do
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    local kind = path:match("%.[Jj][Pp][Ee]?[Gg]$") and "image/jpeg" or "image/png"
    local headers = { ["Content-Type"] = kind }
    if os.getenv("BENCH_CLOSE") == "1" then headers["Connection"] = "close" end
    requests[#requests + 1] = wrk.format("POST", "/search?k=10", headers, body)
  end
end
function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
LUA
}
