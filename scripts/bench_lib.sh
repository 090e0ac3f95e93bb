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
