#!/usr/bin/env bash
# Lazy images over a slow link: how long until a workload has run in an
# image that is only in a registry, and how many bytes crossed the link.
#
# The registry runs inside a network namespace made here, behind a veth
# link shaped to 100 Mbit/s each way (tc tbf), and a delaying proxy on
# 127.0.0.1 adds 20 ms to every request's round trip (this kernel has no
# netem). The image is the lazy tests' Debian image (~150 MB in 3 gzip
# layers: minbase; +python3 perl; +gcc make libc6-dev; from the test cache
# that the mount tests build), pushed with its layerfs indexes, and an
# eStargz copy of it. Each scenario starts from an empty store and is timed
# from its first command to the end of the workload (in a chroot: `dpkg -l`
# and a perl one-liner):
#   (a) skopeo copy + umoci unpack + chroot
#   (b) layerfs pull + mount + chroot
#   (c) layerfs mount REF (lazy, the published layerfs index) + chroot
#   (d) layerfs mount REF of the eStargz copy (lazy, its TOC) + chroot
# Bytes are the host side of the link's received bytes (all traffic of the
# scenario: manifests, indexes, data). The lazy mounts run with
# `--prefetch none` so the bytes are what the workload needed.
#
# What the workload read: the workload runs once more (untimed) under
# strace in (b)'s mount; scripts/lazy-read-bytes.py maps each file it opened
# to the compressed bytes of the layer that hold it. The target for (c) and
# (d): bytes over the link at most twice that, plus the indexes.
#
# usage: scripts/bench-lazy.sh          (as root)
# env:   LAYERFS=path/to/layerfs (default: a release build made now)
#        LAYERFS_TEST_CACHE=DIR   where the Debian test layers are
# needs: ip, tc, docker-registry, skopeo, umoci, python3, curl, strace, jq
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (network namespace, mounts, chroot)"
for tool in ip tc docker-registry skopeo umoci python3 curl sha256sum strace jq; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
cache=${LAYERFS_TEST_CACHE:-/var/tmp/layerfs-test-cache}
layers_dir=$(ls -d "$cache"/debian-lazy-* 2>/dev/null | grep -v '\.tmp$' | head -1 || true)
[ -n "$layers_dir" ] && [ -f "$layers_dir/layer3.tar.gz" ] ||
  die "no lazy Debian test layers in $cache: run the mount test lazy::a_lazy_mount_runs_dpkg_and_perl once to build them"
read_bytes=$(dirname "$0")/lazy-read-bytes.py
layerfs_bin
lf=$LAYERFS

work=$(mktemp -d /tmp/layerfs-bench-lazy.XXXXXX)
ns=lfsb$$
veth_h=lfsb$$h
veth_n=lfsb$$n
net=10.231.$((RANDOM % 250)).
host_ip=${net}1
reg_ip=${net}2
reg_pid=
proxy_pid=
mounted=()
cleanup() {
  local rc=$?
  for m in "${mounted[@]}"; do
    "$lf" umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  ip link del "$veth_h" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# ---- the image: an OCI layout of the three cached gzip layers ----
layout=$work/layout
oci_layout "$layout"
for i in 1 2 3; do
  oci_layer "$layers_dir/layer$i.tar" "$layers_dir/layer$i.tar.gz"
done
oci_image bench:1 '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}'
compressed=$OCI_COMPRESSED
log "image: 3 gzip layers, $((compressed / 1000000)) MB compressed"

# ---- the link: a namespace behind a shaped veth pair ----
ip netns add "$ns"
ip link add "$veth_h" type veth peer name "$veth_n"
ip link set "$veth_n" netns "$ns"
ip addr add "$host_ip/30" dev "$veth_h"
ip link set "$veth_h" up
ip -n "$ns" addr add "$reg_ip/30" dev "$veth_n"
ip -n "$ns" link set "$veth_n" up
ip -n "$ns" link set lo up
tc qdisc add dev "$veth_h" root tbf rate 100mbit burst 64kb latency 100ms
ip netns exec "$ns" tc qdisc add dev "$veth_n" root tbf rate 100mbit burst 64kb latency 100ms

registry_config "$work/registry.yml" "$work/registry" "$reg_ip:5000"
ip netns exec "$ns" docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://$reg_ip:5000/v2/" >/dev/null && break
  sleep 0.1
done
curl -fs "http://$reg_ip:5000/v2/" >/dev/null || die "the registry did not start: $(cat "$work/registry.log")"

# The delaying proxy: 20 ms before each request goes on (the first bytes a
# client sends after an answer, or on a new connection), so every request
# costs a 20 ms round trip more; bodies stream unhindered.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/proxy.py" <<'PY'
import asyncio, sys
listen_port, up_host, up_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
DELAY = 0.020

async def handle(cr, cw):
    try:
        ur, uw = await asyncio.open_connection(up_host, up_port)
    except OSError:
        cw.close()
        return
    state = {"fresh": True}

    async def up():
        try:
            while data := await cr.read(65536):
                if state["fresh"]:
                    await asyncio.sleep(DELAY)
                    state["fresh"] = False
                uw.write(data)
                await uw.drain()
        except OSError:
            pass
        finally:
            uw.close()

    async def down():
        try:
            while data := await ur.read(65536):
                state["fresh"] = True
                cw.write(data)
                await cw.drain()
        except OSError:
            pass
        finally:
            cw.close()

    await asyncio.gather(up(), down())

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY
python3 "$work/proxy.py" "$port" "$reg_ip" 5000 &
proxy_pid=$!
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break
  sleep 0.1
done
reg=127.0.0.1:$port
export LAYERFS_CONFIG_DIR=$work/config

# ---- what the registry holds: the image with its indexes, an eStargz copy ----
seed=$work/seed
LAYERFS_ROOT=$seed "$lf" load -i "$layout" >/dev/null
LAYERFS_ROOT=$seed "$lf" push -q bench:1 "$reg/bench/debian:1" >/dev/null
index_bytes=$(du -sb "$seed/layerfs/index" | cut -f1)
LAYERFS_ROOT=$seed "$lf" push -q --estargz --no-index bench:1 "$reg/bench/debian-esgz:1" >/dev/null
log "pushed; layer indexes $index_bytes bytes in all"

link_bytes() { cat "/sys/class/net/$veth_h/statistics/rx_bytes"; }
workload() { # root [trace]: in a mount namespace of its own, with /dev and
  # /proc as a container has; with trace, under strace (trace.dpkg, trace.perl)
  T=${2:-} unshare --mount --propagation private sh -ec '
    mount --rbind /dev "$1/dev"
    mount -t proc proc "$1/proc"
    traced() {
      what=$1; shift
      if [ -n "$T" ]; then
        strace -f -qq -e trace=open,openat,execve,chroot -o "$T.$what" "$@"
      else
        "$@"
      fi
    }
    traced dpkg chroot "$1" /usr/bin/dpkg -l > /dev/null
    traced perl chroot "$1" /usr/bin/perl -MPOSIX -e "print strftime(q(%Y), gmtime(0)), qq(\n)" > /dev/null
  ' sh "$1"
}
results=()
record() { # name t0 t1 bytes0 bytes1 [note]
  local secs mb
  secs=$(echo "$3 - $2" | bc -l)
  mb=$(echo "($5 - $4) / 1000000" | bc -l)
  results+=("$(printf '%-48s %8.2f s %9.1f MB  %s' "$1" "$secs" "$mb" "${6:-}")")
  log "$1: $(printf '%.2f s, %.1f MB' "$secs" "$mb") ${6:-}"
}

# (a) skopeo copy + umoci unpack + chroot
b0=$(link_bytes); t0=$(now)
skopeo copy -q --src-tls-verify=false "docker://$reg/bench/debian:1" "oci:$work/a:1"
umoci unpack --image "$work/a:1" "$work/a-bundle" > /dev/null
workload "$work/a-bundle/rootfs"
t1=$(now); b1=$(link_bytes)
record "(a) skopeo copy + umoci unpack + chroot" "$t0" "$t1" "$b0" "$b1"
rm -rf "$work/a" "$work/a-bundle"

# (b) layerfs pull + mount + chroot
mkdir -p "$work/mb"
b0=$(link_bytes); t0=$(now)
LAYERFS_ROOT=$work/b "$lf" pull -q "$reg/bench/debian:1" > /dev/null
LAYERFS_ROOT=$work/b "$lf" mount "$reg/bench/debian:1" "$work/mb"
mounted+=("$work/mb")
workload "$work/mb"
t1=$(now); b1=$(link_bytes)
record "(b) layerfs pull + mount + chroot" "$t0" "$t1" "$b0" "$b1"
secs_b=$(echo "$t1 - $t0" | bc -l)
# What the workload reads (untimed, all local now).
workload "$work/mb" "$work/trace"
read -r read_c read_files _ < <(python3 "$read_bytes" "$work/trace.dpkg" "$work/trace.perl" -- \
  "$layers_dir/layer1.tar.gz" "$layers_dir/layer2.tar.gz" "$layers_dir/layer3.tar.gz")
log "the workload opened $read_files files held by $read_c compressed bytes of the layers"
LAYERFS_ROOT=$work/b "$lf" umount "$work/mb"

# (c), (d): lazy mounts of what the store lacks.
lazy() { # name ref dir: sets lazy_bytes, lazy_secs
  local name=$1 ref=$2 dir=$3 err
  lazy_bytes=0 lazy_secs=0
  mkdir -p "$dir"
  b0=$(link_bytes); t0=$(now)
  if ! err=$(LAYERFS_ROOT=$dir.store "$lf" mount --prefetch none "$ref" "$dir" 2>&1); then
    results+=("$(printf '%-48s  n/a: %s' "$name" "$(echo "$err" | head -1)")")
    log "$name: lazy mount failed: $err"
    return
  fi
  mounted+=("$dir")
  workload "$dir"
  t1=$(now); b1=$(link_bytes)
  lazy_bytes=$((b1 - b0))
  lazy_secs=$(echo "$t1 - $t0" | bc -l)
  record "$name" "$t0" "$t1" "$b0" "$b1"
  LAYERFS_ROOT=$dir.store "$lf" umount "$dir" || true
}
# The target: bytes <= 2 x what the workload read + the indexes.
against() { # bytes read index: "x.xx of 2R+I, y.yy x (b)'s time"
  printf '%.2f of 2R+I (R %.1f MB, I %.1f MB), %.2f x (b)' \
    "$(echo "$lazy_bytes / (2 * $1 + $2)" | bc -l)" "$(echo "$1 / 1000000" | bc -l)" \
    "$(echo "$2 / 1000000" | bc -l)" "$(echo "$lazy_secs / $secs_b" | bc -l)"
}
lazy "(c) lazy mount (layerfs index) + chroot" "$reg/bench/debian:1" "$work/mc"
fetched_index=$(du -sb "$work/mc.store/layerfs/index" 2>/dev/null | cut -f1 || echo 0)
[ "$lazy_bytes" = 0 ] || results[-1]+=$(against "$read_c" "$fetched_index")

# The eStargz layers hold the files at other offsets: what the workload
# read of them, from the blobs themselves (fetched after the timed runs).
skopeo copy -q --src-tls-verify=false "docker://$reg/bench/debian-esgz:1" "dir:$work/esgz"
mapfile -t esgz_layers < <(jq -r '.layers[].digest | sub("sha256:"; "")' "$work/esgz/manifest.json" |
  sed "s|^|$work/esgz/|")
read -r read_d _ < <(python3 "$read_bytes" "$work/trace.dpkg" "$work/trace.perl" -- "${esgz_layers[@]}")
rm -rf "$work/esgz"
lazy "(d) lazy mount (eStargz) + chroot" "$reg/bench/debian-esgz:1" "$work/md"
# The eStargz index is its TOC, inside the blob: counted in the bytes, so I = 0.
[ "$lazy_bytes" = 0 ] || results[-1]+=$(against "$read_d" 0)

echo
echo "link: 100 Mbit/s each way (tbf), +20 ms per request (proxy); image: 3 gzip layers," \
  "$((compressed / 1000000)) MB compressed; layerfs indexes $((index_bytes / 1000)) kB"
echo "workload (dpkg -l, perl -MPOSIX) opened $read_files files: R = $read_c compressed bytes of" \
  "the gzip layers, $read_d of the eStargz layers"
printf '%-48s %10s %12s\n' "scenario" "time" "over link"
printf '%s\n' "${results[@]}"
