#!/usr/bin/env python3
"""lazy-read-bytes.py TRACE... -- LAYER.tar.gz...

The compressed bytes a workload read: which bytes of an image's gzip layers
(bottom first; one gzip member or many, as eStargz) hold the files that the
workload opened or executed, per `strace -f -e trace=open,openat,execve,chroot`
of a `chroot ROOT CMD` (only what follows the chroot call counts: before it,
paths are the host's).

Each layer is inflated once, noting the input offset every STEP bytes of
input; a file's data, [a, b) in its layer's tar stream, is held by the input
from the last mark at or before a to the first mark at or after b (so each
file is over-counted by less than 2*STEP). The intervals are merged per
layer. Symlinks resolve in the merged tree of the layers (OCI whiteouts and
opaque dirs applied); hard links read their target's data.

Prints one line: bytes files layers, e.g. `4519424 61 3`; with -v, each file.
"""
import bisect
import io
import posixpath
import re
import sys
import tarfile
import zlib

STEP = 4096


def inflate(path):
    """The inflated stream of a gzip file (all members) and its (in, out) marks."""
    with open(path, "rb") as f:
        data = f.read()
    out = bytearray()
    marks_in, marks_out = [0], [0]
    pos = 0
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while pos < len(data):
        chunk = data[pos:pos + STEP]
        out += d.decompress(chunk)
        if d.eof:
            pos += len(chunk) - len(d.unused_data)
            marks_in.append(pos)
            marks_out.append(len(out))
            if data[pos:pos + 2] != b"\x1f\x8b":
                break  # the end, or padding after the last member
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            continue
        pos += len(chunk)
        marks_in.append(pos)
        marks_out.append(len(out))
    return bytes(out), marks_in, marks_out


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


class Layer:
    def __init__(self, path):
        stream, self.marks_in, self.marks_out = inflate(path)
        self.members = {}
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as t:
            for m in t:
                self.members[norm(m.name)] = m
        self.order = list(self.members)

    def compressed(self, a, b):
        """The compressed interval that holds uncompressed [a, b)."""
        i = bisect.bisect_right(self.marks_out, a) - 1
        j = bisect.bisect_left(self.marks_out, b)
        j = min(j, len(self.marks_in) - 1)
        return self.marks_in[max(i, 0)], self.marks_in[j]


def merged(layers):
    """path -> (layer number, TarInfo) of the union, bottom first."""
    tree = {}
    for n, layer in enumerate(layers):
        for name in layer.order:
            m = layer.members[name]
            parent, base = posixpath.split(name)
            if base == ".wh..wh..opq":
                pre = parent + "/" if parent else ""
                for k in [k for k, (ln, _) in tree.items() if ln < n and k.startswith(pre)]:
                    del tree[k]
            elif base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                for k in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                    del tree[k]
            else:
                tree[name] = (n, m)
    return tree


def resolve(tree, path, hops=0):
    """The tree entry a path names, symlinks followed; None if absent."""
    parts = [p for p in path.split("/") if p and p != "."]
    cur = ""
    for i, part in enumerate(parts):
        cur = posixpath.dirname(cur) if part == ".." else posixpath.join(cur, part)
        e = tree.get(cur)
        if e is None:
            return None
        if e[1].issym():
            if hops > 40:
                return None
            target = e[1].linkname
            base = "" if target.startswith("/") else posixpath.dirname(cur)
            rest = "/".join(parts[i + 1:])
            return resolve(tree, posixpath.join(base, target, rest), hops + 1)
    return tree.get(cur) if cur else None


CALL = re.compile(r'(open|openat|execve|chroot)\((?:[^,"]+, )?"([^"]*)".*\)\s+=\s+(-?\d+)')


def opened(traces):
    paths = []
    for t in traces:
        after_chroot = False
        with open(t) as f:
            for line in f:
                m = CALL.search(line)
                if not m or int(m.group(3)) < 0:
                    continue
                call, path = m.group(1), m.group(2)
                if call == "chroot":
                    after_chroot = True
                elif after_chroot and path.startswith("/"):
                    paths.append(path)
    return paths


def main(argv):
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    if "--" not in argv:
        sys.exit(__doc__)
    cut = argv.index("--")
    traces, gz = argv[:cut], argv[cut + 1:]
    layers = [Layer(p) for p in gz]
    tree = merged(layers)
    spans = [[] for _ in layers]
    files = set()
    for path in opened(traces):
        e = resolve(tree, path)
        if e is None:
            continue
        n, m = e
        if m.islnk():
            m = layers[n].members.get(norm(m.linkname), m)
        if not m.isreg() or m.size == 0 or (n, m.name) in files:
            continue
        files.add((n, m.name))
        a, b = layers[n].compressed(m.offset_data, m.offset_data + m.size)
        spans[n].append((a, b))
        if verbose:
            print(f"{b - a:>10} layer{n + 1} {path}", file=sys.stderr)
    total = 0
    for s in spans:
        end = -1
        for a, b in sorted(s):
            a = max(a, end)
            if b > a:
                total += b - a
            end = max(end, b)
    print(total, len(files), len(layers))


if __name__ == "__main__":
    main(sys.argv[1:])
