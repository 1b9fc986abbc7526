#!/bin/bash
# bench-scale.sh - the read-only mount at scale: one gzip layer of 303,030
# small files (30 directories of 100 directories of 100 files; 303,060
# entries with the directories) built with Python's tarfile, served by layerfs
# beside kernel overlayfs and fuse-overlayfs over the extracted tree, with
# ratios to kernel overlayfs.
#
#   scripts/bench-scale.sh                  # ROUNDS=1, TOOLS="kovl fovl layerfs"
#   ROUNDS=3 TOOLS="kovl layerfs" scripts/bench-scale.sh
#   TOPS=100 TOOLS=layerfs scripts/bench-scale.sh   # 1,010,100 entries (TOPS x 10,101)
#
# Rows (each round a fresh mount; "cold" after dropping the page cache):
#   cold find     find MNT -printf '%s %m %p\n' | wc -l
#   warm find     the same again (median of WARM_REPS, default 3)
#   RSS walk      daemon VmRSS after the walks (KiB, and bytes per entry)
#   import RSS    peak RSS of `layerfs import` of the layer into a new store
#                 (/usr/bin/time -f %M), and its time
# The data is built once under SCALE_DIR (default /var/tmp/layerfs-bench-scale):
# scale.tar.gz, the tree extracted (for the overlays), and the image imported
# into LAYERFS_BENCH_STORE (default $SCALE_DIR/store). Results go to
# $SCALE_DIR/results/$RUN_ID/summary.txt.
# Needs root, /dev/fuse, fuse-overlayfs (for fovl), python3, /usr/bin/time.
# LAYERFS names the binary (default: a release build made now).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/bench-lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (mounts, drop_caches)"
command -v python3 >/dev/null || die "missing python3"
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"

SCALE_DIR=${SCALE_DIR:-/var/tmp/layerfs-bench-scale}
STORE=${LAYERFS_BENCH_STORE:-$SCALE_DIR/store}
ROUNDS=${ROUNDS:-1}
WARM_REPS=${WARM_REPS:-3}
TOOLS=${TOOLS:-"kovl fovl layerfs"}
RUN_ID=${RUN_ID:-bench-scale-$(date +%Y%m%d-%H%M%S)}
RUN=$SCALE_DIR/results/$RUN_ID
# Top-level directories of 100 directories of 100 files (30: the issue's layer).
TOPS=${TOPS:-30}
case $TOPS in
    30) TGZ=$SCALE_DIR/scale.tar.gz; TREE=$SCALE_DIR/tree; IMAGE=scale:1 ;;
    *) TGZ=$SCALE_DIR/scale-$TOPS.tar.gz; TREE=$SCALE_DIR/tree-$TOPS; IMAGE=scale:$TOPS ;;
esac
MNT=$SCALE_DIR/mnt/$RUN_ID
mkdir -p "$SCALE_DIR" "$RUN" "$MNT"

layerfs_bin
lfs() { "$LAYERFS" --root "$STORE" "$@"; }

# ---- the data, built once
if [ ! -s "$TGZ" ]; then
    log "building $TGZ ($TOPS x 10,101 entries, once)"
    python3 - "$TGZ.tmp" "$TOPS" <<'EOF'
import io, sys, tarfile, random
rnd = random.Random(13)
with tarfile.open(sys.argv[1], "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
    def add(name, kind, data=b""):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mtime, ti.uid, ti.gid = kind, 1700000000, 0, 0
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data) if data else None)
    for a in range(int(sys.argv[2])):
        add(f"a{a:02d}", tarfile.DIRTYPE)
        for b in range(100):
            d = f"a{a:02d}/d{b:03d}"
            add(d, tarfile.DIRTYPE)
            for c in range(100):
                n = rnd.randrange(16, 2048)
                add(f"{d}/file-{c:03d}.txt", tarfile.REGTYPE, (f"{d} {c} " * 200).encode()[:n])
EOF
    mv "$TGZ.tmp" "$TGZ"
fi
# The extracted tree is only for the overlays.
if [[ " $TOOLS " =~ " "(kovl|fovl)" " ]] && [ ! -e "$TREE.done" ]; then
    log "extracting $TGZ into $TREE (once)"
    rm -rf "$TREE"; mkdir -p "$TREE"
    t0=$(now); tar -C "$TREE" -xzf "$TGZ"; t1=$(now)
    log "untar took $(echo "$t1 - $t0" | bc) s"
    touch "$TREE.done"
fi
if ! lfs inspect "$IMAGE" >/dev/null 2>&1; then
    log "layerfs import $TGZ $IMAGE -> $STORE"
    lfs import "$TGZ" "$IMAGE" >/dev/null
fi
ENTRIES=$(( $(tar -tzf "$TGZ" | wc -l) ))

# ---- mounting each tool (kovl/fovl: the extracted tree as the only lower dir)
do_mount() {
    case $1 in
        kovl) mount -t overlay overlay -o "ro,lowerdir=$TREE:$SCALE_DIR/empty" "$MNT" ;;
        fovl) fuse-overlayfs -o "lowerdir=$TREE:$SCALE_DIR/empty" "$MNT" ;;
        layerfs) lfs mount "$IMAGE" "$MNT" ;;
        *) die "unknown tool $1" ;;
    esac
}
do_umount() {
    case $1 in
        layerfs) lfs umount "$MNT" ;;
        *) umount "$MNT" ;;
    esac
}
mkdir -p "$SCALE_DIR/empty"
# Summed VmRSS (KiB) of the processes that have MNT on their command line.
rss_kib() {
    local d sum=0
    for d in /proc/[0-9]*; do
        if tr '\0' '\n' 2>/dev/null < "$d/cmdline" | grep -qxF -- "$MNT"; then
            sum=$((sum + $(awk '/^VmRSS:/{print $2}' "$d/status" 2>/dev/null || echo 0)))
        fi
    done
    echo "$sum"
}
cleanup() { mountpoint -q "$MNT" && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }; rmdir "$MNT" 2>/dev/null || true; }
trap cleanup EXIT
walk() { find "$MNT" -printf '%s %m %p\n' | wc -l; }

declare -A COLD WARM RSS
for round in $(seq "$ROUNDS"); do
    for t in $TOOLS; do
        sync; echo 3 > /proc/sys/vm/drop_caches
        do_mount "$t" || die "mount of $t failed"
        t0=$(now); n=$(walk); t1=$(now)
        [ "$n" -ge "$ENTRIES" ] || die "$t: find saw $n entries, the layer has $ENTRIES"
        COLD[$t]+="$(echo "$t1 - $t0" | bc) "
        w=()
        for _ in $(seq "$WARM_REPS"); do
            t0=$(now); walk >/dev/null; t1=$(now)
            w+=("$(echo "$t1 - $t0" | bc)")
        done
        WARM[$t]+="$(median "${w[@]}") "
        [ "$t" = kovl ] || RSS[$t]+="$(rss_kib) "
        do_umount "$t"
        log "round $round $t: cold ${COLD[$t]##* }... done"
    done
    # import peak RSS, into a store of its own
    s=$(mktemp -d "$SCALE_DIR/import.XXXXXX")
    t0=$(now)
    /usr/bin/time -o "$RUN/import.time" -f %M "$LAYERFS" --root "$s" import "$TGZ" scale:import >/dev/null
    t1=$(now)
    IMP_RSS+="$(tail -1 "$RUN/import.time") "
    IMP_S+="$(echo "$t1 - $t0" | bc) "
    rm -rf "$s"
done

# ---- the table
# shellcheck disable=SC2086
{
    echo "bench-scale $RUN_ID: $ENTRIES entries, $(( $(stat -c %s "$TGZ") / 1000000 )) MB gzip; layerfs $("$LAYERFS" --version | awk '{print $NF}') ($LAYERFS); rounds $ROUNDS (median)"
    kc=$(median ${COLD[kovl]:-0}); kw=$(median ${WARM[kovl]:-0})
    printf '%-28s' row; for t in $TOOLS; do printf ' %12s %6s' "$t" ratio; done; echo
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
    printf '%-28s' "cold find (s)"
    for t in $TOOLS; do v=$(median ${COLD[$t]}); printf ' %12.3f %6s' "$v" "$(ratio "$v" "$kc")"; done; echo
    printf '%-28s' "warm find (s)"
    for t in $TOOLS; do v=$(median ${WARM[$t]}); printf ' %12.3f %6s' "$v" "$(ratio "$v" "$kw")"; done; echo
    printf '%-28s' "daemon RSS after walk (MB)"
    for t in $TOOLS; do
        if [ -n "${RSS[$t]:-}" ]; then v=$(median ${RSS[$t]}); printf ' %12.1f %6s' "$(echo "$v / 1024" | bc -l)" "$((v * 1024 / ENTRIES))B/e"
        else printf ' %12s %6s' - -; fi
    done; echo
    v=$(median $IMP_RSS)
    printf '%-28s %12.1f MB (%d B per entry), %.2f s\n' "layerfs import peak RSS" "$(echo "$v / 1024" | bc -l)" "$((v * 1024 / ENTRIES))" "$(median $IMP_S)"
} | tee "$RUN/summary.txt"
