#!/usr/bin/env python3
"""new-layer.py STORE NAME: the path of the top layer blob of image NAME in a
layerfs store (an OCI layout), for bench-write.sh to hand a commit's layer to
the anchors harness."""
import json
import sys

root, name = sys.argv[1], sys.argv[2]
index = json.load(open(f"{root}/index.json"))
tops = [m for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name]
if not tops:
    sys.exit(f"new-layer.py: no image {name} in {root}")
manifest = json.load(open(f"{root}/blobs/sha256/{tops[0]['digest'][7:]}"))
print(f"{root}/blobs/sha256/{manifest['layers'][-1]['digest'][7:]}")
