#!/bin/bash
# fuse-latency.sh MOUNTPOINT COMMAND... - runs COMMAND and shows where its
# time in the FUSE mount at MOUNTPOINT went, from the kernel's FUSE
# tracepoints (perf): per opcode, the time from queueing a request to its
# reply; the requester's own time between requests; and how many replies
# came from a daemon thread on another CPU than the requester's (each such
# round trip pays a cross-CPU wakeup both ways, which dominates a small
# request on a quiet machine). Needs root and perf.
#
#   scripts/fuse-latency.sh /mnt/c tar -C /mnt/c/tmp -xf payload.tar
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 MOUNTPOINT COMMAND..." >&2; exit 2; }
M=$1
shift
command -v perf > /dev/null || { echo "missing perf" >&2; exit 1; }
# The tracepoints name a connection by the mount's device minor number.
conn=$(mountpoint -d "$M" | cut -d: -f2) || { echo "$M is not a mount point" >&2; exit 1; }
data=$(mktemp /tmp/fuse-latency-XXXXXX)
trap 'rm -f "$data"' EXIT
perf record -q -e fuse:fuse_request_send -e fuse:fuse_request_end -a -o "$data" -- "$@"
perf script -i "$data" 2> /dev/null | python3 "$HERE/scripts/fuse-latency.py" "$conn"
