"""Recompress layers and carry every changed digest up the tree.

Layer → manifest → (nested) index → index.json entries, one per name. Configs are never
touched, so ``rootfs.diff_ids`` and the classic store's image ID stay the same. A document
that did not change keeps its exact bytes (and so its digest).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, BinaryIO

from shipit import compression
from shipit.archive.model import Image, ImageIndex, ImageManifest, Layer
from shipit.archive.reader import CHUNK, BlobHandler, BlobRecord, Scan, _Prefixed
from shipit.compression import Codec, Readable, Reader
from shipit.errors import (
    BadInput,
    DigestMismatch,
    PlatformMissing,
    ShipitError,
    TempSpaceShort,
    TooLarge,
    UsageError,
)
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
    index_children,
    parse_object,
    short,
    tag_of,
)
from shipit.platforms import REFERENCE_DIGEST, Platform, is_attestation

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


#: Past this many decompressed bytes a layer may inflate at most MAX_RATIO times its
#: compressed size (``SHIPIT_MAX_LAYER_RATIO``): real layers compress 2-10:1, a
#: decompression bomb (zeros) 1000:1 and far beyond, and an engine handed one spends
#: minutes inflating it before it can refuse it.
RATIO_FLOOR = 1 << 30
DEFAULT_MAX_RATIO = 1000


def max_layer_ratio() -> int:
    """``SHIPIT_MAX_LAYER_RATIO``, read when a policy is made, or the default."""
    value = os.environ.get("SHIPIT_MAX_LAYER_RATIO", "").strip()
    if not value:
        return DEFAULT_MAX_RATIO
    if not value.isdigit() or int(value) <= 0:
        raise UsageError(
            f"SHIPIT_MAX_LAYER_RATIO must be a positive whole number, not {value!r:.40}"
        )
    return int(value)


def spool_dir() -> str:
    return os.environ.get("SHIPIT_TMPDIR") or tempfile.gettempdir()


def room_to_spool(size: int) -> None:
    """Refuse a spool the temp folder plainly cannot hold, before a byte of it is written
    (else the disk fills mid-layer). ``size`` is the blob as read: what a pass-through
    spools exactly, and about what a recompressed layer does."""
    folder = spool_dir()
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # opening the spool will say what is wrong with the folder
    if free < size:
        raise TempSpaceShort(
            f"the temp folder {folder} has {free / 1e6:.0f} MB free; this blob needs about "
            f"{size / 1e6:.0f} MB there while it is sent (SHIPIT_TMPDIR names another folder)"
        )


HASH_BEHIND_FROM = 8 << 20
"""A blob this large read from the source is hashed on a thread of its own (_HashBehind)."""


class _HashBehind:
    """sha256 on a thread of its own: the next chunk is read (and compressed or spooled)
    while one is hashed, as hashlib lets go of the GIL. Chunks must be bytes (immutable:
    the reader may go on to the next)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)  # 16 MiB at most
        self._hasher = hashlib.sha256()
        self._hex: str | None = None
        self._thread = threading.Thread(target=self._run, name="shipit-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            self._hasher.update(data)

    def update(self, data: bytes) -> None:
        if data:
            self._queue.put(bytes(data) if not isinstance(data, bytes) else data)

    def hexdigest(self) -> str:
        if self._hex is None:
            self.close()
            self._hex = self._hasher.hexdigest()
        return self._hex

    def close(self) -> None:
        """End the thread (every path: a failed read leaves no thread behind)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Hashing(Reader):
    """Reader or writer that hashes and counts what passes through it; ``behind``: on a
    thread of its own (use it in a ``with``, which ends the thread)."""

    def __init__(self, inner: Any, *, behind: bool = False) -> None:
        self.inner = inner
        self.hasher: Any = _HashBehind() if behind else hashlib.sha256()
        self.count = 0

    def __enter__(self) -> _Hashing:
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.hasher, _HashBehind):
            self.hasher.close()

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


class GrowingSpool:
    """A blob's spool that sinks read while it is still being written.

    A layer that passes through unchanged, named by its digest, has its output size and
    digest known from its tar header and its name: its own tar header can be written at
    once, and the link need not wait for the whole layer to be read (1.2 s of idle link
    for a 700 MB layer, more from a slower source). It is still checked: when its bytes
    do not match, ``finish(error)`` makes every reader raise, and the upload that carried
    them is cut off before the documents that would make it an image."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self._fd = file.fileno()
        self._written = 0
        self._ended = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._on_end: list[Callable[[], None]] = []

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:  # unbuffered, so that a reader's pread sees every byte written
            view = view[os.write(self._fd, view) :]
        with self._changed:
            self._written += len(data)
            self._changed.notify_all()
        return len(data)

    def when_ended(self, callback: Callable[[], None]) -> None:
        with self._changed:
            if not self._ended:
                self._on_end.append(callback)
                return
        callback()

    def finish(self, error: BaseException | None = None) -> None:
        """Every byte is written (or, with ``error``, never will be)."""
        with self._changed:
            if self._ended:
                return
            self._ended, self._error = True, error
            self._changed.notify_all()
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback()

    def read_at(self, pos: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``pos``, waiting for them to be written; b"" at the end."""
        with self._changed:
            while pos >= self._written and not self._ended:
                self._changed.wait(0.5)
            if self._error is not None:
                if isinstance(self._error, ShipitError):
                    raise self._error
                raise ShipitError(f"reading the source stopped: {self._error}")
            available = self._written - pos
        return os.pread(self._fd, min(size, available), pos) if available > 0 else b""


#: Hears each blob and, when a sink will want its bytes, the spool holding them (the
#: callee owns it from then on): a finished one, or a ``GrowingSpool`` still being written.
OnBlob = Callable[[BlobRecord, "BinaryIO | GrowingSpool | None"], None]


def _checked(record: BlobRecord, size: int, expected: str | None) -> BlobRecord:
    """``record``, once what was read matches its tar header's size and its name's digest."""
    if record.source_size != size:
        raise BadInput(f"blob {record.key}: read {record.source_size} bytes, tar says {size}")
    if expected and record.source_digest != expected:
        raise DigestMismatch(
            f"content has digest {short(record.source_digest)}, not {short(expected)}"
        )
    return record


@dataclass(frozen=True)
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
    max_ratio: int = field(default_factory=max_layer_ratio)
    #: Blobs (by the digest that names them) no sink needs: read past (_dropped).
    skip: Callable[[str], bool] = lambda digest: False
    #: Blobs whose compressed form (from the memo) every sink already holds: read past,
    #: and described as that compressed blob.
    known: Callable[[str], Compressed | None] = lambda digest: None
    #: Where to note what each recompression produced, for ``known`` on a later run.
    memo: Memo | None = None

    def handler(self, on_blob: OnBlob | None = None) -> BlobHandler:
        """The scan's blob handler, telling ``on_blob`` of each blob as it finishes."""
        return partial(self._handle, on_blob)

    def __call__(
        self, key: str, expected: str | None, size: int, head: bytes, body: Readable
    ) -> BlobRecord:
        return self._handle(None, key, expected, size, head, body)

    def _handle(
        self,
        on_blob: OnBlob | None,
        key: str,
        expected: str | None,
        size: int,
        head: bytes,
        body: Readable,
    ) -> BlobRecord:
        kind = compression.detect(head)
        unwanted = bool(expected and self.spool and self.skip(expected))
        known = self.known(expected) if expected and self.spool and not unwanted else None
        if expected and (unwanted or known is not None):
            record = _dropped(key, kind, expected, size, head, body)
            record = known.record(record) if known is not None else record
            if on_blob is not None:
                on_blob(record, None)
            return record
        with _Hashing(_Prefixed(head, body), behind=size >= HASH_BEHIND_FROM) as raw:
            if self.spool:
                room_to_spool(size)
            # Anonymous (unlinked at birth): gone when closed or when the process dies.
            spool = tempfile.TemporaryFile(dir=spool_dir()) if self.spool else None  # noqa: SIM115
            codec = self._want(kind, head)
            plain_layer = kind == "none" and _is_tar(head)
            if (
                spool is not None
                and on_blob is not None
                and codec is None
                and expected
                and plain_layer
            ):
                return self._stream(on_blob, key, expected, size, head, raw, spool)
            try:
                record = _checked(self._process(key, kind, head, raw, spool, codec), size, expected)
            except BaseException:
                if spool is not None:
                    spool.close()
                raise
            if spool is not None:
                spool.seek(0)
            if codec is not None and self.memo is not None:
                self.memo.remember(codec, record)
            if on_blob is not None:
                on_blob(record, spool)
            elif spool is not None:
                spool.close()
            return record

    def _stream(
        self,
        on_blob: OnBlob,
        key: str,
        expected: str,
        size: int,
        head: bytes,
        raw: _Hashing,
        spool: BinaryIO,
    ) -> BlobRecord:
        """An uncompressed layer passed on as it is read (see GrowingSpool): its record
        is what its name and tar header say, and the bytes are checked against it."""
        growing = GrowingSpool(spool)
        told = BlobRecord.plain_layer(key, expected, size)
        try:
            on_blob(told, growing)
            record = self._process(key, "none", head, raw, growing, None)  # type: ignore[arg-type]
            _checked(record, size, expected)
        except BaseException as exc:
            growing.finish(exc)
            raise
        growing.finish()
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
            return _record(key, kind, raw, raw, kind, diff_id)
        out = _Hashing(spool)
        # Uncompressed input is its own diff_id: hash it once, not twice.
        plain = raw if kind == "none" else _Hashing(compression.decompressor(kind, raw))  # type: ignore[arg-type]
        packer = compression.compressor(codec, out)
        while chunk := plain.read(CHUNK):
            self._guard(plain.count, raw.count, key)
            packer.write(chunk)
        packer.finish()
        return _record(key, kind, raw, out, codec.name, plain.digest)

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
            # Trusted: hashing the bytes is enough.
            self._copy(raw, spool)
            return None
        tee = _Tee(raw, spool)
        plain = _Hashing(compression.decompressor(kind, tee))  # type: ignore[arg-type]
        while plain.read(CHUNK):
            self._guard(plain.count, raw.count, key)
        while tee.read(CHUNK):  # trailing bytes after the compressed stream
            pass
        return plain.digest

    def _guard(self, count: int, compressed: int, key: str) -> None:
        if count > RATIO_FLOOR and count > self.max_ratio * max(compressed, 1):
            raise TooLarge(
                f"layer {short(key)} inflates more than {self.max_ratio}:1 "
                f"({count >> 20} MiB from {max(compressed >> 10, 1)} KiB read): a decompression "
                "bomb? (set SHIPIT_MAX_LAYER_RATIO to allow more)"
            )
        if count > self.max_layer:
            raise TooLarge(
                f"layer {short(key)} decompresses beyond {self.max_layer} bytes "
                "(set SHIPIT_MAX_LAYER_SIZE to allow more)"
            )


def _dropped(
    key: str, kind: str, expected: str, size: int, head: bytes, body: Readable
) -> BlobRecord:
    """A blob no sink takes (every one holds it): read past and counted, not hashed.
    Its bytes reach nothing: the targets' own copies are what the image uses, as a
    ``docker load`` uses a layer it has without opening the archive's, and what landed
    is checked against the config's diff_ids. (Hashing 700 MB nobody takes cost a
    redeploy 0.2 s on two cores, beside the engine streaming its save.)"""
    count = len(head)
    while chunk := body.read(CHUNK):
        count += len(chunk)
    if count != size:
        raise BadInput(f"blob {key}: read {count} bytes, tar says {size}")
    layer = kind != "none" or _is_tar(head)
    return BlobRecord(
        key=key,
        source_digest=expected,
        source_size=count,
        source_compression=kind,
        digest=expected,
        size=count,
        compression=kind,
        diff_id=expected if layer and kind == "none" else None,
    )


def _record(
    key: str, kind: str, raw: _Hashing, out: _Hashing, compression: str, diff_id: str | None
) -> BlobRecord:
    """A blob as read (``raw``, compressed as ``kind``) and as written (``out``)."""
    return BlobRecord(
        key=key,
        source_digest=raw.digest,
        source_size=raw.count,
        source_compression=kind,
        digest=out.digest,
        size=out.count,
        compression=compression,
        diff_id=diff_id,
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


@dataclass(frozen=True)
class WrittenManifest:
    """A manifest as the sinks get it: its new descriptor (the index entry's platform and
    annotations carried over), and the manifest it was made from."""

    descriptor: Descriptor
    manifest: ImageManifest
    platform: Platform | None
    attests: str | None = None  # an attestation: the (new) digest of the manifest it is about


@dataclass(frozen=True)
class WrittenIndex:
    descriptor: Descriptor
    raw: bytes
    children: tuple[WrittenManifest | WrittenIndex | Descriptor, ...]  # Descriptor: absent


WrittenNode = WrittenManifest | WrittenIndex


@dataclass(frozen=True)
class WrittenImage:
    names: tuple[str, ...]
    root: WrittenNode

    def entries(self) -> list[WrittenManifest | Descriptor]:
        """Every manifest of the tree, present or absent (a Descriptor), top-down."""
        out: list[WrittenManifest | Descriptor] = []
        stack: list[WrittenNode | Descriptor] = [self.root]
        while stack:
            node = stack.pop(0)
            if isinstance(node, WrittenIndex):
                stack.extend(node.children)
            else:
                out.append(node)
        return out

    def present(self) -> list[WrittenManifest]:
        """The image manifests the archive holds (attestations not counted)."""
        return [e for e in self.entries() if isinstance(e, WrittenManifest) and not e.attests]

    def absent_platforms(self) -> list[Platform]:
        return [
            p
            for e in self.entries()
            if isinstance(e, Descriptor)
            and not is_attestation(e.annotations)
            and (p := Platform.from_json(e.platform)) is not None
        ]


@dataclass
class Rewritten:
    """The whole tree with every changed digest carried up: what the documents became."""

    images: list[WrittenImage]
    documents: dict[str, bytes]  # digest → bytes of every config, manifest and index

    def shape(self, layout: Layout) -> Output:
        return _shape(self, layout)


@dataclass(frozen=True)
class Layout:
    """What a sink reads, and which platforms go to it.

    ``platforms`` None takes every platform present (an archive); ``indexes`` False means
    one manifest per image (a classic store); ``manifest_json`` writes the legacy file,
    which names the manifest for ``default`` (or the first platform) of each image.
    """

    platforms: tuple[Platform, ...] | None = None
    indexes: bool = True
    manifest_json: bool = True
    default: Platform = field(default_factory=Platform.host)
    full_repo_tags: bool = False
    """``manifest.json`` names images by full reference (``docker.io/library/rosie:latest``),
    not the familiar form ``docker load`` reads (Podman would put ``localhost/`` in front)."""
    one_index_entry: bool = False
    """``index.json`` names each image once, by its first name (Podman reads an OCI archive
    only when its index has one entry; it gets the other names by ``podman tag``)."""


@dataclass(frozen=True)
class Landed:
    """One image as written for a sink: its names, its top descriptor and its manifests."""

    names: tuple[str, ...]
    root: Descriptor
    manifests: tuple[ImageManifest, ...]

    @property
    def runnable(self) -> ImageManifest | None:
        return self.manifests[0] if self.manifests else None


@dataclass
class Output:
    """Documents to write after the blobs, and the two top-level files, for one sink."""

    documents: dict[str, bytes]  # digest → bytes (configs, manifests, indexes)
    index_json: bytes
    manifest_json: bytes | None
    images: list[Landed]
    notes: list[str] = field(default_factory=list)


def rewrite(images: list[Image], scan: Scan) -> Rewritten:
    """New manifests and indexes for the blobs as written, for every image of the archive."""
    documents: dict[str, bytes] = {}
    written = [WrittenImage(i.names, _rewrite_node(i.root, None, scan, documents)) for i in images]
    return Rewritten(written, documents)


def output(images: list[Image], scan: Scan, layout: Layout | None = None) -> Output:
    """``rewrite`` and ``shape`` in one: the output for a single sink."""
    return rewrite(images, scan).shape(layout or Layout())


def _rewrite_node(
    node: ImageManifest | ImageIndex,
    entry: Descriptor | None,
    scan: Scan,
    documents: dict[str, bytes],
) -> WrittenNode:
    if isinstance(node, ImageManifest):
        new = _rewrite_manifest(node, scan, documents)
        platform = Platform.from_json(entry.platform if entry else None) or Platform.from_json(
            node.config.value
        )
        if entry is not None:
            new = Descriptor(
                new.media_type, new.digest, new.size, entry.annotations, entry.platform
            )
        return WrittenManifest(new, node, platform)
    children: list[WrittenNode | Descriptor] = []
    renamed: dict[str, str] = {}
    for child in node.children:
        if isinstance(child, Descriptor):
            children.append(child)  # another platform, not in the archive: kept as is
            continue
        assert child.descriptor is not None
        written = _rewrite_node(child, child.descriptor, scan, documents)
        renamed[child.descriptor.digest] = written.descriptor.digest
        children.append(written)
    # An attestation names the manifest it is about by digest: follow a rewritten one.
    children = [_follow_reference(c, renamed) for c in children]
    changed = [_descriptor(c) for c in children] != list(index_children(node.document, "index"))
    if not changed:
        documents[node.document.digest] = node.document.raw
        return WrittenIndex(node.descriptor, node.document.raw, tuple(children))
    doc = _index_document(node.document.value, [_descriptor(c) for c in children])
    documents[doc.digest] = doc.raw
    desc = Descriptor(OCI_INDEX, doc.digest, doc.size, node.descriptor.annotations)
    return WrittenIndex(desc, doc.raw, tuple(children))


def _follow_reference(
    child: WrittenNode | Descriptor, renamed: dict[str, str]
) -> WrittenNode | Descriptor:
    desc = _descriptor(child)
    about = desc.annotations.get(REFERENCE_DIGEST) if is_attestation(desc.annotations) else None
    if about is None or isinstance(child, WrittenIndex):
        return child
    new_about = renamed.get(about, about)
    if isinstance(child, Descriptor):
        if new_about == about:
            return child
        return replace(child, annotations={**child.annotations, REFERENCE_DIGEST: new_about})
    new = replace(child.descriptor, annotations={**desc.annotations, REFERENCE_DIGEST: new_about})
    return replace(child, descriptor=new, attests=new_about)


def _descriptor(node: WrittenNode | Descriptor) -> Descriptor:
    return node if isinstance(node, Descriptor) else node.descriptor


def _index_document(value: dict[str, Any], children: list[Descriptor]) -> Document:
    value = dict(value)
    value["mediaType"] = OCI_INDEX
    value["manifests"] = [c.to_json() for c in children]
    return Document.build(value)


def _rewrite_manifest(node: ImageManifest, scan: Scan, documents: dict[str, bytes]) -> Descriptor:
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


# Shaping for one sink -----------------------------------------------------------------


def _shape(rewritten: Rewritten, layout: Layout) -> Output:
    documents: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    legacy: list[dict[str, Any]] = []
    landed: list[Landed] = []
    notes: list[str] = []
    for image in rewritten.images:
        if layout.platforms is None and layout.indexes:
            chosen = image.present()
            root = _whole(image.root, rewritten, documents)
        else:
            chosen = _choose(image, layout)
            root = _root_for(image, chosen, layout, rewritten, documents, notes)
            for manifest in chosen:
                _keep_manifest(manifest, rewritten, documents)
        landed.append(Landed(image.names, root, tuple(m.manifest for m in chosen)))
        entries.extend(
            _index_entries(root, image.names[:1] if layout.one_index_entry else image.names)
        )
        legacy_one = _legacy_choice(chosen, layout)
        if layout.manifest_json and legacy_one is not None:
            _add_legacy(
                legacy,
                blob_path(legacy_one.manifest.config.digest),
                [blob_path(d) for d in _manifest_layer_digests(legacy_one, rewritten)],
                list(image.names)
                if layout.full_repo_tags
                else [familiar_ref(n) for n in image.names],
            )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    manifest_json = None
    if layout.manifest_json:
        manifest_json = Document.build(legacy).raw if legacy else b"[]"  # type: ignore[arg-type]
    return Output(documents, Document.build(index).raw, manifest_json, landed, notes)


def _choose(image: WrittenImage, layout: Layout) -> list[WrittenManifest]:
    """The manifests of ``image`` for the layout's platforms (PlatformMissing if absent)."""
    present = image.present()
    if layout.platforms is None:
        one = _legacy_choice(present, layout)
        return [one] if one is not None else []
    chosen: list[WrittenManifest] = []
    for wanted in layout.platforms:
        found = next((m for m in present if m.platform is None or m.platform.matches(wanted)), None)
        if found is None:
            raise PlatformMissing(_missing_message(image, wanted))
        if found not in chosen:
            chosen.append(found)
    if not layout.indexes and len(chosen) > 1:
        raise UsageError(
            f"{_name(image)}: the target keeps one platform per image; "
            f"asked for {', '.join(str(p) for p in layout.platforms)}"
        )
    return chosen


def _missing_message(image: WrittenImage, wanted: Platform) -> str:
    has = ", ".join(sorted({str(m.platform) for m in image.present() if m.platform})) or "none"
    absent = sorted({str(p) for p in image.absent_platforms()} - set(has.split(", ")))
    tail = f" (named but not in the archive: {', '.join(absent)})" if absent else ""
    return f"{_name(image)} has no {wanted} manifest; it has {has}{tail}"


def _name(image: WrittenImage) -> str:
    return familiar_ref(image.names[0]) if image.names else "the untagged image"


def _root_for(
    image: WrittenImage,
    chosen: list[WrittenManifest],
    layout: Layout,
    rewritten: Rewritten,
    documents: dict[str, bytes],
    notes: list[str],
) -> Descriptor:
    """What index.json names for this image: the one manifest (single-platform sinks, or a
    lone manifest), else an index of exactly what is chosen and present, in its order."""
    root = image.root
    if not layout.indexes or isinstance(root, WrittenManifest):
        return _bare(chosen[0].descriptor) if chosen else _bare(_descriptor(root))
    kept = {m.descriptor.digest for m in chosen}
    keep: list[WrittenManifest] = []
    for entry in image.entries():
        desc = _descriptor(entry)
        if not is_attestation(desc.annotations):
            if desc.digest in kept and isinstance(entry, WrittenManifest):
                keep.append(entry)
            continue
        about = desc.annotations.get(REFERENCE_DIGEST)
        if about not in kept:
            continue
        if isinstance(entry, WrittenManifest):
            keep.append(entry)
            _keep_manifest(entry, rewritten, documents)
        else:
            notes.append(
                f"{_name(image)}: left out the attestation of {short(about or '')}: "
                "its blobs are not in the archive"
            )
    children = [m.descriptor for m in keep]
    if children == [_descriptor(c) for c in root.children]:
        documents[root.descriptor.digest] = root.raw
        return _bare(root.descriptor)
    doc = _index_document(parse_object(root.raw, "index"), children)
    documents[doc.digest] = doc.raw
    return Descriptor(OCI_INDEX, doc.digest, doc.size)


def _whole(node: WrittenNode, rewritten: Rewritten, documents: dict[str, bytes]) -> Descriptor:
    """The tree as rewritten, every platform it names kept (absent ones stay named)."""
    if isinstance(node, WrittenManifest):
        _keep_manifest(node, rewritten, documents)
        return _bare(node.descriptor)
    documents[node.descriptor.digest] = node.raw
    for child in node.children:
        if not isinstance(child, Descriptor):
            _whole(child, rewritten, documents)
    return _bare(node.descriptor)


def _bare(desc: Descriptor) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size)


def _keep_manifest(
    manifest: WrittenManifest, rewritten: Rewritten, documents: dict[str, bytes]
) -> None:
    """Add a manifest's own document, its config and its JSON layers to ``documents``."""
    node = manifest.manifest
    for digest in (manifest.descriptor.digest, node.config.digest, *(x.key for x in node.layers)):
        raw = rewritten.documents.get(digest)
        if raw is not None:
            documents.setdefault(digest, raw)


def _legacy_choice(chosen: list[WrittenManifest], layout: Layout) -> WrittenManifest | None:
    if not chosen:
        return None
    return next(
        (m for m in chosen if m.platform is None or m.platform.matches(layout.default)), chosen[0]
    )


def _manifest_layer_digests(manifest: WrittenManifest, rewritten: Rewritten) -> list[str]:
    value = parse_object(rewritten.documents[manifest.descriptor.digest], "manifest")
    return [str(layer["digest"]) for layer in value.get("layers", [])]


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
