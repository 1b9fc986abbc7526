# bench-lib.sh - what the bench-*.sh scripts share: timing, the median,
# messages and the layerfs binary to time. Sourced, not executed.

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=$(basename "$0" .sh)

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# The median of the numbers given as arguments (for an even count, the mean
# of the middle two).
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

# Sets LAYERFS to the binary to time: as given, else a release build made
# now (always built, so the numbers are never those of a stale binary).
layerfs_bin() {
    if [ -z "${LAYERFS:-}" ]; then
        log "cargo build --release"
        (cd "$BENCH_REPO" && cargo build --release --quiet) || die "cargo build --release failed"
        LAYERFS=$BENCH_REPO/target/release/layerfs
    fi
    [ -x "$LAYERFS" ] || die "no layerfs binary at $LAYERFS"
}
