"""Recompress layers and carry every changed digest up the tree.

Layer → manifest → (nested) index → index.json entries, one per name. Configs are never
touched, so ``rootfs.diff_ids`` and the classic store's image ID stay the same. A document
that did not change keeps its exact bytes (and so its digest).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from shipit import compression
from shipit.archive.model import Image, ImageIndex, ImageManifest, Layer
from shipit.archive.reader import CHUNK, BlobRecord, Scan, _Prefixed
from shipit.compression import Codec, Readable, Reader
from shipit.errors import BadInput, DigestMismatch, TooLarge, UsageError
from shipit.memo import Compressed, Memo
from shipit.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_FOR,
    OCI_MANIFEST,
    Descriptor,
    Document,
    blob_path,
    familiar_ref,
    short,
    tag_of,
)

#: Largest uncompressed layer accepted (guards against decompression bombs), unless
#: ``SHIPIT_MAX_LAYER_SIZE`` says otherwise.
DEFAULT_MAX_LAYER = 256 << 30


def max_layer_size() -> int:
    """``SHIPIT_MAX_LAYER_SIZE`` (bytes), read when a policy is made, or the default."""
    value = os.environ.get("SHIPIT_MAX_LAYER_SIZE", "").strip()
    if not value:
        return DEFAULT_MAX_LAYER
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size <= 0:
        raise UsageError(
            f"SHIPIT_MAX_LAYER_SIZE must be a positive number of bytes, not {value!r:.40}"
        )
    return size


def spool_dir() -> str:
    return os.environ.get("SHIPIT_TMPDIR") or tempfile.gettempdir()


class _Hashing(Reader):
    """Reader or writer that hashes and counts what passes through it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hasher = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.hasher.update(data)
        self.count += len(data)
        return data

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hasher.update(data)
        self.count += len(data)
        if self.inner is not None:
            self.inner.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


@dataclass
class LayerPolicy:
    """What to do with each layer blob as it streams past.

    ``codec`` None keeps every layer's compression unless it is not in ``readable`` (then
    gzip, which every engine reads); ``spool`` keeps the output bytes in an
    anonymous temp file for a sink; ``full`` decompresses even untouched layers to check
    their diff_ids.
    """

    codec: Codec | None = None
    readable: frozenset[str] = frozenset({"none", "gzip", "zstd", "bzip2", "xz"})
    spool: bool = True
    full: bool = False
    max_layer: int = field(default_factory=max_layer_size)
    #: Blobs (by the digest that names them) no sink needs: checked, not kept or recompressed.
    skip: Callable[[str], bool] = lambda digest: False
    #: Blobs whose compressed form (from the memo) every sink already holds: checked, not
    #: kept or recompressed, and described as that compressed blob.
    known: Callable[[str], Compressed | None] = lambda digest: None
    #: Where to note what each recompression produced, for ``known`` on a later run.
    memo: Memo | None = None
    on_blob: Callable[[BlobRecord], None] | None = None

    def __call__(
        self, key: str, expected: str | None, size: int, head: bytes, body: Readable
    ) -> BlobRecord:
        kind = compression.detect(head)
        raw = _Hashing(_Prefixed(head, body))
        unwanted = bool(expected and self.spool and self.skip(expected))
        known = self.known(expected) if expected and self.spool and not unwanted else None
        # Anonymous (unlinked at birth): gone when closed or when the process dies.
        keep = self.spool and not unwanted and known is None
        spool = tempfile.TemporaryFile(dir=spool_dir()) if keep else None  # noqa: SIM115
        codec = self._want(kind, head) if keep or not self.spool else None
        try:
            record = self._process(key, kind, head, raw, spool, codec)
            if record.source_size != size:
                raise BadInput(f"blob {key}: read {record.source_size} bytes, tar says {size}")
            if expected and record.source_digest != expected:
                raise DigestMismatch(
                    f"content has digest {short(record.source_digest)}, not {short(expected)}"
                )
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        if spool is not None:
            spool.seek(0)
        if known is not None:
            record = known.record(record)
        elif codec is not None and self.memo is not None:
            self.memo.remember(codec, record)
        if self.on_blob:
            self.on_blob(record)
        return record

    def _want(self, kind: str, head: bytes) -> Codec | None:
        """The codec to rewrite a blob with, or None to pass it through."""
        if kind == "none" and not _is_tar(head):
            return None  # not a layer: some other blob, kept byte for byte
        codec = self.codec
        if codec is None and kind not in self.readable:
            codec = Codec("gzip")
        return None if codec is None or codec.name == kind else codec

    def _process(
        self,
        key: str,
        kind: str,
        head: bytes,
        raw: _Hashing,
        spool: BinaryIO | None,
        codec: Codec | None,
    ) -> BlobRecord:
        is_layer = kind != "none" or _is_tar(head)
        if codec is None:
            # Already what was asked for: the bytes pass through untouched.
            diff_id = self._pass_through(key, kind, raw, spool) if is_layer else None
            if not is_layer:
                self._copy(raw, spool)
            return BlobRecord(
                key, raw.digest, raw.count, kind, raw.digest, raw.count, kind, diff_id, spool
            )
        out = _Hashing(spool)
        # Uncompressed input is its own diff_id: hash it once, not twice.
        plain = raw if kind == "none" else _Hashing(compression.decompressor(kind, raw))  # type: ignore[arg-type]
        packer = compression.compressor(codec, out)
        while chunk := plain.read(CHUNK):
            self._guard(plain.count, key)
            packer.write(chunk)
        packer.finish()
        return BlobRecord(
            key, raw.digest, raw.count, kind, out.digest, out.count, codec.name, plain.digest, spool
        )

    def _copy(self, raw: _Hashing, spool: BinaryIO | None) -> None:
        while chunk := raw.read(CHUNK):
            if spool is not None:
                spool.write(chunk)

    def _pass_through(
        self, key: str, kind: str, raw: _Hashing, spool: BinaryIO | None
    ) -> str | None:
        if kind == "none":
            self._copy(raw, spool)
            return raw.digest  # an uncompressed layer is its own diff_id
        if not self.full:
            self._copy(raw, spool)
            return None
        tee = _Tee(raw, spool)
        plain = _Hashing(compression.decompressor(kind, tee))  # type: ignore[arg-type]
        while plain.read(CHUNK):
            self._guard(plain.count, key)
        while tee.read(CHUNK):  # trailing bytes after the compressed stream
            pass
        return plain.digest

    def _guard(self, count: int, key: str) -> None:
        if count > self.max_layer:
            raise TooLarge(
                f"layer {short(key)} decompresses beyond {self.max_layer} bytes "
                "(set SHIPIT_MAX_LAYER_SIZE to allow more)"
            )


class _Tee(Reader):
    def __init__(self, src: _Hashing, spool: BinaryIO | None) -> None:
        self._src = src
        self._spool = spool

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        if self._spool is not None:
            self._spool.write(data)
        return data


def _is_tar(head: bytes) -> bool:
    """An uncompressed layer: a tar header, or the all-zero blocks of an empty tar."""
    return head[257:262] == b"ustar" or (len(head) >= 512 and not any(head[:512]))


# Rewriting the tree -------------------------------------------------------------------


@dataclass
class Output:
    """Documents to write after the blobs, and the two top-level files."""

    documents: dict[str, bytes]  # digest → bytes (configs, manifests, nested indexes)
    index_json: bytes
    manifest_json: bytes
    images: list[tuple[tuple[str, ...], Descriptor, ImageManifest | None]]


def _add_legacy(
    legacy: list[dict[str, Any]], config: str, layers: list[str], tags: list[str]
) -> None:
    """One ``manifest.json`` entry per image as written: two source manifests that became
    the same (gzip and zstd copies of one image, both now zstd) share one entry, as
    ``docker save`` writes them, so converting shipit's output again changes nothing."""
    for entry in legacy:
        if entry["Config"] == config and entry["Layers"] == layers:
            known = entry["RepoTags"] or []
            entry["RepoTags"] = [*known, *(t for t in tags if t not in known)] or None
            return
    legacy.append({"Config": config, "RepoTags": tags or None, "Layers": layers})


def rewrite(images: list[Image], scan: Scan) -> Output:
    """New manifests, indexes and ``index.json``/``manifest.json`` for the blobs as written."""
    documents: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    legacy: list[dict[str, Any]] = []
    summary = []
    for image in images:
        root = _rewrite_node(image.root, scan, documents)
        runnable = _runnable_after(image, scan, documents)
        summary.append((image.names, root, runnable))
        entries.extend(_index_entries(root, image.names))
        if runnable is not None:
            _add_legacy(
                legacy,
                blob_path(runnable.config.digest),
                [blob_path(d) for d in _layer_digests(runnable, scan)],
                [familiar_ref(n) for n in image.names],
            )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Output(
        documents,
        Document.build(index).raw,
        Document.build(legacy).raw if legacy else b"[]",  # type: ignore[arg-type]
        summary,
    )


def _index_entries(root: Descriptor, names: tuple[str, ...]) -> list[dict[str, Any]]:
    base = Descriptor(root.media_type, root.digest, root.size)
    if not names:
        return [base.to_json()]
    out = []
    for name in names:
        annotations = {ANNOTATION_IMAGE_NAME: name}
        tag = tag_of(name)
        if tag:
            annotations[ANNOTATION_REF_NAME] = tag
        out.append({**base.to_json(), "annotations": annotations})
    return out


def _layer_digests(manifest: ImageManifest, scan: Scan) -> list[str]:
    return [_layer_descriptor(layer, scan, oci=True).digest for layer in manifest.layers]


def _runnable_after(image: Image, scan: Scan, documents: dict[str, bytes]) -> ImageManifest | None:
    runnable = image.runnable()
    if runnable is None:
        return None
    documents.setdefault(runnable.config.digest, runnable.config.raw)
    return runnable


def _layer_descriptor(layer: Layer, scan: Scan, oci: bool) -> Descriptor:
    record = scan.blob(layer.key)
    original = layer.descriptor
    if record is None:
        # A JSON layer (an attestation), kept among the documents: its descriptor stands.
        if original is None:
            raise BadInput(f"layer {short(layer.diff_id)} is missing from the archive")
        return original
    annotations = original.annotations if original else {}
    untouched = original is not None and not record.rewritten
    if untouched and (not oci or original.media_type in OCI_LAYER_FOR.values()):  # type: ignore[union-attr]
        return original  # type: ignore[return-value]
    media_type = _layer_media_type(record.compression, oci, original)
    return Descriptor(media_type, record.digest, record.size, annotations)


def _layer_media_type(kind: str, oci: bool, original: Descriptor | None) -> str:
    if oci and kind in OCI_LAYER_FOR:
        return OCI_LAYER_FOR[kind]
    if kind == "gzip":
        return DOCKER_LAYER_GZIP
    if kind == "none":
        return DOCKER_LAYER
    return original.media_type if original else OCI_LAYER_FOR.get(kind, DOCKER_LAYER)


def _rewrite_node(
    node: ImageManifest | ImageIndex, scan: Scan, documents: dict[str, bytes]
) -> Descriptor:
    if isinstance(node, ImageIndex):
        children = []
        changed = False
        for child in node.children:
            if isinstance(child, Descriptor):
                children.append(child)  # another platform, not in the archive: kept as is
                continue
            new = _rewrite_node(child, scan, documents)
            old = child.descriptor
            assert old is not None
            changed |= new.digest != old.digest
            children.append(
                Descriptor(new.media_type, new.digest, new.size, old.annotations, old.platform)
            )
        if not changed:
            documents[node.document.digest] = node.document.raw
            return node.descriptor
        value = dict(node.document.value)
        value["mediaType"] = OCI_INDEX
        value["manifests"] = [c.to_json() for c in children]
        doc = Document.build(value)
        documents[doc.digest] = doc.raw
        return Descriptor(OCI_INDEX, doc.digest, doc.size, node.descriptor.annotations)

    documents[node.config.digest] = node.config.raw
    for layer in node.layers:  # JSON layers (attestations) travel with the documents
        if scan.blob(layer.key) is None and layer.key in scan.documents:
            documents[layer.key] = scan.documents[layer.key].raw
    if node.document is not None and node.descriptor is not None:
        layers = [_layer_descriptor(layer, scan, oci=False) for layer in node.layers]
        if all(new == layer.descriptor for new, layer in zip(layers, node.layers, strict=True)):
            documents[node.document.digest] = node.document.raw
            return node.descriptor
    # Something changed (or legacy input): write an OCI manifest, the one format in
    # which every layer compression has a media type.
    layers = [_layer_descriptor(layer, scan, oci=True) for layer in node.layers]
    config_type = node.config_descriptor.media_type
    config = Descriptor(
        OCI_CONFIG if config_type in ("", DOCKER_CONFIG) else config_type,
        node.config.digest,
        node.config.size,
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if node.document is not None and isinstance(node.document.value.get("annotations"), dict):
        manifest["annotations"] = node.document.value["annotations"]
    doc = Document.build(manifest)
    documents[doc.digest] = doc.raw
    return Descriptor(OCI_MANIFEST, doc.digest, doc.size)
