#!/bin/bash
# debian-lazy-layers.sh ROOTFS OUT - the ~150 MB (compressed) Debian image of the
# lazy-image tests and bench-lazy.sh, built from the debootstrap rootfs the way an
# image is built: each layer is what `apt-get install` left in the upper dir of a
# kernel overlayfs over the layers below (support/debian.rs runs it once, caches OUT).
#
#   layer1  the minbase rootfs, cleaned like a Docker base image
#   layer2  apt-get install python3 perl            (libpython3.11-stdlib, perl-modules ...)
#   layer3  apt-get install gcc make libc6-dev      (cpp, binutils, linux-libc-dev ...)
#
# Writes OUT/layer{1,2,3}.tar (sorted members, no ./ prefix, numeric owners, PAX
# xattrs, OCI whiteouts) and OUT/layer{1,2,3}.tar.gz. Needs root, network to the
# Debian mirror the rootfs names (apt in the chroot), overlayfs.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 ROOTFS OUT" >&2; exit 2; }
ROOTFS=$1
OUT=$2
GZ="gzip -n -6"; command -v pigz >/dev/null && GZ="pigz -n -6"
TAR_OPTS=(--numeric-owner --xattrs --xattrs-include='*' --xattrs-exclude='trusted.overlay.*'
          --format=posix
          --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
GROUPS_OF_PACKAGES=("python3 perl" "gcc make libc6-dev")

mkdir -p "$OUT/diff/l1" "$OUT/mnt"
B=$OUT/diff/l1
cp -a "$ROOTFS/." "$B/"
rm -rf "$B"/var/cache/apt/archives/*.deb "$B"/var/cache/apt/*.bin "$B"/var/lib/apt/lists/* \
       "$B"/var/log/bootstrap.log "$B"/debootstrap
find "$B/dev" -mindepth 1 -delete

MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap cleanup EXIT

# apt_layer N LOWERS PACKAGES...: layer N's upper dir, apt-get install over LOWERS.
apt_layer() {
    local n=$1 lowers=$2; shift 2
    local up=$OUT/diff/l$n work=$OUT/work$n m=$OUT/mnt
    mkdir -p "$up" "$work"
    mount -t overlay overlay \
        -o "lowerdir=$lowers,upperdir=$up,workdir=$work,index=off,metacopy=off,redirect_dir=off,xino=off" "$m"
    MOUNTED+=("$m")
    for d in proc dev sys; do
        mount --bind "/$d" "$m/$d"; MOUNTED+=("$m/$d")
    done
    mount --bind /etc/resolv.conf "$m/etc/resolv.conf"; MOUNTED+=("$m/etc/resolv.conf")
    chroot "$m" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get -q -o APT::Sandbox::User=root update >/dev/null &&
               apt-get -q -y -o APT::Sandbox::User=root install --no-install-recommends $* >/dev/null &&
               apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
    cleanup
    rm -rf "$work"
}
apt_layer 2 "$B" "${GROUPS_OF_PACKAGES[0]}"
apt_layer 3 "$OUT/diff/l2:$B" "${GROUPS_OF_PACKAGES[1]}"
rmdir "$OUT/mnt"

# Upper dirs in OCI form: overlayfs whiteouts (char 0/0) become .wh.NAME,
# opaque dirs get .wh..wh..opq where a layer below has the dir (overlayfs
# marks every dir it creates in a merged dir opaque; below, that says nothing).
for i in 2 3; do
    D=$OUT/diff/l$i
    find "$D" -type c -print0 | while IFS= read -r -d '' w; do
        [ "$(stat -c %t:%T "$w")" = 0:0 ] || continue
        rm -f "$w"
        : > "$(dirname "$w")/.wh.$(basename "$w")"
    done
    find "$D" -type d -print0 | while IFS= read -r -d '' d; do
        rel=${d#"$D"}
        [ -d "$B$rel" ] || { [ "$i" = 3 ] && [ -d "$OUT/diff/l2$rel" ]; } || continue
        if [ "$(getfattr --only-values -n trusted.overlay.opaque "$d" 2>/dev/null)" = y ]; then
            : > "$d/.wh..wh..opq"
        fi
    done
done

for i in 1 2 3; do
    (cd "$OUT/diff/l$i" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        tar "${TAR_OPTS[@]}" --no-recursion -cf "$OUT/layer$i.tar" -T -)
    $GZ -c "$OUT/layer$i.tar" > "$OUT/layer$i.tar.gz"
done
rm -rf "$OUT/diff"
