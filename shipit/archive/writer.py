"""Write an OCI image layout as a tar stream, plus the legacy ``manifest.json``.

Headers are deterministic (mtime 0, root-owned, fixed modes), so the same blobs in the
same order give a byte-identical archive. Each blob is written exactly once.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from shipit.archive.reader import CHUNK
from shipit.compression import Readable
from shipit.errors import ShipitError
from shipit.oci import (
    ANNOTATION_IMAGE_NAME,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Document,
    blob_path,
    familiar_ref,
)
from shipit.platforms import Platform

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
BLOCK = 512


def _header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = 0
    info.mode = 0o755 if directory else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class TarStream:
    """Produces the bytes of a tar, entry by entry, without seeking."""

    def __init__(self) -> None:
        self.written: set[str] = set()

    def start(self) -> bytes:
        return _header("blobs/", 0, True) + _header("blobs/sha256/", 0, True)

    def file(self, name: str, size: int, body: Readable) -> Iterator[bytes]:
        yield _header(name, size)
        left = size
        while left:
            chunk = body.read(min(CHUNK, left))
            if not chunk:
                raise ShipitError(f"{name}: spooled blob ended {left} bytes early")
            left -= len(chunk)
            yield chunk
        yield _padding(size)

    def data(self, name: str, data: bytes) -> bytes:
        return _header(name, len(data)) + data + _padding(len(data))

    def blob(self, digest: str, size: int, body: Readable) -> Iterator[bytes]:
        """A blob, unless it was written already (then nothing)."""
        if digest in self.written:
            return iter(())
        self.written.add(digest)
        return self.file(blob_path(digest), size, body)

    def blob_bytes(self, digest: str, data: bytes) -> bytes:
        if digest in self.written:
            return b""
        self.written.add(digest)
        return self.data(blob_path(digest), data)

    def end(self) -> bytes:
        return b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class MadeImage:
    """The documents of a one-image archive shipit makes up (a probe, a stage)."""

    config: Document
    manifest: Document
    index_json: bytes
    manifest_json: bytes

    def tar_entries(self, tar: TarStream) -> Iterator[bytes]:
        """Config, manifest and the top-level files, for ``tar`` after its blobs."""
        yield tar.blob_bytes(self.config.digest, self.config.raw)
        yield tar.blob_bytes(self.manifest.digest, self.manifest.raw)
        yield tar.data("oci-layout", OCI_LAYOUT)
        yield tar.data("index.json", self.index_json)
        yield tar.data("manifest.json", self.manifest_json)
        yield tar.end()


def make_image(name: str, platform: Platform, layers: list[tuple[str, Descriptor]]) -> MadeImage:
    """A minimal image named ``name``: a config listing the layers' diff_ids (``layers``
    pairs each with the descriptor of its blob), an OCI manifest, and both the
    ``index.json`` the containerd store reads and the ``manifest.json`` classic ones do."""
    config_value: dict[str, object] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for diff_id, _ in layers]},
    }
    if platform.variant:
        config_value["variant"] = platform.variant
    config = Document.build(config_value)
    manifest = Document.build(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Descriptor(OCI_CONFIG, config.digest, config.size).to_json(),
            "layers": [blob.to_json() for _, blob in layers],
        }
    )
    entry = Descriptor(OCI_MANIFEST, manifest.digest, manifest.size, {ANNOTATION_IMAGE_NAME: name})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry.to_json()]}
    legacy = [
        {
            "Config": blob_path(config.digest),
            "RepoTags": [familiar_ref(name)],
            "Layers": [blob_path(blob.digest) for _, blob in layers],
        }
    ]
    return MadeImage(
        config,
        manifest,
        Document.build(index).raw,
        Document.build(legacy).raw,  # type: ignore[arg-type]
    )
