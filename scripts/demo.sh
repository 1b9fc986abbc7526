#!/bin/sh
# The main job on a fresh Debian machine, end to end: installs what is
# needed, builds layerfs, makes a real Debian rootfs with debootstrap,
# imports it as an image, mounts it and looks around, chroots into it,
# changes it in a writable mount and commits the change as a new image.
# Run as root. Uses a store of its own (LAYERFS_ROOT, default /var/tmp/layerfs-demo).
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
L="$PWD/target/release/layerfs"
export LAYERFS_ROOT="${LAYERFS_ROOT:-/var/tmp/layerfs-demo}"
WORK="${DEMO_WORK:-/var/tmp/layerfs-demo-work}"
mkdir -p "$WORK"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

if [ ! -f "$WORK/rootfs.tar.gz" ]; then
    say "debootstrap --variant=minbase bookworm (once)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log"
    rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/archives/*.deb
    tar --numeric-owner --xattrs -C "$WORK/rootfs" -czf "$WORK/rootfs.tar.gz" .
fi

run "$L" import "$WORK/rootfs.tar.gz" debian:12 -m "debootstrap minbase" --change 'CMD ["/bin/bash"]'
run "$L" images
run "$L" inspect debian:12
run "$L" df

mnt="$WORK/mnt"; rw="$WORK/rw"
mkdir -p "$mnt" "$rw"
cleanup() {
    for d in "$rw/proc" "$rw/dev" "$mnt/proc" "$mnt/dev"; do umount "$d" 2>/dev/null || true; done
    "$L" umount "$mnt" 2>/dev/null || true
    "$L" umount "$rw" 2>/dev/null || true
}
trap cleanup EXIT

run "$L" mount debian:12 "$mnt"
run ls -la "$mnt" "$mnt/usr/bin/bash"
run cat "$mnt/etc/os-release"
mount --bind /proc "$mnt/proc"; mount --bind /dev "$mnt/dev"
run chroot "$mnt" /bin/bash -c 'echo "hello from $(cat /etc/debian_version)"; dpkg -l | tail -n +6 | wc -l'
umount "$mnt/proc" "$mnt/dev"
run "$L" umount "$mnt"

"$L" rm -f demo 2>/dev/null || true
run "$L" mount --writable --name demo debian:12 "$rw"
run chroot "$rw" /bin/sh -c 'echo "changed by layerfs" > /etc/motd; rm -r /usr/share/doc; mkdir /srv/app'
run "$L" ps
run "$L" commit "$rw" debian:12-motd -m "motd, no docs"
run "$L" history debian:12-motd
run "$L" umount "$rw"
run "$L" mount debian:12-motd "$mnt"
run cat "$mnt/etc/motd"
run ls "$mnt/usr/share" "$mnt/srv"
run "$L" umount "$mnt"
run "$L" df
