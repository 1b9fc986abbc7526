#!/bin/bash
# bench-mount.sh - benchmark of the read-only mount: layerfs against kernel
# overlayfs over the same layers extracted (the limit) and fuse-overlayfs (the
# usual FUSE peer), measured interleaved in one run by the shared anchors
# harness on its Debian 3-layer image, with ratios to kernel overlayfs.
#
#   scripts/bench-mount.sh                         # ROUNDS=3
#   ROUNDS=7 SUITES="walk read" scripts/bench-mount.sh
#
# What is measured (anchors.sh suites; each on a fresh mount, "cold" after
# dropping the page cache):
#   index   layerfs only: mount with its layer indexes deleted (rebuilt from the blobs)
#   mount   mount command time, first stat of a deep file, first byte of a file
#           stored after the 256 MiB file in its layer
#   walk    find MNT -printf '%s %m %p\n', cold and warm; daemon RSS; diff of the
#           tree against kernel overlayfs (manifest_diff, round 1)
#   read    tar -C MNT -cf - . | wc -c, cold and warm; daemon RSS
#   big     dd of the 256 MiB file, cold and warm
#   chroot  200 execs of /bin/ls in one chroot shell (/proc, /dev bound); dpkg -l
#
# Needs root, /dev/fuse, fuse-overlayfs and the harness (BENCH_DIR, default
# ../../shared/bench from this script: anchors.sh, make-data.sh, lib.sh).
# Builds target/release/layerfs unless LAYERFS names a binary. The image is
# loaded once into LAYERFS_BENCH_STORE (default $LFS_WORK/layerfs-store).
# Waits while another anchors.sh run is in progress (they share mount points).
# Other settings go to anchors.sh as they are: ROUNDS, SUITES, TOOLS, LFS_DATA,
# LFS_WORK, WARM_REPS, LS_N, RUN_ID...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/bench-lib.sh"
BENCH_DIR=${BENCH_DIR:-$HERE/../../shared/bench}
[ -x "$BENCH_DIR/anchors.sh" ] || die "no benchmark harness (anchors.sh) in $BENCH_DIR; set BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
# shellcheck source=/dev/null
. "$BENCH_DIR/lib.sh"          # DATA WORK OCI_DIR OVL_DIR REF_MANIFEST log die
[ "$(id -u)" = 0 ] || die "run as root"
for t in fuse-overlayfs fusermount3 chroot; do
    command -v "$t" >/dev/null || die "missing $t (apt-get install fuse-overlayfs fuse3)"
done

# ---- the layerfs binary
layerfs_bin

# ---- the data (built once by the harness)
if [ ! -s "$OCI_DIR/index.json" ] || [ ! -e "$OVL_DIR/.done" ] || [ ! -s "$REF_MANIFEST" ]; then
    log "no benchmark data in $DATA: running make-data.sh"
    "$BENCH_DIR/make-data.sh"
fi

# ---- one run at a time: anchors.sh runs share $WORK/mnt and unmount it on exit
others() { pgrep -f 'anchors\.sh' || true; }
while [ -n "$(others)" ]; do
    log "another anchors.sh run is in progress (pid $(others | tr '\n' ' ')); waiting"
    sleep 30
done

# ---- the image in a layerfs store
IMAGE=lfs-bench:3layer
STORE=${LAYERFS_BENCH_STORE:-$WORK/layerfs-store}
mkdir -p "$STORE"
if ! "$LAYERFS" --root "$STORE" inspect "$IMAGE" >/dev/null 2>&1; then
    if "$LAYERFS" load --help >/dev/null 2>&1; then
        log "layerfs load -i $OCI_DIR -> $STORE"
        "$LAYERFS" --root "$STORE" load -i "$OCI_DIR"
    else
        # The store is an OCI layout; indexes are built on first mount.
        log "skopeo copy oci:$OCI_DIR:$IMAGE -> $STORE (this layerfs has no load)"
        skopeo copy "oci:$OCI_DIR:$IMAGE" "oci:$STORE:$IMAGE"
    fi
fi
"$LAYERFS" --root "$STORE" inspect "$IMAGE" >/dev/null || die "$IMAGE is not in $STORE"

# anchors.sh reports the index size as `du -sk $STATE/idx`: show it the store's
# index directory there (a bind mount, so the store itself stays as it is).
STATE_IDX=$WORK/state/layerfs/idx
mkdir -p "$STATE_IDX" "$STORE/layerfs/index"
mountpoint -q "$STATE_IDX" || mount --bind "$STORE/layerfs/index" "$STATE_IDX"
trap 'umount "$STATE_IDX" 2>/dev/null || umount -l "$STATE_IDX"' EXIT

# ---- the run
export LFS_BIN=$LAYERFS LFS_STORE=$STORE LFS_IMAGE=$IMAGE
export CUSTOM_NAME=layerfs
# LAYERFS_MOUNT_ARGS: extra `layerfs mount` flags (e.g. "--file-cache 1024").
export LFS_MOUNT_ARGS=${LAYERFS_MOUNT_ARGS:-}
export CUSTOM_MOUNT='"$LFS_BIN" --root "$LFS_STORE" mount $LFS_MOUNT_ARGS "$LFS_IMAGE" "$MNT"'
export CUSTOM_UMOUNT='"$LFS_BIN" --root "$LFS_STORE" umount "$MNT"'
export CUSTOM_INDEX_RESET='rm -f "$LFS_STORE"/layerfs/index/*.idx'
export CUSTOM_SUITES="index mount walk read big chroot"
export TOOLS=${TOOLS:-"kovl fovl layerfs"}
export SUITES=${SUITES:-"index mount walk read big chroot"}
export ROUNDS=${ROUNDS:-3}
export RUN_ID=${RUN_ID:-bench-mount-$(date +%Y%m%d-%H%M%S)}
log "layerfs $("$LAYERFS" --version | awk '{print $NF}') ($LAYERFS, git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')); store $STORE"
"$BENCH_DIR/anchors.sh"
RUN=$WORK/results/$RUN_ID
if [ -s "$RUN/errors.log" ]; then
    log "errors during the run ($RUN/errors.log):"
    head -20 "$RUN/errors.log" >&2
fi
