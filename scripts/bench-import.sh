#!/bin/bash
# Import throughput of large gzip layers, as a ratio of `gzip -dc FILE |
# sha256sum` on the same file in the same run (>1 = faster than that
# pipeline), and the layer index size as a share of the compressed layer.
#
#   scripts/bench-import.sh [FILE.tar.gz ...]
#
# Without arguments it uses the shared bench layers if present
# (/var/tmp/lfs-data/layers/layer{1,3}.tar.gz), else builds a tar.gz of /usr
# once under /var/tmp/layerfs-bench. ROUNDS (default 3) runs each, median.
# LAYERFS names the binary to time (default: a release build made now).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ROUNDS=${ROUNDS:-3}
WORK=${BENCH_WORK:-/var/tmp/layerfs-bench}
mkdir -p "$WORK"
layerfs_bin
L=$LAYERFS

files=("$@")
if [ ${#files[@]} = 0 ]; then
    for f in /var/tmp/lfs-data/layers/layer1.tar.gz /var/tmp/lfs-data/layers/layer3.tar.gz; do
        [ -f "$f" ] && files+=("$f")
    done
fi
if [ ${#files[@]} = 0 ]; then
    if [ ! -f "$WORK/usr.tar.gz" ]; then
        echo "building $WORK/usr.tar.gz from /usr (once)" >&2
        tar -C / -cf - usr 2>/dev/null | gzip -6 > "$WORK/usr.tar.gz"
    fi
    files=("$WORK/usr.tar.gz")
fi

printf '%-28s %9s %9s %11s %11s %7s %9s\n' layer "MB(gz)" "MB(tar)" "gzip|sha s" "import s" ratio "index %"
for f in "${files[@]}"; do
    gz_mb=$(( $(stat -c %s "$f") / 1000000 ))
    ref=(); imp=()
    for _ in $(seq "$ROUNDS"); do
        cat "$f" > /dev/null   # same page-cache state for both
        t0=$(now); gzip -dc "$f" | sha256sum > /dev/null; t1=$(now)
        ref+=("$(echo "$t1 - $t0" | bc)")
        store=$(mktemp -d "$WORK/store.XXXXXX")
        t0=$(now); "$L" --root "$store" import "$f" bench:import > /dev/null; t1=$(now)
        imp+=("$(echo "$t1 - $t0" | bc)")
        idx=$(du -b "$store"/layerfs/index/*.idx | awk '{s+=$1} END {print s}')
        tar_mb=$(( $("$L" --root "$store" inspect bench:import | jq '.[0].Layers[0].UncompressedSize') / 1000000 ))
        rm -rf "$store"
    done
    r=$(median "${ref[@]}"); i=$(median "${imp[@]}")
    printf '%-28s %9d %9d %11.3f %11.3f %7.2f %8.2f%%\n' "$(basename "$f")" "$gz_mb" "$tar_mb" "$r" "$i" \
        "$(echo "$r / $i" | bc -l)" "$(echo "100 * $idx / $(stat -c %s "$f")" | bc -l)"
done
echo "ratio = (gzip -dc | sha256sum time) / (layerfs import time): import throughput relative to the pipeline"
