#!/bin/bash
# bench-run.sh - `layerfs run --rm IMAGE true`, start to exit, against
# `podman run --rm` of the same image on the same runtime (runc), both with
# --network none (podman's rootful bridge is not set up here), then layerfs
# with its default network (slirp4netns) for the cost of that. Median of
# ROUNDS interleaved rounds, after one warm-up run of each.
#
#   scripts/bench-run.sh                 # ROUNDS=7, the Debian minbase image
#   ROUNDS=11 LAYERFS=target/debug/layerfs scripts/bench-run.sh
#
# The image: the bench data's 3-layer Debian (/var/tmp/lfs-data/oci, from
# shared/bench/make-data.sh) when there, else the Debian minbase layer of the
# test cache (/var/tmp/layerfs-test-cache, made by the mount tests). podman
# gets it through `layerfs save` into a store of its own, so neither side
# pulls or unpacks while timed. Needs root, /dev/fuse, runc, podman.
#
# BENCH_USER=NAME adds the rootless pair, run as that user (it needs
# subordinate ids and /dev/fuse open to it): layerfs against rootless podman
# on fuse-overlayfs, both with --network none, each with a store of the user's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/scripts/bench-lib.sh"
ROUNDS=${ROUNDS:-7}
DATA=${LFS_DATA:-/var/tmp/lfs-data}

[ "$(id -u)" = 0 ] || die "run as root (mounts, runc)"
command -v runc > /dev/null || die "runc is not installed (apt-get install runc)"
command -v podman > /dev/null || die "podman is not installed (apt-get install podman)"
layerfs_bin

WORK=$(mktemp -d /var/tmp/bench-run.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
lfs() { "$LAYERFS" --root "$WORK/store" "$@"; }
pod() {
    podman --root "$WORK/podman/root" --runroot "$WORK/podman/run" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}

if [ -d "$DATA/oci" ]; then
    log "image: $DATA/oci (lfs-bench:3layer)"
    lfs load -i "$DATA/oci" > /dev/null
    IMAGE=lfs-bench:3layer
else
    layer=$(ls /var/tmp/layerfs-test-cache/debian-layers-*/layer1.tar.gz 2>/dev/null | head -1)
    [ -n "$layer" ] || die "no image: run the mount tests (test cache) or shared/bench/make-data.sh"
    log "image: $layer (Debian minbase, one layer)"
    lfs import "$layer" bench:run > /dev/null
    IMAGE=bench:run
fi
lfs save "$IMAGE" -o "$WORK/image.tar"
pod load -i "$WORK/image.tar" > /dev/null 2>&1 || die "podman load failed"
PIMAGE=localhost/$IMAGE

t_lfs() { local s; s=$(now); lfs run --rm --network "$1" "$IMAGE" true; echo "$(now) - $s" | bc; }
t_pod() {
    local s; s=$(now)
    pod run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "$PIMAGE" true
    echo "$(now) - $s" | bc
}

t_lfs none > /dev/null; t_pod > /dev/null   # warm caches
a=(); b=(); c=()
for r in $(seq "$ROUNDS"); do
    a+=("$(t_lfs none)"); b+=("$(t_pod)"); c+=("$(t_lfs default)")
    log "round $r: layerfs ${a[-1]} s, podman ${b[-1]} s, layerfs (slirp4netns) ${c[-1]} s"
done
ml=$(median "${a[@]}"); mp=$(median "${b[@]}"); mc=$(median "${c[@]}")
printf '%-44s %8s\n' "run --rm $IMAGE true (median of $ROUNDS)" "seconds"
printf '%-44s %8.3f\n' "layerfs run --network none (runc)" "$ml"
printf '%-44s %8.3f\n' "podman run --network none (runc)" "$mp"
printf '%-44s %8.3f\n' "layerfs run (default network, slirp4netns)" "$mc"
printf 'layerfs / podman: %.2f\n' "$(echo "$ml / $mp" | bc -l)"

[ -n "${BENCH_USER:-}" ] || exit 0
U=$BENCH_USER
UH=$WORK/user
chmod 755 "$WORK"
mkdir -p "$UH/run" && chmod 700 "$UH/run"
cp "$LAYERFS" "$WORK/image.tar" "$UH/"
chown -R "$U:" "$UH"
as_user() { runuser -u "$U" -- env -i PATH=/usr/bin:/bin HOME="$UH" XDG_RUNTIME_DIR="$UH/run" "$@"; }
ulfs() { as_user "$UH/layerfs" --root "$UH/store" "$@"; }
upod() {
    as_user podman --root "$UH/podman" --runroot "$UH/run/podman" --storage-driver overlay \
        --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs --cgroup-manager cgroupfs \
        --events-backend file --runtime runc "$@"
}
# Rootless podman keeps a pause process holding its namespace: it goes too.
cleanup() {
    [ -f "$UH/run/libpod/tmp/pause.pid" ] && kill "$(cat "$UH/run/libpod/tmp/pause.pid")" 2> /dev/null
    rm -rf "$WORK"
}
ulfs load -i "$UH/image.tar" > /dev/null
upod load -i "$UH/image.tar" > /dev/null 2>&1 || die "rootless podman load failed"
t_ulfs() { local s; s=$(now); ulfs run --rm --network none "$IMAGE" true; echo "$(now) - $s" | bc; }
t_upod() {
    local s; s=$(now)
    upod run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "$PIMAGE" true
    echo "$(now) - $s" | bc
}
t_ulfs > /dev/null; t_upod > /dev/null
d=(); e=()
for r in $(seq "$ROUNDS"); do
    d+=("$(t_ulfs)"); e+=("$(t_upod)")
    log "rootless round $r: layerfs ${d[-1]} s, podman ${e[-1]} s"
done
md=$(median "${d[@]}"); me=$(median "${e[@]}")
printf '%-44s %8.3f\n' "rootless layerfs run --network none (as $U)" "$md"
printf '%-44s %8.3f\n' "rootless podman run (fuse-overlayfs, as $U)" "$me"
printf 'rootless layerfs / podman: %.2f\n' "$(echo "$md / $me" | bc -l)"
