#!/usr/bin/env bash
# The by-hand way to ship zstd layers without shipit (a peer in integration/bench_floor.py):
# save, compress each layer with the zstd CLI, rewrite the digests and sizes in the
# manifest and index, and load the result.
#
#   bash integration/byhand_zstd.sh 'docker -H unix:///src.sock' IMAGE 'ssh host docker load'
set -euo pipefail
DOCKER=$1 REF=$2 LOAD=$3
work=$(mktemp -d "${TMPDIR:-/var/tmp}/byhand.XXXXXX")
trap 'rm -rf "$work"' EXIT
$DOCKER save "$REF" | tar -x -C "$work"
python3 - "$work" <<'PY'
import hashlib, json, os, subprocess, sys
root = sys.argv[1]
blob = lambda d: os.path.join(root, "blobs", "sha256", d.split(":", 1)[1])

def put(data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob(digest), "wb") as f:
        f.write(data)
    return digest, len(data)

def sha_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

index = json.load(open(os.path.join(root, "index.json")))
moved = {}
for entry in index["manifests"]:
    manifest = json.load(open(blob(entry["digest"])))
    for layer in manifest["layers"]:
        if not layer["mediaType"].endswith(".tar"):
            continue
        old = blob(layer["digest"])
        subprocess.run(["zstd", "-T0", "-3", "-q", "--rm", old, "-o", old + ".zst"], check=True)
        digest = sha_file(old + ".zst")
        os.replace(old + ".zst", blob(digest))
        moved[layer["digest"]] = digest
        layer.update(mediaType=layer["mediaType"] + "+zstd", digest=digest,
                     size=os.path.getsize(blob(digest)))
    entry["digest"], entry["size"] = put(json.dumps(manifest).encode())
json.dump(index, open(os.path.join(root, "index.json"), "w"))
path = os.path.join(root, "manifest.json")
if os.path.exists(path):  # the classic store's list: layers by their new paths
    legacy = json.load(open(path))
    for image in legacy:
        image["Layers"] = [
            "blobs/sha256/" + moved.get("sha256:" + p.rsplit("/", 1)[1], "sha256:" + p.rsplit("/", 1)[1]).split(":", 1)[1]
            for p in image["Layers"]
        ]
        image.pop("LayerSources", None)
    json.dump(legacy, open(path, "w"))
PY
tar -c -C "$work" . | $LOAD
