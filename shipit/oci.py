"""OCI and Docker image vocabulary: digests, media types, descriptors, references.

Documents (manifests, indexes, configs) are kept as the exact bytes that were read or
will be written; their digest is always the sha256 of those bytes. Models are frozen:
a transform returns new objects, so a digest can never go stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipit.errors import BadInput

# Media types ------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

#: OCI layer media type for each layer compression shipit writes.
OCI_LAYER_FOR = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}

# Annotations every index entry carries, one entry per tag (containerd reads the first,
# OCI tools the second; Docker writes both).
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# Limits -----------------------------------------------------------------------------

#: Largest JSON document (manifest, index, config) shipit will hold in memory.
MAX_DOCUMENT = 8 << 20
#: Deepest JSON nesting accepted; real image documents nest fewer than 10 levels.
MAX_JSON_DEPTH = 64

# Digests ----------------------------------------------------------------------------

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, what: str = "digest") -> str:
    """Return ``digest`` if it is a well-formed sha256 digest, else raise BadInput."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        algo = digest.split(":", 1)[0] if isinstance(digest, str) and ":" in digest else None
        if algo and algo != "sha256":
            raise BadInput(f"{what} {digest[:80]!r}: digest algorithm {algo!r} is not supported")  # type: ignore[index]
        raise BadInput(f"{what} {str(digest)[:80]!r} is not a sha256 digest")
    return digest


def short(digest: str) -> str:
    """``sha256:ab12cd34ef56`` — for messages and progress lines."""
    return digest[:19]


def blob_path(digest: str) -> str:
    """Where a blob lives in an OCI layout."""
    algo, hexpart = digest.split(":", 1)
    return f"blobs/{algo}/{hexpart}"


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """Chain IDs of a layer stack (what the classic store keys layers by)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


# JSON -------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    # Iterative so a hostile document cannot blow the Python stack.
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _nesting_prefilter(data: bytes) -> None:
    # json.loads recurses in C and raises RecursionError on deep input; bound it first.
    depth = 0
    deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise BadInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif byte in (0x7D, 0x5D):
            depth -= 1


def parse_json(data: bytes, what: str) -> Any:
    """Parse a document shipit read, with bounded size and depth; BadInput on anything odd."""
    if len(data) > MAX_DOCUMENT:
        raise BadInput(f"{what}: document of {len(data)} bytes exceeds {MAX_DOCUMENT} bytes")
    try:
        _nesting_prefilter(data)
    except BadInput as exc:
        raise BadInput(f"{what}: {exc}") from None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"{what}: invalid JSON: {exc}") from None
    return value


def parse_object(data: bytes, what: str) -> dict[str, Any]:
    value = parse_json(data, what)
    if not isinstance(value, dict):
        raise BadInput(f"{what}: expected a JSON object")
    return value


def dump_json(value: Any) -> bytes:
    """Deterministic JSON for documents shipit writes (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest or index says about a blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, value: Any, what: str) -> Descriptor:
        if not isinstance(value, dict):
            raise BadInput(f"{what}: descriptor is not a JSON object")
        digest = check_digest(value.get("digest"), f"{what} digest")
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadInput(f"{what} {short(digest)}: invalid size {size!r}")
        media_type = value.get("mediaType", "")
        if not isinstance(media_type, str):
            raise BadInput(f"{what} {short(digest)}: invalid mediaType")
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise BadInput(f"{what} {short(digest)}: invalid annotations")
        platform = value.get("platform")
        return cls(media_type, digest, size, annotations, platform)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


@dataclass(frozen=True)
class Document:
    """A JSON document together with the exact bytes its digest names."""

    raw: bytes
    value: dict[str, Any]

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)

    @classmethod
    def parse(cls, raw: bytes, what: str) -> Document:
        return cls(raw, parse_object(raw, what))

    @classmethod
    def build(cls, value: dict[str, Any]) -> Document:
        return cls(dump_json(value), value)


def manifest_parts(doc: Document, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    value = doc.value
    if value.get("schemaVersion") != 2:
        raise BadInput(f"{what}: schemaVersion {value.get('schemaVersion')!r} is not supported")
    config = Descriptor.from_json(value.get("config"), f"{what} config")
    layers_value = value.get("layers")
    if not isinstance(layers_value, list):
        raise BadInput(f"{what}: layers is not a list")
    layers = [Descriptor.from_json(item, f"{what} layer") for item in layers_value]
    return config, layers


def index_children(doc: Document, what: str) -> list[Descriptor]:
    manifests = doc.value.get("manifests")
    if not isinstance(manifests, list):
        raise BadInput(f"{what}: manifests is not a list")
    return [Descriptor.from_json(item, f"{what} entry") for item in manifests]


def config_diff_ids(doc: Document, what: str) -> list[str]:
    rootfs = doc.value.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise BadInput(f"{what}: rootfs.diff_ids missing")
    return [check_digest(d, f"{what} diff_id") for d in rootfs["diff_ids"]]


# References -------------------------------------------------------------------------


def normalize_ref(ref: str) -> str:
    """``rosie`` → ``docker.io/library/rosie:latest``, the form containerd names images by."""
    name, tag, digest = split_ref(ref)
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    if digest and not tag:
        return f"{name}@{digest}"
    return f"{name}:{tag or 'latest'}" + (f"@{digest}" if digest else "")


def familiar_ref(ref: str) -> str:
    """``docker.io/library/rosie:latest`` → ``rosie:latest``, the form RepoTags use."""
    full = normalize_ref(ref)
    if full.startswith("docker.io/library/"):
        return full[len("docker.io/library/") :]
    if full.startswith("docker.io/"):
        return full[len("docker.io/") :]
    return full


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split ``name[:tag][@digest]``; a colon after the last slash starts the tag."""
    if not ref or any(c.isspace() for c in ref):
        raise BadInput(f"invalid image reference {ref!r}")
    name, _, digest = ref.partition("@")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    if not name:
        raise BadInput(f"invalid image reference {ref!r}")
    return name, tag, digest or None


def tag_of(ref: str) -> str | None:
    return split_ref(ref)[1]
