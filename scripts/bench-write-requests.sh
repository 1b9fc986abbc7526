#!/bin/bash
# bench-write-requests.sh - what the write rows of bench-write.sh cost the
# daemon, counted rather than timed: FUSE requests (by opcode) and host
# syscalls per entry, for the untar of the harness's 50 MB payload, the
# copy-up of 200 small lower files and rm -rf /usr/share/locale, each in a
# fresh writable mount of the harness's image, with strace on the daemon.
# Counts do not depend on the load of the machine; the daemon CPU printed
# beside them does (and strace inflates it).
#
#   scripts/bench-write-requests.sh             # target/release/layerfs
#   LAYERFS=/path/to/layerfs scripts/bench-write-requests.sh
#
# Needs root, /dev/fuse, strace and the harness's data (shared/bench/make-data.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/scripts/bench-lib.sh"
DATA=${LFS_DATA:-/var/tmp/lfs-data}
STORE=${LAYERFS_BENCH_STORE:-${LFS_WORK:-/var/tmp/lfs-bench}/requests-store}
IMAGE=lfs-bench:3layer
[ "$(id -u)" = 0 ] || die "run as root (mounts)"
command -v strace > /dev/null || die "missing strace"
[ -d "$DATA/oci" ] || die "no image at $DATA/oci: run shared/bench/make-data.sh first"
layerfs_bin
lfs() { "$LAYERFS" --root "$STORE" "$@"; }
mkdir -p "$STORE"
lfs images -q "$IMAGE" | grep -q . || lfs load -i "$DATA/oci" > /dev/null
W=$(mktemp -d /tmp/lfs-requests-XXXXXX)
M=$W/m
mkdir -p "$M"
trap 'mountpoint -q "$M" && lfs umount "$M" > /dev/null; rm -rf "$W"' EXIT

count() {   # name entries command
    local name=$1 n=$2 c=requests-$$-$1
    shift 2
    lfs mount --writable --name "$c" "$IMAGE" "$M" || die "mount failed"
    find "$M/usr/share/doc" -type f | sort > "$W/doc.list"
    sed -n 1,200p "$W/doc.list" > "$W/copyup.list"
    local pid
    pid=$(pgrep -f -- "--name $c ") || die "no daemon for $c"
    strace -qq -f -p "$pid" -xx -s 8 -o "$W/$name.strace" &
    local st=$!
    sleep 1.5   # attached to every thread
    local t0 t1
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    eval "$@"
    sync
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 0.5
    kill -INT $st
    wait $st 2> /dev/null || true
    lfs umount "$M" > /dev/null
    lfs rm -f "$c" > /dev/null
    python3 "$HERE/scripts/fuse-requests.py" "$W/$name.strace" "$name" "$n" "$(( (t1 - t0) * 10 ))"
}
count untar "$(tar -tf "$DATA/payload.tar" | wc -l)" "mkdir -p '$M/tmp/u' && tar -C '$M/tmp/u' -xf '$DATA/payload.tar'"
count copyup 200 "while read -r f; do echo x >> \"\$f\"; done < '$W/copyup.list'"
count rm "$(find "$DATA/rootfs.debootstrap/usr/share/locale" | wc -l)" "rm -rf '$M/usr/share/locale'"
