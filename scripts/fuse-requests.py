#!/usr/bin/env python3
"""fuse-requests.py STRACE NAME ENTRIES CPU_MS - FUSE requests (by opcode) and
host syscalls per entry, from `strace -f -xx -s 8` of a layerfs daemon: every
read(2) of /dev/fuse is one request, its opcode the second u32 of the header."""
import collections
import re
import sys

OPS = {1: 'LOOKUP', 2: 'FORGET', 3: 'GETATTR', 4: 'SETATTR', 5: 'READLINK', 6: 'SYMLINK',
       8: 'MKNOD', 9: 'MKDIR', 10: 'UNLINK', 11: 'RMDIR', 12: 'RENAME', 13: 'LINK', 14: 'OPEN',
       15: 'READ', 16: 'WRITE', 17: 'STATFS', 18: 'RELEASE', 20: 'FSYNC', 21: 'SETXATTR',
       22: 'GETXATTR', 23: 'LISTXATTR', 24: 'REMOVEXATTR', 25: 'FLUSH', 26: 'INIT',
       27: 'OPENDIR', 28: 'READDIR', 29: 'RELEASEDIR', 30: 'FSYNCDIR', 34: 'ACCESS',
       35: 'CREATE', 36: 'INTERRUPT', 38: 'DESTROY', 39: 'IOCTL', 42: 'BATCH_FORGET',
       43: 'FALLOCATE', 44: 'READDIRPLUS', 45: 'RENAME2', 46: 'LSEEK'}


def main():
    path, name, entries, cpu_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    requests, calls = collections.Counter(), collections.Counter()
    for line in open(path, errors='replace'):
        line = re.sub(r'^\d+\s+', '', line)
        if '<unfinished' in line:
            continue  # counted where it resumes
        m = re.match(r'<\.\.\. (\w+) resumed>', line) or re.match(r'(\w+)\(', line)
        if not m:
            continue
        calls[m.group(1)] += 1
        if m.group(1) == 'read':
            d = re.search(r'"((?:\\x[0-9a-f]{2})+)', line)
            if d:
                b = bytes(int(x, 16) for x in d.group(1).split('\\x')[1:])
                if len(b) >= 8:
                    requests[OPS.get(int.from_bytes(b[4:8], 'little'), '?')] += 1
    fuse_io = calls['read'] + calls['writev'] + calls['write']
    host = sum(calls.values()) - fuse_io
    total = sum(requests.values())
    print(f"{name}: {entries} entries; FUSE requests {total} ({total / entries:.2f}/entry); "
          f"host syscalls {host} ({host / entries:.1f}/entry); "
          f"daemon CPU {cpu_ms} ms under strace")
    print("  requests: " + ", ".join(f"{k} {v}" for k, v in requests.most_common()))
    print("  syscalls: " + ", ".join(f"{k} {v}" for k, v in calls.most_common(12)))


main()
