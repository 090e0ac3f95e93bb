# Container helpers shared by scripts/test_docker.sh and scripts/build_images.sh (sourced
# with ROOT set). The facts they rest on (../shared/PLATFORM.md): no image registry can be
# reached, so the Debian base is made here with debootstrap from this machine's apt
# mirror and imported; the daemon runs without a bridge network (host networking only).

# Debian's client: a newer `docker` earlier on PATH may lack the builder these scripts use.
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=0
BASE_IMAGE=stml-base:bookworm
BASE_TAR="$ROOT/deps/docker/bookworm-minbase.tar"

docker_say() { echo "[docker] $*" >&2; }

# Installs the Debian packages the scripts need (docker.io, debootstrap, docker-compose).
docker_install() {
  local missing=()
  [ -x "$DOCKER" ] && [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ]; then
    echo "docker: missing Debian packages ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    return 1
  fi
  docker_say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# docker_start DIR: a private daemon with its state under DIR (socket, pid, data), no
# bridge network. Sets DOCKER_HOST and DOCKERD_PID; docker_stop ends it.
docker_start() {
  local dir
  dir="$(realpath -m "$1")"
  mkdir -p "$dir"
  export DOCKER_HOST="unix://$dir/docker.sock"
  /usr/sbin/dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
    --host "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    > "$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 150); do
    "$DOCKER" info >/dev/null 2>&1 && { docker_say "daemon $DOCKERD_PID ready ($DOCKER_HOST)"; return; }
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$dir/dockerd.log" >&2; echo "docker: dockerd exited (log: $dir/dockerd.log)" >&2; return 1; }
    sleep 0.2
  done
  echo "docker: dockerd did not answer within 30 s (log: $dir/dockerd.log)" >&2
  return 1
}

# Stops the daemon docker_start started, by its pid (SIGTERM, then SIGKILL after 30 s).
docker_stop() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
}

# The Debian mirror this machine's apt is configured with.
apt_mirror() {
  local m
  m="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [ -n "$m" ] || m="$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$m" ] || { echo "docker: no Debian mirror found in /etc/apt/sources.list*; configure apt first" >&2; return 1; }
  echo "$m"
}

# Imports the Debian base image (bookworm, minbase, slimmed like the official slim image),
# made once with debootstrap and kept as deps/docker/bookworm-minbase.tar.
base_image() {
  "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return
  if [ ! -f "$BASE_TAR" ]; then
    local mirror rootfs
    mirror="$(apt_mirror)"
    rootfs="$(dirname "$BASE_TAR")/rootfs.tmp"
    docker_say "debootstrap bookworm (minbase) into $rootfs (about a minute)"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$(dirname "$BASE_TAR")/debootstrap.log" 2>&1 \
      || { tail -n 20 "$(dirname "$BASE_TAR")/debootstrap.log" >&2; echo "docker: debootstrap failed (log above)" >&2; return 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$rootfs"
  fi
  docker_say "importing $BASE_IMAGE"
  "$DOCKER" import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE_IMAGE" >/dev/null
}

# stage DOCKERFILE DIR BINARY: a build context in DIR with the Dockerfile and BINARY
# stripped of its debug information (libraries are added to DIR/lib by the caller).
stage() {
  rm -rf "$2" && mkdir -p "$2/lib"
  cp "$ROOT/docker/$1" "$2/Dockerfile"
  objcopy --strip-debug "$3" "$2/$(basename "$3")"
}

# stage_server DIR [BINARY]: the CPU server image's context, with BINARY (default: the
# release build, which must be built).
stage_server() {
  stage server.Dockerfile "$1" "${2:-$ROOT/target/release/server}"
  cp "$ROOT/deps/onnxruntime/libonnxruntime.so" "$1/lib/"
  chmod -R a+rX "$1"
}

# build_image NAME DIR: docker build of a staged context (host network for any RUN).
build_image() {
  docker_say "building $1"
  local log="$2.build.log"
  "$DOCKER" build --network host --build-arg "BASE=$BASE_IMAGE" -t "$1" "$2" > "$log" 2>&1 \
    || { tail -n 30 "$log" >&2; echo "docker: building $1 failed (log above)" >&2; return 1; }
}
