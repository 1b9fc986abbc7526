#!/bin/bash
# bench-write.sh - layerfs writable mounts and commits against kernel overlayfs
# (rw) and fuse-overlayfs (rw), on the anchors harness (shared/bench/anchors.sh,
# suites "write" and "commit"): untar 50 MB into the mount, copy-up of 200
# small files and of the 256 MiB file, rm -rf of a tree, commit of that large
# change, and commit of a small change. Ratios are against kernel overlayfs.
# Then the rootless column (scripts/bench-write-rootless.sh): layerfs inside
# `layerfs unshare` as an ordinary user against rootless fuse-overlayfs.
#
#   scripts/bench-write.sh                  # ROUNDS=3
#   ROUNDS=5 scripts/bench-write.sh
#
# Needs root, /dev/fuse and the harness's data (shared/bench/make-data.sh; the
# image is its OCI layout, /var/tmp/lfs-data/oci, tag lfs-bench:3layer).
# Builds target/release/layerfs unless LAYERFS names a binary. Each mount is a
# new container, removed at unmount; a commit's new layer blob is hard-linked
# (copied if that fails) to the "$OUT" the harness checks, so the timing is
# the commit's own.
# Environment, named as in bench-mount.sh: ROUNDS (3), BENCH_DIR (shared/bench;
# BENCH still works), LAYERFS (the binary), LFS_DATA, LAYERFS_BENCH_STORE (the
# store, default $LFS_WORK/layerfs-store, i.e. /var/tmp/lfs-bench/layerfs-store;
# LAYERFS_BENCH_ROOT still works).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/scripts/bench-lib.sh"
BENCH_DIR=${BENCH_DIR:-${BENCH:-$HERE/../shared/bench}}
DATA=${LFS_DATA:-/var/tmp/lfs-data}
LFS_STORE=${LAYERFS_BENCH_STORE:-${LAYERFS_BENCH_ROOT:-${LFS_WORK:-/var/tmp/lfs-bench}/layerfs-store}}
IMAGE=lfs-bench:3layer

[ "$(id -u)" = 0 ] || die "run as root (mounts)"
[ -x "$BENCH_DIR/anchors.sh" ] || die "no harness at $BENCH_DIR (set BENCH_DIR)"
[ -d "$DATA/oci" ] || die "no image at $DATA/oci: run $BENCH_DIR/make-data.sh first"
# One anchors.sh run at a time: they share mount points and unmount them on exit.
while pgrep -f 'anchors\.sh' > /dev/null; do
    echo "another anchors.sh run is in progress; waiting" >&2
    sleep 30
done
layerfs_bin

lfs() { "$LAYERFS" --root "$LFS_STORE" "$@"; }
mkdir -p "$LFS_STORE"
if ! lfs images -q "$IMAGE" | grep -q .; then
    lfs load -i "$DATA/oci" > /dev/null || die "layerfs load -i $DATA/oci failed"
fi

# The harness evals these with MNT, FRESH and OUT set; FRESH is new per mount.
NEW_LAYER=$HERE/scripts/new-layer.py
export LAYERFS LFS_STORE IMAGE NEW_LAYER
export CUSTOM_NAME=layerfs-rw CUSTOM_REF=kovl-rw CUSTOM_VIEW=merged CUSTOM_SUITES="write commit"
# Each one line: the harness lists them in a tab-separated file.
export CUSTOM_MOUNT='c=bench-$(basename "$FRESH")-$$; echo "$c" > "$FRESH/container"; "$LAYERFS" --root "$LFS_STORE" mount --writable --name "$c" "$IMAGE" "$MNT"'
export CUSTOM_UMOUNT='"$LAYERFS" --root "$LFS_STORE" rm -f "$(cat "$FRESH/container")" > /dev/null; "$LAYERFS" --root "$LFS_STORE" rmi bench-commit:latest > /dev/null 2>&1; "$LAYERFS" --root "$LFS_STORE" gc > /dev/null'
# The new layer is the last one of the committed manifest (new-layer.py).
export CUSTOM_COMMIT='"$LAYERFS" --root "$LFS_STORE" commit "$MNT" bench-commit:latest > /dev/null && blob=$(python3 "$NEW_LAYER" "$LFS_STORE" bench-commit:latest) && { ln -f "$blob" "$OUT" 2> /dev/null || cp "$blob" "$OUT"; }'
export CUSTOM_COMMIT_CHECK='tar -tzf "$OUT" > "$OUT.list" && grep -qx etc/motd "$OUT.list" && grep -qx etc/.wh.issue "$OUT.list"'

ROUNDS=${ROUNDS:-3} TOOLS="kovl-rw fovl-rw layerfs-rw" SUITES="write commit" "$BENCH_DIR/anchors.sh"

# The rootless column: layerfs in `layerfs unshare` as an ordinary user,
# beside rootless fuse-overlayfs in the same namespace (ROOTLESS=0 skips it).
if [ "${ROOTLESS:-1}" = 1 ]; then
    LAYERFS=$LAYERFS ROUNDS=${ROUNDS:-3} "$HERE/scripts/bench-write-rootless.sh"
fi
