#!/usr/bin/env bash
# Lazy images over a slow link: how long until a workload has run in an
# image that is only in a registry, and how many bytes crossed the link.
#
# The registry runs inside a network namespace made here, behind a veth
# link shaped to 100 Mbit/s each way (tc tbf), and a delaying proxy on
# 127.0.0.1 adds 20 ms to every request's round trip (this kernel has no
# netem). The image is the Debian test image (3 gzip layers, from the test
# cache that the mount tests build), pushed with its layerfs indexes, and an
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
# usage: scripts/bench-lazy.sh          (as root)
# env:   LAYERFS=path/to/layerfs (default: a release build made now)
#        LAYERFS_TEST_CACHE=DIR   where the Debian test layers are
# needs: ip, tc, docker-registry, skopeo, umoci, python3, curl
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (network namespace, mounts, chroot)"
for tool in ip tc docker-registry skopeo umoci python3 curl sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
cache=${LAYERFS_TEST_CACHE:-/var/tmp/layerfs-test-cache}
layers_dir=$(ls -d "$cache"/debian-layers-* 2>/dev/null | head -1 || true)
[ -n "$layers_dir" ] && [ -f "$layers_dir/layer3.tar.gz" ] ||
  die "no Debian test layers in $cache: run the mount tests once (scripts/test.sh) to build them"
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

cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg_ip:5000
  secret: bench
YML
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
workload() { # root: in a mount namespace of its own, with /dev and /proc as a container has
  unshare --mount --propagation private sh -ec '
    mount --rbind /dev "$1/dev"
    mount -t proc proc "$1/proc"
    chroot "$1" /usr/bin/dpkg -l > /dev/null
    chroot "$1" /usr/bin/perl -MPOSIX -e "print strftime(q(%Y), gmtime(0)), qq(\n)" > /dev/null
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
LAYERFS_ROOT=$work/b "$lf" umount "$work/mb"

# (c), (d): lazy mounts of what the store lacks.
lazy() { # name ref dir
  local name=$1 ref=$2 dir=$3 err
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
  record "$name" "$t0" "$t1" "$b0" "$b1"
  LAYERFS_ROOT=$dir.store "$lf" umount "$dir" || true
}
lazy "(c) lazy mount (layerfs index) + chroot" "$reg/bench/debian:1" "$work/mc"
lazy "(d) lazy mount (eStargz) + chroot" "$reg/bench/debian-esgz:1" "$work/md"

echo
echo "link: 100 Mbit/s each way (tbf), +20 ms per request (proxy); image: 3 gzip layers," \
  "$((compressed / 1000000)) MB compressed; layerfs indexes $((index_bytes / 1000)) kB"
printf '%-48s %10s %12s\n' "scenario" "time" "over link"
printf '%s\n' "${results[@]}"
