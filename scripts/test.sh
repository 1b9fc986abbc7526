#!/bin/sh
# Runs the whole test suite: unit tests (layers, store, union, archives,
# registry against a real registry server) and the mount tests (real FUSE
# mounts; they need root and /dev/fuse, and skip loudly without them).
# Set LAYERFS_CI=1 to turn every skip into a failure, as CI does.
set -eu
cd "$(dirname "$0")/.."
PATH="$HOME/.cargo/bin:$PATH"
export RUST_BACKTRACE=1
cargo build --quiet
# Mount tests are many processes and mounts; two at a time is plenty on a small machine.
# --no-fail-fast: a failing unit test must not hide what the mount tests say.
cargo test --quiet --all-targets --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
