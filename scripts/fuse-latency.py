#!/usr/bin/env python3
"""fuse-latency.py CONNECTION < `perf script` of fuse:fuse_request_send and
fuse:fuse_request_end - where a FUSE workload's time goes, per request:
the time from the kernel queueing each request to the daemon's reply (by
opcode), the requester's own time between a reply and its next request, and
whether the daemon thread replied on the requester's CPU (a reply from the
other CPU costs a cross-CPU wakeup each way)."""
import collections
import re
import sys

EVENT = re.compile(r'^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+(\d+\.\d+):\s+fuse:fuse_request_(send|end):'
                   r' connection (\d+) req (\d+)(?: opcode \d+ \((\w+)\))?')
# Requests the requester does not wait for.
ASYNC = {'FUSE_RELEASE', 'FUSE_RELEASEDIR', 'FUSE_FORGET', 'FUSE_BATCH_FORGET', 'FUSE_INTERRUPT'}


def pct(v, p):
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    conn = sys.argv[1]
    pending, lat = {}, collections.defaultdict(list)
    last_reply, gaps = {}, []
    same = other = 0
    first = last = None
    for line in sys.stdin:
        m = EVENT.match(line)
        if not m or m.group(6) != conn:
            continue
        pid, cpu, t, kind, req, op = m.group(2), m.group(3), float(m.group(4)), m.group(5), m.group(7), m.group(8)
        first = t if first is None else first
        last = t
        if kind == 'send':
            pending[req] = (t, op, pid, cpu)
            if op not in ASYNC and pid in last_reply:
                gaps.append(t - last_reply.pop(pid))
        elif req in pending:
            t0, op, spid, scpu = pending.pop(req)
            lat[op].append(t - t0)
            if op not in ASYNC:
                last_reply[spid] = t
                if scpu == cpu:
                    same += 1
                else:
                    other += 1
    if first is None:
        sys.exit(f"no requests of connection {conn} traced")
    n = sum(len(v) for v in lat.values())
    print(f"{n} requests answered in {1e3 * (last - first):.1f} ms (connection {conn})")
    print(f"{'request':18} {'n':>6} {'median':>8} {'p90':>8} {'mean':>8} {'total':>9}")
    for op, v in sorted(lat.items(), key=lambda kv: -sum(kv[1])):
        v.sort()
        print(f"{op:18} {len(v):6} {1e6 * v[len(v) // 2]:6.1f}us {1e6 * pct(v, .9):6.1f}us "
              f"{1e6 * sum(v) / len(v):6.1f}us {1e3 * sum(v):7.1f}ms")
    if gaps:
        gaps.sort()
        print(f"requester between a reply and its next request: median {1e6 * gaps[len(gaps) // 2]:.1f}us, "
              f"p90 {1e6 * pct(gaps, .9):.1f}us, total {1e3 * sum(gaps):.1f} ms")
    if same + other:
        print(f"replies from the requester's CPU: {same} ({100 * same / (same + other):.0f} %), "
              f"from another CPU: {other}")


main()
