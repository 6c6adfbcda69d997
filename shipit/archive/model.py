"""The image model of an archive: names → index/manifest tree → config and layers.

Built from a finished ``Scan``. Building it checks what only the whole archive can tell:
every referenced blob is present with the size its descriptor says, and every layer
whose uncompressed digest was computed matches the config's ``rootfs.diff_ids``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from shipit.archive.reader import BlobRecord, Scan
from shipit.errors import BadInput, DigestMismatch
from shipit.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_DOCUMENT,
    Descriptor,
    Document,
    check_digest,
    config_diff_ids,
    index_children,
    manifest_parts,
    normalize_ref,
    parse_json,
    short,
)


@dataclass(frozen=True)
class Layer:
    key: str  # where the scan keeps its blob: source digest, or legacy member path
    descriptor: Descriptor | None  # as the source manifest had it (None: legacy layout)
    diff_id: str


@dataclass(frozen=True)
class ImageManifest:
    descriptor: Descriptor | None  # None when synthesized from a legacy manifest.json
    document: Document | None
    config: Document
    config_descriptor: Descriptor
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class ImageIndex:
    descriptor: Descriptor
    document: Document
    children: tuple[ImageManifest | ImageIndex | Descriptor, ...]  # Descriptor: not in archive


Node = ImageManifest | ImageIndex


@dataclass(frozen=True)
class Image:
    """One image of the archive with every name it was saved under."""

    names: tuple[str, ...]  # normalized references, e.g. docker.io/library/rosie:latest
    root: Node

    def manifests(self) -> Iterator[ImageManifest]:
        stack: list[Node | Descriptor] = [self.root]
        while stack:
            node = stack.pop(0)
            if isinstance(node, ImageManifest):
                yield node
            elif isinstance(node, ImageIndex):
                stack.extend(node.children)


def build(scan: Scan) -> list[Image]:
    """The images of a scanned archive, checked for completeness and diff_ids."""
    if "index.json" in scan.top:
        images = _from_index(scan)
    elif "manifest.json" in scan.top:
        images = _from_legacy(scan)
    else:
        raise BadInput(_no_top_documents(scan))
    if not images:
        raise BadInput("the archive holds no image")
    return images


def _no_top_documents(scan: Scan) -> str:
    nested = sorted(
        (n for n in scan.ignored if n.rsplit("/", 1)[-1] in ("index.json", "manifest.json")),
        key=lambda n: (n.count("/"), n),
    )
    if nested:
        return (
            f"neither index.json nor manifest.json at the top of the archive, but {nested[0]!r}: "
            "an image layout inside a folder, which shipit cannot read yet "
            "(make the tar from inside that folder)"
        )
    return "neither index.json nor manifest.json found: not a docker save archive"


# OCI layout (Engine 25+, containerd store, shipit) ---------------------------------


def _from_index(scan: Scan) -> list[Image]:
    index = Document.parse(scan.top["index.json"], "index.json")
    entries = index_children(index, "index.json")
    legacy_names = _legacy_names(scan)
    images: dict[str, tuple[list[str], Node]] = {}
    for entry in entries:
        node = _node(scan, entry, "index.json", depth=0)
        if node is None:
            raise BadInput(f"index.json: entry {short(entry.digest)} is missing from the archive")
        names, _ = images.setdefault(entry.digest, ([], node))
        for name in _entry_names(entry, node, legacy_names):
            if name not in names:
                names.append(name)
    return [Image(tuple(names), node) for names, node in images.values()]


#: One path component of an image name (distribution's reference grammar).
_BARE_NAME = re.compile(r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")


def _entry_names(entry: Descriptor, node: Node, legacy_names: dict[str, list[str]]) -> list[str]:
    full = entry.annotations.get(ANNOTATION_IMAGE_NAME)
    ref = entry.annotations.get(ANNOTATION_REF_NAME)
    if full:
        return [normalize_ref(full)]
    if ref and ("/" in ref or ":" in ref):
        return [normalize_ref(ref)]
    # A bare ref.name says too little; manifest.json's RepoTags name the image fully
    # (the classic store reads only those).
    if isinstance(node, ImageManifest) and legacy_names.get(node.config.digest):
        return [normalize_ref(n) for n in legacy_names[node.config.digest]]
    # Without them, docker load (containerd store) takes it as an image name, so "v1"
    # is v1:latest; one that is no valid name leaves the image untagged, as there.
    if ref and _BARE_NAME.match(ref):
        return [normalize_ref(ref)]
    return []


def _legacy_names(scan: Scan) -> dict[str, list[str]]:
    if "manifest.json" not in scan.top:
        return {}
    out: dict[str, list[str]] = {}
    for entry in _legacy_entries(scan):
        config = entry.get("Config", "")
        if isinstance(config, str) and config.startswith("blobs/sha256/"):
            out["sha256:" + config.rsplit("/", 1)[1]] = list(entry.get("RepoTags") or [])
    return out


def _node(scan: Scan, desc: Descriptor, what: str, depth: int) -> Node | None:
    if depth > 8:
        raise BadInput(f"{what}: indexes nested deeper than 8 levels")
    doc = _document(scan, desc.digest, f"{what}: {short(desc.digest)}")
    if doc is None:
        return None
    if doc.size != desc.size:
        raise DigestMismatch(
            f"{what}: {short(desc.digest)} has {doc.size} bytes, descriptor says {desc.size}"
        )
    media_type = _media_type(desc, doc, f"{what}: {short(desc.digest)}")
    label = f"manifest {short(desc.digest)}"
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc.value):
        children: list[Node | Descriptor] = []
        for child in index_children(doc, label):
            node = _node(scan, child, label, depth + 1)
            children.append(node if node is not None else child)
        return ImageIndex(desc, doc, tuple(children))
    if media_type not in MANIFEST_TYPES and "layers" not in doc.value:
        raise BadInput(f"{what}: {short(desc.digest)} has unsupported media type {media_type!r}")
    config_desc, layer_descs = manifest_parts(doc, label)
    config = _document(scan, config_desc.digest, f"{label}: config {short(config_desc.digest)}")
    if config is None:
        raise BadInput(f"{label}: config {short(config_desc.digest)} is missing from the archive")
    if config.size != config_desc.size:
        raise DigestMismatch(f"{label}: config size {config.size} != descriptor {config_desc.size}")
    diff_ids = config_diff_ids(config, f"config {short(config.digest)}")
    if len(diff_ids) != len(layer_descs):
        raise BadInput(f"{label}: {len(layer_descs)} layers but {len(diff_ids)} diff_ids")
    layers = []
    for layer_desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        record = scan.blob(layer_desc.digest)
        document = scan.documents.get(layer_desc.digest)
        if record is None and document is not None:
            # A JSON "layer" (an in-toto attestation statement): kept as a document.
            if document.size != layer_desc.size:
                raise DigestMismatch(
                    f"{label}: layer {short(layer_desc.digest)} has {document.size} bytes, "
                    f"descriptor says {layer_desc.size}"
                )
        else:
            _check_layer(record, layer_desc.digest, layer_desc.size, diff_id, label)
        layers.append(Layer(layer_desc.digest, layer_desc, diff_id))
    return ImageManifest(desc, doc, config, config_desc, tuple(layers))


def _document(scan: Scan, digest: str, what: str) -> Document | None:
    doc = scan.documents.get(digest)
    if doc is None and digest in scan.blobs:
        # Read, but kept as an opaque blob: not JSON, or too large to be a document.
        raise BadInput(f"{what} is not a JSON document of at most {MAX_DOCUMENT >> 20} MiB")
    return doc


def _media_type(desc: Descriptor, doc: Document, what: str) -> str:
    """What a manifest or index is: its descriptor must say one of the two (or nothing),
    and must not contradict the document's own mediaType."""
    own = doc.value.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise BadInput(f"{what}: invalid mediaType {own!r:.80}")
    known = INDEX_TYPES | MANIFEST_TYPES
    declared = desc.media_type
    if declared and declared not in known:
        raise BadInput(f"{what}: unsupported media type {declared!r:.120}")
    if declared and own in known and (declared in INDEX_TYPES) != (own in INDEX_TYPES):
        raise BadInput(f"{what}: descriptor says media type {declared!r}, document says {own!r}")
    return declared or own or ""


def _check_layer(
    record: BlobRecord | None,
    digest: str | None,
    size: int | None,
    diff_id: str,
    what: str,
) -> None:
    if record is None:
        raise BadInput(f"{what}: layer {short(digest or diff_id)} is missing from the archive")
    if size is not None and record.source_size != size:
        raise DigestMismatch(
            f"{what}: layer {short(record.source_digest)} has {record.source_size} bytes, "
            f"descriptor says {size}"
        )
    if record.diff_id is not None and record.diff_id != diff_id:
        raise DigestMismatch(
            f"{what}: layer {short(record.source_digest)} uncompressed is "
            f"{short(record.diff_id)}, config says {short(diff_id)}"
        )


# Legacy manifest.json (Engine ≤ 24, and the fallback for every classic save) --------


def _legacy_entries(scan: Scan) -> list[dict]:
    value = parse_json(scan.top["manifest.json"], "manifest.json")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadInput("manifest.json: expected a list of objects")
    return value


def _from_legacy(scan: Scan) -> list[Image]:
    images = []
    for n, entry in enumerate(_legacy_entries(scan)):
        what = f"manifest.json entry {n}"
        config_path = entry.get("Config")
        layer_paths = entry.get("Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise BadInput(f"{what}: Config and Layers are required")
        config = _legacy_config(scan, config_path, what)
        diff_ids = config_diff_ids(config, f"config {short(config.digest)}")
        if len(diff_ids) != len(layer_paths):
            raise BadInput(f"{what}: {len(layer_paths)} layers but {len(diff_ids)} diff_ids")
        layers = []
        for path, diff_id in zip(layer_paths, diff_ids, strict=True):
            if not isinstance(path, str):
                raise BadInput(f"{what}: layer path is not a string")
            key = _blob_key(path)
            record = scan.blob(key)
            if record is None and scan.resolve(key) in scan.ignored:
                raise BadInput(f"{what}: layer {path!r} is {_unread_layout(path)}")
            _check_layer(record, None, None, diff_id, what)
            # An uncompressed blob's own digest is its diff_id (even if it is no tar).
            uncompressed = record is not None and record.source_compression == "none"
            if uncompressed and record.source_digest != diff_id:  # type: ignore[union-attr]
                raise DigestMismatch(
                    f"{what}: layer {path!r} is {short(record.source_digest)}, "  # type: ignore[union-attr]
                    f"config says {short(diff_id)}"
                )
            layers.append(Layer(scan.resolve(key), None, diff_id))
        config_desc = Descriptor(DOCKER_CONFIG, config.digest, config.size)
        manifest = ImageManifest(None, None, config, config_desc, tuple(layers))
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadInput(f"{what}: RepoTags is not a list of names")
        images.append(Image(tuple(normalize_ref(t) for t in tags), manifest))
    return images


def _blob_key(path: str) -> str:
    if path.startswith("blobs/sha256/"):
        return check_digest("sha256:" + path[len("blobs/sha256/") :], f"layer path {path!r}")
    return path


_HEX_RUN = re.compile(r"[0-9a-f]{32,}")


def _unread_layout(path: str) -> str:
    """Names the layout of a layer file shipit read past, for a one-line refusal."""
    shape = _HEX_RUN.sub("<hex>", path)
    return (
        f"in the archive, but stored as {shape!r}, a layout shipit cannot read yet "
        "(it reads blobs/sha256/<digest>, <id>/layer.tar, <digest>.tar and <digest>.tar.gz)"
    )


def _legacy_config(scan: Scan, path: str, what: str) -> Document:
    key = scan.resolve(_blob_key(path))
    if key.startswith("sha256:"):
        # blobs/sha256/<hex>, or a top-level file named by its digest (sha256:<hex>).
        doc = scan.documents.get(key)
    else:
        doc = scan.legacy_configs.get(path)
        if doc is not None:
            stem = path.removesuffix(".json")
            if doc.digest != f"sha256:{stem}":
                raise DigestMismatch(f"{what}: config {path!r} has digest {short(doc.digest)}")
    if doc is None:
        raise BadInput(f"{what}: config {path!r} is missing from the archive")
    return doc
