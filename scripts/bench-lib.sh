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

# An OCI layout of gzip layers, built in three steps: `oci_layout DIR`,
# `oci_layer TAR TGZ` for each layer (bottom first; TGZ is TAR gzipped) and
# `oci_image NAME [CONFIG]` (CONFIG: the config's "config" object as JSON),
# which writes the config, the manifest and index.json. Sets OCI_MANIFEST
# (the manifest's digest) and OCI_COMPRESSED (the layers' bytes).
oci_layout() {
    OCI_DIR=$1 OCI_LAYERS="" OCI_DIFFS="" OCI_COMPRESSED=0
    mkdir -p "$OCI_DIR/blobs/sha256"
    printf '{"imageLayoutVersion":"1.0.0"}' > "$OCI_DIR/oci-layout"
}
oci_blob() { # file -> prints "sha256:<hex> <size>", copied into the layout
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    cp --reflink=auto "$1" "$OCI_DIR/blobs/sha256/$hex"
    echo "sha256:$hex $size"
}
oci_layer() {
    local diff digest size
    diff=$(sha256sum "$1" | cut -d' ' -f1)
    read -r digest size < <(oci_blob "$2")
    OCI_COMPRESSED=$((OCI_COMPRESSED + size))
    OCI_LAYERS+="${OCI_LAYERS:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}"
    OCI_DIFFS+="${OCI_DIFFS:+,}\"sha256:$diff\""
}
oci_image() {
    local tmp cdigest csize msize
    tmp=$(mktemp -d)
    printf '{"architecture":"amd64","os":"linux",%s"rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "${2:+\"config\":$2,}" "$OCI_DIFFS" > "$tmp/config.json"
    read -r cdigest csize < <(oci_blob "$tmp/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
        "$cdigest" "$csize" "$OCI_LAYERS" > "$tmp/manifest.json"
    read -r OCI_MANIFEST msize < <(oci_blob "$tmp/manifest.json")
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$OCI_MANIFEST" "$msize" "$1" > "$OCI_DIR/index.json"
    rm -rf "$tmp"
}

# registry_config FILE DIR ADDR: a docker-registry config storing in DIR,
# serving plain HTTP on ADDR, quiet (no access log).
registry_config() {
    cat > "$1" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
http:
  addr: $3
  secret: bench
YML
}
