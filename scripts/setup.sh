#!/bin/sh
# Installs what layerfs and its tests need on Debian (bookworm or later):
# FUSE, the tools the tests compare with (kernel overlayfs needs nothing;
# fuse-overlayfs, skopeo, umoci, docker-registry, podman), runc for run, e2fsprogs for
# the power-loss test's ext4, man-db, pass and docker-credential-pass for the
# install and credential-helper tests, debootstrap for the test
# rootfs, and a Rust toolchain if there is none. Run as root. Idempotent.
set -eu

PACKAGES="fuse3 fuse-overlayfs skopeo umoci docker-registry apache2-utils openssl jq zstd attr
  pigz curl ca-certificates debootstrap build-essential pkg-config python3 perl buildah
  runc tini slirp4netns golang-github-containers-common podman e2fsprogs util-linux uidmap
  man-db pass golang-docker-credential-helpers stargz-snapshotter containerd strace"

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages)" >&2
    exit 1
fi

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The registry package's service must not start on install: tests run their own.
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "setup.sh: installing Rust (rustup)"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
fi
PATH="$HOME/.cargo/bin:$PATH"

# The POSIX conformance suite the writable-mount tests run.
if ! command -v pjdfstest >/dev/null 2>&1; then
    echo "setup.sh: installing pjdfstest (cargo install)"
    cargo install --quiet --locked pjdfstest >/dev/null 2>&1 || cargo install --quiet pjdfstest
fi
echo "setup.sh: ready"
