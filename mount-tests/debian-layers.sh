#!/bin/bash
# debian-layers.sh ROOTFS OUT - the three OCI layers of the Debian mount tests,
# built from a debootstrap rootfs (support/debian.rs runs it once and caches OUT).
#
# Writes OUT/layer{1,2,3}.tar (sorted members, no ./ prefix, numeric owners,
# PAX xattrs, OCI whiteouts .wh.NAME and opaque markers DIR/.wh..wh..opq),
# OUT/layer{1,2,3}.tar.gz, and OUT/ovl/l{1,2,3}: the same tars extracted with
# whiteouts in overlayfs form (char device 0/0, trusted.overlay.opaque=y), the
# lowerdirs of the kernel overlayfs reference mount.
#
#   layer1  the rootfs, cleaned like a Docker base image (no apt lists, no .debs,
#           no logs of the bootstrap, empty /dev)
#   layer2  ~ content edits (etc/hostname, etc/passwd, usr/lib/os-release),
#             chmod-only (etc/issue 0600), chown-only (etc/motd 0:4)
#           + home/app owned 1000:1000, opt/layer2/* (xattrs user.* and
#             security.capability, a fifo, a symlink, a file deleted again in layer3)
#           - whiteouts: files usr/bin/{pinky,users}, symlink usr/sbin/rmt,
#             whole dir usr/share/zoneinfo/America
#           - opaque dirs: etc/apt/apt.conf.d (one new file), usr/share/doc/bash
#   layer3  + data/big.bin 64 MiB (3/4 random, 1/4 text)
#           + usr/bin/pinky re-created over its layer2 whiteout
#           + usr/share/zoneinfo/America re-created (one file) over its whiteout
#           ~ usr/share/zoneinfo/Arctic: directory -> file
#           ~ etc/issue.net: file -> directory with a file inside
#           + usr/local/bin/gzip-hardlink: hard link to the layer1 file usr/bin/gzip
#             (copied up with it, as overlayfs and Docker commit do)
#           - whiteout of the layer2 file opt/layer2/short-lived
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 ROOTFS OUT" >&2; exit 2; }
ROOTFS=$1
OUT=$2
GZ="gzip -n -6"; command -v pigz >/dev/null && GZ="pigz -n -6"
TAR_OPTS=(--numeric-owner --xattrs --xattrs-include='*' --format=posix
          --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)

mkdir -p "$OUT/diff/l1" "$OUT/diff/l2" "$OUT/diff/l3"
B=$OUT/diff/l1
L2=$OUT/diff/l2
L3=$OUT/diff/l3

# ---- layer1: the base rootfs
cp -a "$ROOTFS/." "$B/"
rm -rf "$B"/var/cache/apt/archives/*.deb "$B"/var/cache/apt/*.bin "$B"/var/lib/apt/lists/* \
       "$B"/var/log/bootstrap.log "$B"/debootstrap
find "$B/dev" -mindepth 1 -delete

# Parent directories of REL in diff dir D, with the base's metadata.
mkparents() {
    local D=$1 rel=$2 p="" part
    local IFS=/
    for part in $(dirname "$rel"); do
        [ "$part" = . ] && continue
        p=${p:+$p/}$part
        if [ ! -d "$D/$p" ]; then
            mkdir "$D/$p"
            if [ -d "$B/$p" ]; then
                chmod --reference="$B/$p" "$D/$p"
                chown --reference="$B/$p" "$D/$p"
            fi
        fi
    done
}
copy_from_base() { mkparents "$1" "$2"; cp -a "$B/$2" "$1/$2"; }
whiteout() {
    [ -e "$B/$2" ] || [ -L "$B/$2" ] || [ -e "$L2/$2" ] || { echo "nothing below to delete: $2" >&2; exit 1; }
    mkparents "$1" "$2"
    : > "$1/$(dirname "$2")/.wh.$(basename "$2")"
}
opaque() {
    mkparents "$1" "$2/x"
    [ -d "$1/$2" ] || { mkdir "$1/$2"; chmod --reference="$B/$2" "$1/$2"; }
    : > "$1/$2/.wh..wh..opq"
}

# ---- layer2
for f in etc/hostname etc/passwd etc/group usr/lib/os-release etc/issue etc/motd; do
    copy_from_base "$L2" "$f"
done
echo layer2-host > "$L2/etc/hostname"
echo 'app:x:1000:1000:App user:/home/app:/bin/bash' >> "$L2/etc/passwd"
echo 'app:x:1000:' >> "$L2/etc/group"
echo 'VARIANT="layerfs mount tests, layer2"' >> "$L2/usr/lib/os-release"
chmod 600 "$L2/etc/issue"
chown 0:4 "$L2/etc/motd"
mkdir -p "$L2/home/app/.config"
cp "$B/etc/skel/.profile" "$B/etc/skel/.bashrc" "$L2/home/app/"
echo 'set nocompatible' > "$L2/home/app/.config/vimrc"
chown -R 1000:1000 "$L2/home/app"
chmod 755 "$L2/home"
chmod 700 "$L2/home/app"
mkdir -p "$L2/opt/layer2"
chmod 755 "$L2/opt" "$L2/opt/layer2"
echo 'tagged with xattrs' > "$L2/opt/layer2/tagged"
setfattr -n user.layerfs.note -v 'layer two' "$L2/opt/layer2/tagged"
printf '#!/bin/sh\necho capable\n' > "$L2/opt/layer2/cap-tool"
chmod 755 "$L2/opt/layer2/cap-tool"
# cap_net_raw+ep as a VFS v2 capability: a value that starts with a NUL-free
# header and holds NULs
setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 "$L2/opt/layer2/cap-tool"
mkfifo -m 0620 "$L2/opt/layer2/fifo"
ln -s ../../usr/bin/gzip "$L2/opt/layer2/gzip-symlink"
echo 'deleted again in layer3' > "$L2/opt/layer2/short-lived"
for f in usr/bin/pinky usr/bin/users usr/sbin/rmt usr/share/zoneinfo/America; do
    whiteout "$L2" "$f"
done
[ -L "$B/usr/sbin/rmt" ] || { echo "usr/sbin/rmt is no longer a symlink" >&2; exit 1; }
opaque "$L2" etc/apt/apt.conf.d
echo 'APT::Install-Recommends "false";' > "$L2/etc/apt/apt.conf.d/99layer2"
opaque "$L2" usr/share/doc/bash
echo 'bash docs replaced in layer2' > "$L2/usr/share/doc/bash/README.layer2"

# ---- layer3
mkdir -p "$L3/data"
chmod 755 "$L3/data"
{
    head -c $((48 << 20)) /dev/urandom
    (set +o pipefail; yes 'layerfs big file, the compressible quarter' | head -c $((16 << 20)))
} > "$L3/data/big.bin"
mkparents "$L3" usr/bin/x
printf '#!/bin/sh\necho "pinky was deleted in layer2 and re-created in layer3"\n' > "$L3/usr/bin/pinky"
chmod 755 "$L3/usr/bin/pinky"
mkparents "$L3" usr/share/zoneinfo/America/x
echo 'America re-created after its whiteout' > "$L3/usr/share/zoneinfo/America/README"
[ -d "$B/usr/share/zoneinfo/Arctic" ] || { echo "usr/share/zoneinfo/Arctic is no directory" >&2; exit 1; }
mkparents "$L3" usr/share/zoneinfo/Arctic
echo 'Arctic used to be a directory' > "$L3/usr/share/zoneinfo/Arctic"
[ -f "$B/etc/issue.net" ] || { echo "etc/issue.net is no file" >&2; exit 1; }
mkparents "$L3" etc/issue.net/x
chmod 755 "$L3/etc/issue.net"
echo 'issue.net used to be a file' > "$L3/etc/issue.net/README"
[ "$(stat -c %h "$B/usr/bin/gzip")" = 1 ] || { echo "usr/bin/gzip is already hard-linked" >&2; exit 1; }
copy_from_base "$L3" usr/bin/gzip
mkparents "$L3" usr/local/bin/x
ln "$L3/usr/bin/gzip" "$L3/usr/local/bin/gzip-hardlink"
mkparents "$L3" opt/layer2/x
chmod 755 "$L3/opt" "$L3/opt/layer2"
: > "$L3/opt/layer2/.wh.short-lived"

# ---- tars (parents before children, sorted), gzip, overlayfs lowerdirs
for i in 1 2 3; do
    (cd "$OUT/diff/l$i" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        tar "${TAR_OPTS[@]}" --no-recursion -cf "$OUT/layer$i.tar" -T -)
    $GZ -c "$OUT/layer$i.tar" > "$OUT/layer$i.tar.gz"
    L=$OUT/ovl/l$i
    mkdir -p "$L"
    tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$OUT/layer$i.tar" -C "$L"
    find "$L" -name '.wh..wh..opq' -print0 | while IFS= read -r -d '' m; do
        setfattr -n trusted.overlay.opaque -v y "$(dirname "$m")"
        rm -f "$m"
    done
    find "$L" -name '.wh.*' -print0 | while IFS= read -r -d '' w; do
        n=$(basename "$w")
        rm -f "$w"
        mknod "$(dirname "$w")/${n#.wh.}" c 0 0
    done
done
rm -rf "$OUT/diff"
