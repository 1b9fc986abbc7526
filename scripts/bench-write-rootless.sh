#!/bin/bash
# bench-write-rootless.sh - the rootless column of bench-write.sh: as an
# ordinary user, inside one `layerfs unshare` (a user namespace of the user's
# subordinate ids), a writable layerfs mount against rootless fuse-overlayfs
# over the same base (Debian minbase: the benchmark's layer 1, else the test
# cache's), in the same namespace and rounds: untar ~50 MB (the harness's
# payload, else a tar of /usr/lib/python3*), append to 200 small lower files
# (copy-up), rm -rf /usr/share/locale; each followed by sync. Medians of
# ROUNDS interleaved rounds, ratio layerfs / fuse-overlayfs.
#
#   scripts/bench-write-rootless.sh               # ROUNDS=3, user layerfs-rootless
#   ROUNDS=5 ROOTLESS_USER=alice scripts/bench-write-rootless.sh
#
# Run as root (it makes the user, as the rootless mount tests do, if missing:
# useradd + usermod --add-subuids); needs fuse-overlayfs, uidmap and a
# /dev/fuse the user may open (chmod 0666 where a VM ships it 0600).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$HERE/scripts/bench-lib.sh"
DATA=${LFS_DATA:-/var/tmp/lfs-data}
RUSER=${ROOTLESS_USER:-layerfs-rootless}
ROUNDS=${ROUNDS:-3}

[ "$(id -u)" = 0 ] || die "run as root (it prepares the user and its directory)"
for t in fuse-overlayfs newuidmap runuser useradd; do
    command -v $t > /dev/null || die "missing $t (scripts/setup.sh installs it)"
done
layerfs_bin

BASE=${BASE_TAR:-}
if [ -z "$BASE" ]; then
    for b in "$DATA/layers/layer1.tar" /var/tmp/layerfs-test-cache/debian-layers-*/layer1.tar; do
        [ -r "$b" ] && { BASE=$b; break; }
    done
fi
[ -n "$BASE" ] || die "no Debian base layer: run shared/bench/make-data.sh (or the mount tests) first"

if ! id "$RUSER" > /dev/null 2>&1; then
    useradd --create-home --shell /bin/sh "$RUSER"
fi
grep -q "^$RUSER:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$RUSER"
[ -r /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" = 666 ] || chmod 0666 /dev/fuse

W=$(mktemp -d /var/tmp/lfs-rootless-XXXXXX)
trap 'rm -rf "$W"' EXIT
cp "$LAYERFS" "$W/layerfs"
PAYLOAD=${PAYLOAD:-$DATA/payload.tar}
if [ ! -r "$PAYLOAD" ]; then
    src=$(ls -d /usr/lib/python3.* 2> /dev/null | head -1)
    [ -n "$src" ] || die "no payload: set PAYLOAD to a ~50 MB tar"
    PAYLOAD=$W/payload.tar
    tar -C "$(dirname "$src")" -cf "$PAYLOAD" "$(basename "$src")"
fi
[ "$PAYLOAD" = "$W/payload.tar" ] || cp "$PAYLOAD" "$W/payload.tar"
chown -R "$RUSER:" "$W"
log "rootless: user $RUSER, base $BASE, payload $(stat -c %s "$W/payload.tar") bytes, $ROUNDS rounds"

# Runs as root of the user's namespace: the same ids for both tools.
cat > "$W/inner.sh" << 'EOF'
set -euo pipefail
cd "$W"
L="$W/layerfs --root $W/store"
mkdir -p lower m
tar -C lower -xf "$BASE"
$L import "$BASE" base > /dev/null
find lower/usr/share/doc -type f | sort | head -200 | sed 's|^lower/||' > copyup.list
t() { local a b; a=$(date +%s.%N); eval "$1"; b=$(date +%s.%N); awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b - a }'; }
work() {   # tool name; prints "tool metric seconds" lines
    echo "$1 untar_50MB_s $(t "tar -C m/tmp -xf payload.tar && sync")"
    echo "$1 copyup_200_small_s $(t 'while read -r f; do echo x >> "m/$f"; done < copyup.list && sync')"
    echo "$1 rm_tree_s $(t "rm -rf m/usr/share/locale && sync")"
}
for r in $(seq "$ROUNDS"); do
    order="fovl layerfs"; [ $((r % 2)) = 0 ] && order="layerfs fovl"
    for tool in $order; do
        rm -rf up wk; mkdir up wk
        if [ "$tool" = fovl ]; then
            fuse-overlayfs -o "lowerdir=$W/lower,upperdir=$W/up,workdir=$W/wk" "$W/m"
            work fuse-overlayfs-rootless
            umount m
        else
            $L mount --writable --name "r$r" base m
            work layerfs-rootless
            $L umount m > /dev/null
            $L rm "r$r" > /dev/null
        fi
    done
done > results.tsv
EOF
chown "$RUSER:" "$W/inner.sh"
runuser -u "$RUSER" -- env W="$W" BASE="$BASE" ROUNDS="$ROUNDS" PATH="$PATH" \
    "$W/layerfs" unshare bash "$W/inner.sh" || die "the rootless run failed"

printf '%-22s %14s %14s %8s\n' "rootless, $ROUNDS rounds" fuse-overlayfs layerfs ratio
for metric in untar_50MB_s copyup_200_small_s rm_tree_s; do
    f=$(median $(awk -v m=$metric '$1 == "fuse-overlayfs-rootless" && $2 == m {print $3}' "$W/results.tsv"))
    l=$(median $(awk -v m=$metric '$1 == "layerfs-rootless" && $2 == m {print $3}' "$W/results.tsv"))
    awk -v m="$metric" -v f="$f" -v l="$l" 'BEGIN { printf "%-22s %14.3f %14.3f %8.2f\n", m, f, l, l / f }'
done
