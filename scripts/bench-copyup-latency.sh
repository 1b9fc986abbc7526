#!/bin/bash
# bench-copyup-latency.sh - how long `stat` of other paths takes on a
# writable mount while a large lower file is copied up: p50/p99/max of
# stat(2) of names not looked up before (each reaches the daemon: the kernel
# caches what it has seen), first on the idle mount, then while one byte is
# appended to the large file (which copies its data up). A figure to compare
# builds (before/after a change), not a test.
#
#   scripts/bench-copyup-latency.sh
#   LAYERFS=/path/to/other/layerfs scripts/bench-copyup-latency.sh
#   SIZE_MB=256 ROUNDS=5 scripts/bench-copyup-latency.sh
#
# Needs root, /dev/fuse and python3. The image (SIZE_MB of random data in
# big.bin, gzip -1, and 20000 small files in many/) is made once in $WORK and
# imported into a store there, which later runs (any build) reuse. Each
# round mounts a new container, removed after.
# Environment: LAYERFS (the binary; default a release build made now),
# SIZE_MB (1024), ROUNDS (3), WORK (/var/tmp/lfs-copyup-bench), IDLE (2000
# stats before each copy-up). Stats are 1 ms apart during the copy-up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/scripts/bench-lib.sh"
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/var/tmp/lfs-copyup-bench}
IDLE=${IDLE:-2000}
SMALL_FILES=20000
IMAGE=copyup-bench:$SIZE_MB

[ "$(id -u)" = 0 ] || die "run as root (mounts)"
[ -e /dev/fuse ] || die "no /dev/fuse"
command -v python3 > /dev/null || die "needs python3"
layerfs_bin
STORE=$WORK/store
lfs() { "$LAYERFS" --root "$STORE" "$@"; }
mkdir -p "$WORK"

if ! lfs images -q "$IMAGE" 2> /dev/null | grep -q .; then
    layer=$WORK/layer-$SIZE_MB.tar.gz
    if [ ! -s "$layer" ]; then
        log "making $layer ($SIZE_MB MiB of random data, $SMALL_FILES small files)"
        python3 - "$WORK/tree-$$" "$SIZE_MB" "$SMALL_FILES" << 'EOF'
import os, sys
root, size_mb, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/many")
with open(f"{root}/big.bin", "wb") as f:
    for _ in range(size_mb):
        f.write(os.urandom(1 << 20))
for i in range(n):
    with open(f"{root}/many/f{i}", "w") as f:
        f.write(f"small file {i}\n")
EOF
        tar -C "$WORK/tree-$$" -cf - big.bin many | gzip -1 > "$layer.part"
        mv "$layer.part" "$layer"
        rm -rf "$WORK/tree-$$"
    fi
    log "importing $layer as $IMAGE"
    lfs import "$layer" "$IMAGE" > /dev/null || die "import failed"
fi

MNT=$WORK/mnt-$$
mkdir -p "$MNT"
cleanup() {
    if mountpoint -q "$MNT"; then lfs umount "$MNT" > /dev/null 2>&1 || umount -l "$MNT"; fi
    lfs rm -f "copyup-bench-$$" > /dev/null 2>&1 || true
    rmdir "$MNT" 2> /dev/null || true
}
trap cleanup EXIT

log "layerfs: $LAYERFS; $ROUNDS rounds, $SIZE_MB MiB copy-up"
printf '%-6s %-8s %7s %9s %9s %9s %8s\n' round phase stats p50_ms p99_ms max_ms copy_s
for round in $(seq 1 "$ROUNDS"); do
    lfs mount --writable --name "copyup-bench-$$" "$IMAGE" "$MNT" > /dev/null
    for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
    mountpoint -q "$MNT" || die "the mount did not appear"
    python3 - "$MNT" "$IDLE" "$SMALL_FILES" "$round" << 'EOF'
import os, subprocess, sys, time
mnt, idle, n, round_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
counter = iter(range(1, 1 << 40))
os.stat(f"{mnt}/many/f0")  # merges many/ once, before timing

def stat_next():
    # Names never looked up (the kernel answers those it has seen itself):
    # the small files, then names that do not exist.
    i = next(counter)
    path = f"{mnt}/many/f{i}" if i < n else f"{mnt}/many/missing{i}"
    t = time.perf_counter()
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    return time.perf_counter() - t

def report(phase, lat, copy_s=""):
    lat = sorted(lat)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(f"{round_:<6} {phase:<8} {len(lat):>7} {q(0.5):>9.3f} {q(0.99):>9.3f} "
          f"{lat[-1] * 1000:>9.3f} {copy_s:>8}", flush=True)

report("idle", [stat_next() for _ in range(idle)])
# Appending one byte opens the file for writing: its data is copied up.
start = time.perf_counter()
writer = subprocess.Popen(["sh", "-c", f"printf x >> '{mnt}/big.bin'"])
lat = []
while writer.poll() is None:
    lat.append(stat_next())
    time.sleep(0.001)
copy_s = time.perf_counter() - start
if writer.returncode != 0:
    sys.exit("the append failed")
report("copy-up", lat or [float("nan")], f"{copy_s:.2f}")
EOF
    lfs umount "$MNT" > /dev/null
    lfs rm -f "copyup-bench-$$" > /dev/null
done
