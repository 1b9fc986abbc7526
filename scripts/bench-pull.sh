#!/usr/bin/env bash
# Pull throughput of layerfs against skopeo, from a local registry, in one run.
#
# Builds a ~300 MB image (gzip layers made from this machine's /usr, as an OCI
# layout written by this script), starts its own docker-registry on 127.0.0.1,
# pushes the image with `layerfs push` (and a copy with skopeo, timed too),
# then times, in interleaved rounds:
#   layerfs pull  (fresh store each round; stores, verifies AND indexes layers)
#   skopeo copy --src-tls-verify=false docker://... oci:DIR:tag  (fresh dir)
# and prints the medians, MB/s and the ratio.
#
# usage: scripts/bench-pull.sh [ROUNDS]        (default 3)
# env:   LAYERFS=path/to/layerfs (default: a release build made now)
#        BENCH_DIRS="usr/bin usr/share ..."    the /usr parts that become layers
#        BENCH_OUT=DIR  where the pulled store and skopeo's layout go (default: the
#                       work dir; /dev/shm shows the cost of fsync, a no-op there)
# needs: docker-registry, skopeo, curl, gzip (pigz is used when present)
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

rounds=${1:-3}
dirs=${BENCH_DIRS:-"usr/bin usr/share/doc usr/share/locale usr/include usr/libexec usr/sbin"}
for tool in docker-registry skopeo curl gzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
layerfs_bin
layerfs=$LAYERFS
zip=gzip; command -v pigz >/dev/null && zip=pigz

work=$(mktemp -d /tmp/layerfs-bench.XXXXXX)
reg_pid=
cleanup() {
  local rc=$?
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  [ -n "${out:-}" ] && rm -rf "$out/store" "$out/oci"
  exit "$rc"
}
trap cleanup EXIT

# ---- the image: an OCI layout, one gzip layer per directory ----
layout=$work/layout
oci_layout "$layout"
for d in $dirs; do
  [ -d "/$d" ] || continue
  tar -C / --sort=name -cf "$work/layer.tar" "$d" 2>/dev/null || true
  $zip -1 -c "$work/layer.tar" > "$work/layer.tgz"
  oci_layer "$work/layer.tar" "$work/layer.tgz"
  rm "$work/layer.tar" "$work/layer.tgz"
done
oci_image bench:1
mdigest=$OCI_MANIFEST
total=$(du -sb "$layout/blobs" | cut -f1)
nlayers=$(echo "$dirs" | wc -w)
echo "image: $nlayers gzip layers from /usr, $((total / 1000000)) MB of blobs, manifest $mdigest"

# ---- a registry of our own ----
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry_config "$work/registry.yml" "$work/registry" "127.0.0.1:$port"
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break
  sleep 0.1
done
reg=127.0.0.1:$port

secs() { echo "$2 - $1" | bc -l; }

export LAYERFS_CONFIG_DIR=$work/config
t0=$(now)
LAYERFS_ROOT=$layout "$layerfs" push -q bench:1 "$reg/bench/layerfs:1" >/dev/null
t1=$(now)
skopeo copy -q --dest-tls-verify=false --preserve-digests "oci:$layout:bench:1" "docker://$reg/bench/skopeo:1"
t2=$(now)
printf 'push   layerfs %6.2f s   skopeo %6.2f s\n' "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"

# CPU seconds (user+sys) of a command, written to $1, when GNU time is there.
cpu() {
  local out=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%U %S' -o "$out" "$@"
  else
    echo "0 0" > "$out"; "$@"
  fi
}
out=${BENCH_OUT:-$work}
mkdir -p "$out"
lf_times=(); sk_times=(); lf_cpu=(); sk_cpu=()
for i in $(seq 1 "$rounds"); do
  rm -rf "$out/store" "$out/oci"
  sync
  t0=$(now)
  cpu "$work/lf.cpu" env LAYERFS_ROOT="$out/store" "$layerfs" pull -q "$reg/bench/layerfs:1" >/dev/null
  t1=$(now)
  cpu "$work/sk.cpu" skopeo copy -q --src-tls-verify=false "docker://$reg/bench/layerfs:1" "oci:$out/oci:bench"
  t2=$(now)
  lf=$(secs "$t0" "$t1"); sk=$(secs "$t1" "$t2")
  lc=$(awk '{print $1 + $2}' "$work/lf.cpu"); sc=$(awk '{print $1 + $2}' "$work/sk.cpu")
  lf_times+=("$lf"); sk_times+=("$sk"); lf_cpu+=("$lc"); sk_cpu+=("$sc")
  printf 'round %d  layerfs pull %6.2f s (cpu %5.2f s)   skopeo copy %6.2f s (cpu %5.2f s)\n' \
    "$i" "$lf" "$lc" "$sk" "$sc"
  got=$(LAYERFS_ROOT=$out/store "$layerfs" inspect "$reg/bench/layerfs:1" | grep -c "$mdigest" || true)
  [ "$got" -ge 1 ] || die "the pulled image has another manifest digest"
done

lf=$(median "${lf_times[@]}"); sk=$(median "${sk_times[@]}")
lc=$(median "${lf_cpu[@]}"); sc=$(median "${sk_cpu[@]}")
mb=$(echo "$total / 1000000" | bc -l)
printf 'median  layerfs pull %.2f s (%.0f MB/s)   skopeo copy %.2f s (%.0f MB/s)   layerfs/skopeo time ratio %.2f\n' \
  "$lf" "$(echo "$mb / $lf" | bc -l)" "$sk" "$(echo "$mb / $sk" | bc -l)" "$(echo "$lf / $sk" | bc -l)"
printf 'median cpu  layerfs %.2f s   skopeo %.2f s  (layerfs also inflates every layer to verify diff_ids and build its index)\n' "$lc" "$sc"
