#!/usr/bin/env bash
# A container engine for the container tests, on a machine that may have none and that reaches
# no container registry: `engine.sh up` installs what is missing (Debian's docker.io, the
# Compose v2 and buildx plugins from Debian's next release), starts dockerd unless one runs,
# and imports a local Debian base image under the name the Dockerfiles use. `engine.sh down`
# removes what `up` added: the daemon it started with its data, its iptables rules and bridge,
# or, on a daemon that was already running, the images it built.
#
# State lives in .run/containers (git-ignored). Source env.sh from there to use the engine:
#   . .run/containers/env.sh && docker compose version
#
# Behind a TLS-intercepting proxy, pip inside the builds must trust its CA: the local base image
# trusts the host's own added CAs (ENGINE_EXTRA_CA_DIR, by default update-ca-certificates'
# directory). Only this test-only base image holds them; the Dockerfiles never copy them.
# errtrace: the trap fires inside functions too. A grep that matches nothing exits 1, and under
# pipefail that fails its pipeline: every grep pipeline that may find nothing ends in || true.
set -Eeuo pipefail
trap 'echo "engine: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

cd "$(dirname "$0")/../.."
STATE=${ENGINE_STATE:-$PWD/.run/containers}
SUITE=${DEBIAN_SUITE:-bookworm}
NEXT_SUITE=${DEBIAN_NEXT_SUITE:-trixie}
# The Debian mirror this machine's apt already uses (its first main-archive source).
# Either file set may be missing: under pipefail a failed grep would fail the assignment below
# (and with it the script, silently), so the lookup itself never fails; an empty answer does.
host_mirror() {
    { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
      grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}'; } | grep -E '/debian/?$' | head -n 1 || true
}
MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || { echo "engine: no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2; exit 1; }
EXTRA_CA_DIR=${ENGINE_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
BASE_TAGS=(python:3.11-slim shop-test/debian:bookworm)
# Every image the test builds, so that `down` can remove them from a daemon it did not start.
BUILT_IMAGES=(auth-service:dev users-service:dev orders-service:dev payments-gateway:dev
    notifications-service:dev provider-simulator:dev smtp-sink:dev
    shop-test/postgres:dev shop-test/redis:dev shop-test/rabbitmq:dev shop-test/gateway:dev)

log() { printf '=== engine: %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
        || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    for attempt in 1 2 3 4 5; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null; then return 0; fi
        [ "$attempt" = 1 ] && apt-get update -qq || sleep 10   # a stale list, or a dpkg lock
    done
    return 1
}

# docker compose v2 and buildx: Debian packages them from its next release on; the binaries
# are static Go programs, so they are unpacked into a private plugin directory, not installed.
compose_plugins() {
    local plugins=$STATE/docker/cli-plugins
    [ -x "$plugins/docker-compose" ] && [ -x "$plugins/docker-buildx" ] && return 0
    log "fetching the Compose v2 and buildx plugins from Debian $NEXT_SUITE"
    local apt=$STATE/apt
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$plugins"
    echo "deb $MIRROR $NEXT_SUITE main" >"$apt/sources.list"
    local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt" -o APT::Get::List-Cleanup=0
        -o Debug::NoLocking=1)
    apt-get "${opts[@]}" update -qq
    (cd "$apt/archives" && apt-get "${opts[@]}" download docker-compose docker-buildx >/dev/null)
    for deb in "$apt"/archives/docker-compose_*.deb "$apt"/archives/docker-buildx_*.deb; do
        dpkg-deb -x "$deb" "$apt/root"
    done
    cp "$apt"/root/usr/lib/docker/cli-plugins/docker-compose "$plugins/" 2>/dev/null \
        || cp "$apt"/root/usr/libexec/docker/cli-plugins/docker-compose "$plugins/"
    cp "$apt"/root/usr/libexec/docker/cli-plugins/docker-buildx "$plugins/" 2>/dev/null \
        || cp "$apt"/root/usr/lib/docker/cli-plugins/docker-buildx "$plugins/"
    rm -rf "$apt"
}

write_env() {
    cat >"$STATE/env.sh" <<EOF
export DOCKER_CONFIG=$STATE/docker
export DOCKER_BUILDKIT=1
export COMPOSE_BAKE=false
EOF
}

start_daemon() {
    if docker info >/dev/null 2>&1; then
        log "using the running Docker daemon"
        return 0
    fi
    log "starting dockerd (data in $STATE/engine)"
    remove_engine_data   # what an interrupted run may have left: always start empty
    mkdir -p "$STATE/engine"
    dockerd --data-root "$STATE/engine/data" --exec-root "$STATE/engine/exec" \
        --pidfile "$STATE/engine/dockerd.pid" >"$STATE/engine/dockerd.log" 2>&1 &
    echo $! >"$STATE/engine/started"
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
    log "dockerd did not answer; its log:"; tail -20 "$STATE/engine/dockerd.log" >&2
    return 1
}

# The base image the Dockerfiles name (python:3.11-slim), made from Debian's packages:
# bookworm's python3 is 3.11. Cached as a tarball across runs.
base_image() {
    if docker image inspect "${BASE_TAGS[0]}" >/dev/null 2>&1; then return 0; fi
    local tarball=$STATE/base-$SUITE.tar
    if [ ! -s "$tarball" ]; then
        log "building a $SUITE root file system with debootstrap"
        local root=$STATE/rootfs
        rm -rf "$root"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python-is-python3,ca-certificates \
            "$SUITE" "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
            || { tail -20 "$STATE/debootstrap.log" >&2; return 1; }
        if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
            cp "$EXTRA_CA_DIR"/*.crt "$root/usr/local/share/ca-certificates/"
            chroot "$root" update-ca-certificates >/dev/null
        fi
        chroot "$root" apt-get clean
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/var/cache/debconf/*-old
        tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$root"
    fi
    log "importing the base image"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        "$tarball" "${BASE_TAGS[0]}" >/dev/null
    for tag in "${BASE_TAGS[@]:1}"; do docker tag "${BASE_TAGS[0]}" "$tag"; done
    touch "$STATE/base-imported"
}

up() {
    mkdir -p "$STATE"
    command -v dockerd >/dev/null || apt_install docker.io
    apt_install debootstrap iptables
    compose_plugins
    write_env
    # shellcheck source=/dev/null
    . "$STATE/env.sh"
    start_daemon
    base_image
    docker compose version
}

remove_engine_data() {
    [ -d "$STATE/engine" ] || return 0
    { grep -o " $STATE/engine/[^ ]*" /proc/mounts || true; } | sort -r | while read -r mount; do
        umount -l "$mount" || true
    done
    rm -rf "$STATE/engine"
}

# Rules and chains dockerd adds and never removes on exit.
remove_iptables_rules() {
    for table in filter nat; do
        iptables-save -t "$table" | { grep -E '^-A ' || true; } \
            | { grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' || true; } \
            | { grep -vE '^-A DOCKER' || true; } | while read -r _ rule; do
            # shellcheck disable=SC2086
            eval iptables -t "$table" -D $rule || true
        done
        iptables-save -t "$table" | sed -n 's/^:\(DOCKER[A-Z0-9-]*\) .*/\1/p' | while read -r chain; do
            iptables -t "$table" -F "$chain" || true
        done
        iptables-save -t "$table" | sed -n 's/^:\(DOCKER[A-Z0-9-]*\) .*/\1/p' | while read -r chain; do
            iptables -t "$table" -X "$chain" || true
        done
    done
}

down() {
    [ -f "$STATE/env.sh" ] && . "$STATE/env.sh"
    if [ -f "$STATE/engine/started" ]; then
        local pid
        pid=$(cat "$STATE/engine/started")
        log "stopping the dockerd it started (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        remove_iptables_rules
        for link in $(ip -o link show | sed -n 's/^[0-9]*: \(docker0\|br-[0-9a-f]\{12\}\)[:@].*/\1/p'); do
            ip link delete "$link" || true
        done
        remove_engine_data
        rm -f "$STATE/base-imported"
    elif docker info >/dev/null 2>&1; then
        log "removing the images it built from the running daemon"
        docker image rm "${BUILT_IMAGES[@]}" >/dev/null 2>&1 || true
        [ -f "$STATE/base-imported" ] && docker image rm "${BASE_TAGS[@]}" >/dev/null 2>&1 || true
        docker builder prune -f >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
