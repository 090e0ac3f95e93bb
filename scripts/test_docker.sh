#!/usr/bin/env bash
# Builds the CPU server image from a locally made Debian base and tests it over 127.0.0.1
# (issue 12): a one-shot container indexes a small gallery into a volume, a server
# container answers /search and reports healthy, its data survives `docker rm -f` and a
# new container, and the compose file validates and runs. Starts its own dockerd (no
# bridge network) and stops it by pid; everything but the cached base tarball
# (deps/docker/) is removed at the end.
#   bash scripts/test_docker.sh            # needs root for apt and dockerd
#   STML_IMAGE_BUILD=debug bash scripts/test_docker.sh
# The image is made of the release build (what scripts/build_images.sh ships) unless
# STML_IMAGE_BUILD=debug: scripts/test.sh asks for that right after `cargo test` has built
# the same code in target/debug, which spares a fresh clone a second, optimised build of
# every dependency. The Dockerfile, the image and the checks are the same either way.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/docker_lib.sh
source scripts/docker_lib.sh
WORK="$ROOT/target/docker-test"
IMAGE=stml-server:test
VOLUME=stml-test-data
PROJECT=stmltest
API_KEY=test-key-$$

fail() { echo "test_docker: FAILED: $*" >&2; exit 1; }
cleanup() {
  local rc=$?
  if [ -n "${DOCKERD_PID:-}" ]; then
    [ $rc -ne 0 ] && for c in stml-test-server stml-test-server2; do "$DOCKER" logs "$c" 2>&1 | tail -n 20 >&2 || true; done
    "$DOCKER" rm -f stml-test-server stml-test-server2 >/dev/null 2>&1 || true
    (cd "$WORK" && docker-compose -p "$PROJECT" -f "$ROOT/compose.yaml" down -v >/dev/null 2>&1) || true
    "$DOCKER" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    docker_stop
  fi
  # Leftover mounts of a daemon that had to be killed would keep the data from going.
  grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
  [ $rc -eq 0 ] && echo "test_docker: ok" >&2
  exit $rc
}
trap cleanup EXIT

docker_install
bash scripts/setup.sh >/dev/null
case "${STML_IMAGE_BUILD:-release}" in
  release) BUILD=target/release; build_args=(--release) ;;
  # The features `cargo test` builds the workspace with: nothing is built again.
  debug) BUILD=target/debug; build_args=(--features server/milvus) ;;
  *) fail "STML_IMAGE_BUILD is '$STML_IMAGE_BUILD'; use release or debug" ;;
esac
docker_say "building the server and the test fixture ($BUILD)"
cargo build "${build_args[@]}" -q -p server --bin server --example fixture
rm -rf "$WORK" && mkdir -p "$WORK"
docker_start "$WORK/daemon"
base_image
stage_server "$WORK/context" "$ROOT/$BUILD/server"
build_image "$IMAGE" "$WORK/context"

# The tests' tiny model and 12 synthetic PNGs, readable by the image's unprivileged user.
"$BUILD/examples/fixture" "$WORK/fixture" 12 >/dev/null
chmod -R a+rX "$WORK/fixture"
MODELS="$WORK/fixture"
GALLERY="$WORK/fixture/gallery"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

[ "$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")" = stml ] || fail "the image does not run as user stml"

docker_say "one-shot index job into volume $VOLUME"
"$DOCKER" volume create "$VOLUME" >/dev/null
"$DOCKER" run --rm --network host -v "$VOLUME:/data" -v "$MODELS:/models:ro" -v "$GALLERY:/images:ro" \
  "$IMAGE" index --images /images > "$WORK/index.log" 2>&1 || { cat "$WORK/index.log" >&2; fail "index job"; }
grep -q "indexed=12" "$WORK/index.log" || { cat "$WORK/index.log" >&2; fail "index job did not index 12 images"; }

start_server() { # start_server NAME: a server container on the volume; waits until healthy
  "$DOCKER" run -d --name "$1" --network host --health-interval 1s \
    -e STML_SERVER_PORT="$PORT" -e STML_SERVER_API_KEY="$API_KEY" \
    -v "$VOLUME:/data" -v "$MODELS:/models:ro" "$IMAGE" >/dev/null
  for _ in $(seq 1 120); do
    case "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$1")" in
      healthy) return ;;
      unhealthy) fail "$1 reported unhealthy" ;;
    esac
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$1")" = true ] || fail "$1 exited"
    sleep 0.5
  done
  fail "$1 was not healthy within 60 s"
}

start_server stml-test-server
# Docker's log copier may lag the health check by a moment: look for the line a few times
# (grep reads the whole log: with -q it could stop early, and under pipefail the writer's
# SIGPIPE would fail the pipeline).
logged() { "$DOCKER" logs "$1" 2>&1 | grep -F "$2" >/dev/null; }
for _ in $(seq 1 20); do logged stml-test-server "listening on http://127.0.0.1:$PORT" && break; sleep 0.25; done
logged stml-test-server "listening on http://127.0.0.1:$PORT" || fail "the server does not listen on 127.0.0.1 by default"
[ "$(curl -sf "$URL/stats" | json 'd["index"]["images"]')" = 12 ] || fail "/stats does not count the 12 indexed images"

docker_say "search through the container"
hit="$("$BUILD/server" search --url "$URL" --json -k 3 "$GALLERY/005.png" | json 'd["hits"][0]["metadata"]["source"]["path"]')"
[ "$hit" = /images/005.png ] || fail "searching with 005.png found $hit first"

# A mutation needs the key from the environment; with it, an upload is stored.
"$BUILD/examples/fixture" "$WORK/extra" 13 >/dev/null
code="$(curl -s -o /dev/null -w '%{http_code}' -F id=extra -F "image=@$WORK/extra/gallery/012.png" "$URL/images")"
[ "$code" = 401 ] || fail "an upload without the API key answered $code, not 401"
curl -sf -H "Authorization: Bearer $API_KEY" -F id=extra -F "image=@$WORK/extra/gallery/012.png" "$URL/images" >/dev/null \
  || fail "an upload with the API key failed"

docker_say "docker rm -f, then a new container on the same volume"
"$DOCKER" rm -f stml-test-server >/dev/null
start_server stml-test-server2
[ "$(curl -sf "$URL/stats" | json 'd["index"]["images"]')" = 13 ] || fail "the new container does not see the 13 items"
hit="$("$BUILD/server" search --url "$URL" --json -k 1 "$WORK/extra/gallery/012.png" | json 'd["hits"][0]["id"]')"
[ "$hit" = extra ] || fail "the upload acknowledged before docker rm -f is gone (found $hit)"
"$DOCKER" rm -f stml-test-server2 >/dev/null

docker_say "compose: config, then the index job and the server"
export STML_IMAGE="$IMAGE" STML_MODELS="$MODELS" STML_IMAGES="$GALLERY" STML_SERVER_PORT="$PORT"
(cd "$WORK" && docker-compose -p "$PROJECT" -f "$ROOT/compose.yaml" config -q) || fail "compose.yaml does not validate"
(cd "$WORK" && docker-compose -p "$PROJECT" -f "$ROOT/compose.yaml" up -d >"$WORK/compose.log" 2>&1) \
  || { cat "$WORK/compose.log" >&2; fail "docker-compose up"; }
for _ in $(seq 1 120); do
  curl -sf "$URL/readyz" >/dev/null && break
  sleep 0.5
done
[ "$(curl -sf "$URL/stats" | json 'd["index"]["images"]')" = 12 ] || fail "the compose server does not serve the indexed gallery"
