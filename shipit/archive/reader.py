"""Read any archive ``docker save`` has produced, as a stream, in bounded memory.

Layouts: Engine ≤ 24 legacy (``<id>/layer.tar``, ``<hex>.json``, ``manifest.json``),
Engine 25+ OCI layout with ``manifest.json``, containerd-store saves (Docker media types
inside an OCI index, nested indexes), shipit's own output, the other writers' archives
(see docs/archives.md): skopeo/podman ``docker-archive`` (layers as top-level
``<digest>.tar``), go-containerregistry tarballs (``<digest>.tar.gz`` layers, config named
``sha256:<digest>``), OCI archives without ``manifest.json``; and any of these wrapped in
gzip or zstd. Entries are taken in whatever order the tar has them: small JSON documents
are kept in memory, every other blob is handed to a ``BlobHandler`` while it streams past.

Nothing from an archive is ever extracted to a path: blobs go to anonymous temp files,
so a hostile name cannot write anywhere; such names are refused all the same.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from shipit import compression
from shipit.compression import Readable, Reader
from shipit.errors import BadInput, DigestMismatch, ShipitError, TooLarge, UnsafeArchive
from shipit.oci import MAX_DOCUMENT, Document, short

CHUNK = 1 << 20
_BLOB = re.compile(r"\Ablobs/([^/]+)/([^/]+)\Z")
# Top-level files named by their own digest: containers/image (skopeo, podman) writes
# layers as <hex>.tar, go-containerregistry as <hex>.tar.gz and its config as sha256:<hex>.
_NAMED_BY_DIGEST = re.compile(r"\A(?:([0-9a-f]{64})\.tar(?:\.gz)?|sha256:([0-9a-f]{64}))\Z")
_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no entry shipit reads has one in its name
_TOP_DOCS = {"index.json", "manifest.json", "oci-layout", "repositories"}


@dataclass(frozen=True, kw_only=True)
class BlobRecord:
    """What became of one blob of the archive (a layer or other non-JSON blob)."""

    key: str  # source digest for OCI blobs, the member path for legacy layer files
    source_digest: str
    source_size: int
    source_compression: str
    digest: str  # of the bytes the sink will get
    size: int
    compression: str
    diff_id: str | None = None  # sha256 of the uncompressed tar, when it was computed
    remembered: bool = False  # described from the memo (shipit.memo), not compressed again

    @property
    def rewritten(self) -> bool:
        return self.digest != self.source_digest

    @classmethod
    def plain_layer(cls, key: str, digest: str, size: int) -> BlobRecord:
        """An uncompressed layer passed on as it is: its digest is its diff_id."""
        return cls(
            key=key,
            source_digest=digest,
            source_size=size,
            source_compression="none",
            digest=digest,
            size=size,
            compression="none",
            diff_id=digest,
        )


class BlobHandler(Protocol):
    def __call__(
        self, key: str, expected: str | None, size: int, head: bytes, body: Readable
    ) -> BlobRecord:
        """Consume one blob: ``head`` is its first bytes, ``body`` yields the rest."""
        ...


@dataclass
class Scan:
    """Everything an archive held, keyed for building the image model."""

    documents: dict[str, Document] = field(default_factory=dict)  # by digest
    top: dict[str, bytes] = field(default_factory=dict)  # index.json, manifest.json, ...
    legacy_configs: dict[str, Document] = field(default_factory=dict)  # by member path
    blobs: dict[str, BlobRecord] = field(default_factory=dict)  # by key
    # symlinked layer path → target, and digest-named member path → its digest
    aliases: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # blob keys in arrival order
    #: Members read past unused (bounded): a manifest.json naming one of them is in a
    #: layout shipit does not read, which is worth saying instead of "missing".
    ignored: set[str] = field(default_factory=set)

    def resolve(self, key: str) -> str:
        """The key a member path is kept under (following symlinks and digest names)."""
        seen: set[str] = set()
        while key in self.aliases and key not in seen:
            seen.add(key)
            key = self.aliases[key]
        return key

    def blob(self, key: str) -> BlobRecord | None:
        return self.blobs.get(self.resolve(key))


class CountingReader(Reader):
    """Counts the bytes pulled through it and reports them (for progress)."""

    def __init__(self, src: Readable, on_read: Callable[[int], None] | None = None) -> None:
        self._src = src
        self._on_read = on_read
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self.count += len(data)
        if self._on_read and data:
            self._on_read(len(data))
        return data


class _Prefixed(Reader):
    """A reader that first returns ``head`` then the rest of ``src`` (to undo a peek)."""

    def __init__(self, head: bytes, src: Readable) -> None:
        self._head = head
        self._src = src

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                head, self._head = self._head, b""
                return head + (self._src.read(size - len(head)) if size > len(head) else b"")
            head, self._head = self._head[:size], self._head[size:]
            return head
        return self._src.read(size)


def read_exactly(src: Readable, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        chunk = src.read(min(left, CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def unwrap(src: Readable) -> Readable:
    """Undo an outer gzip or zstd around the tar (detected from the bytes)."""
    head = read_exactly(src, 512)
    if not head:
        raise BadInput("the archive is empty")
    kind = compression.detect(head)
    stream: Readable = _Prefixed(head, src)
    if kind != "none":
        stream = compression.decompressor(kind, stream)
    return stream


def _member_name(raw: str) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if not name or _CONTROL.search(name) or "\\" in name:
        raise UnsafeArchive(f"entry name {raw!r} is not acceptable")
    if name.startswith("/"):
        raise UnsafeArchive(f"entry {raw!r} has an absolute path")
    if ".." in name.split("/"):
        raise UnsafeArchive(f"entry {raw!r} points outside the archive")
    return name


# Names of unused members remembered for error messages: bounded in count and length
# (a GNU long name may be 1 MiB), so a hostile archive cannot make them eat memory.
_MAX_IGNORED = 4096
_MAX_IGNORED_NAME = 1024
_ZERO_BLOCK = bytes(512)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_MAX_META = 1 << 20  # longest GNU long name or pax header block accepted


def _members(stream: Readable) -> Iterator[tuple[tarfile.TarInfo, str, Readable | None]]:
    """Tar entries straight off the stream.

    tarfile's own stream mode copies every byte through its buffers; this reads each
    header block with ``TarInfo.frombuf`` (checksums checked) and hands member data out
    as read from the source, which is what makes a multi-GB archive cheap to pass through.
    """
    overrides: dict[str, str] = {}
    while True:
        block = read_exactly(stream, 512)
        if not block or block == _ZERO_BLOCK:
            if not block and overrides:
                raise BadInput("the tar archive is truncated")
            return  # end of archive (what follows the end marker is padding)
        if len(block) < 512:
            raise BadInput("the tar archive is truncated")
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise BadInput(f"not a tar archive, or a corrupt one: {exc}") from None
        if info.size < 0:
            raise BadInput(f"corrupt tar header: entry {info.name!r} has a negative size")
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE):
            data = _meta(stream, info.size)
            if info.type == tarfile.XHDTYPE:
                overrides.update(_pax_records(data))
            else:
                key = "path" if info.type == tarfile.GNUTYPE_LONGNAME else "linkpath"
                overrides[key] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        if info.type == tarfile.XGLTYPE:
            _meta(stream, info.size)  # global pax headers carry nothing shipit uses
            continue
        if "path" in overrides:
            info.name = overrides["path"]
        if "linkpath" in overrides:
            info.linkname = overrides["linkpath"]
        if "size" in overrides:
            try:
                info.size = int(overrides["size"])
            except ValueError:
                raise BadInput("corrupt pax header: size is not a number") from None
            if info.size < 0:
                raise BadInput("corrupt pax header: size is negative")
        overrides = {}
        name = _member_name(info.name)
        size = info.size if info.type in _REGULAR else 0
        body = _MemberBody(stream, size, name)
        yield info, name, (body if info.type in _REGULAR else None)
        body.finish()


def _meta(stream: Readable, size: int) -> bytes:
    if size > _MAX_META:
        raise BadInput(f"tar metadata entry of {size} bytes is too large")
    data = read_exactly(stream, size + (-size % 512))
    if len(data) != size + (-size % 512):
        raise BadInput("the tar archive is truncated")
    return data[:size]


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BadInput("corrupt pax header") from None
        if space < 0 or length <= 0 or pos + length > len(data):
            raise BadInput("corrupt pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class _MemberBody(Reader):
    """Exactly one member's bytes, read from the archive stream as they come."""

    def __init__(self, stream: Readable, size: int, name: str) -> None:
        self._stream = stream
        self._left = size
        self._padding = -size % 512
        self._name = name

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(want)
        if not data:
            raise BadInput(f"{self._name}: the tar archive is truncated")
        self._left -= len(data)
        return data

    def finish(self) -> None:
        """Skip what the consumer did not read, and the padding to the next header."""
        while self._left > 0:
            self.read(CHUNK)
        if self._padding and len(read_exactly(self._stream, self._padding)) != self._padding:
            raise BadInput(f"{self._name}: the tar archive is truncated")


def _read_document(body: Readable, size: int, name: str) -> bytes:
    if size > MAX_DOCUMENT:
        raise TooLarge(f"{name}: {size} bytes is too large for a JSON document")
    data = read_exactly(body, size)
    if len(data) != size:
        raise BadInput(f"{name}: the tar archive is truncated")
    return data


def _looks_like_json(head: bytes) -> bool:
    # An uncompressed layer whose first entry is named "[…" or "{…" starts like JSON too.
    return head.lstrip()[:1] in (b"{", b"[") and not _is_tar_header(head)


def _is_tar_header(head: bytes) -> bool:
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def scan(src: Readable, handle_blob: BlobHandler) -> Scan:
    """Read an archive stream to its end, handing each non-document blob to ``handle_blob``.

    Every blob named by digest is verified against it; a legacy layer file's digest is
    computed here and checked against the config's diff_ids when the model is built.
    """
    result = Scan()
    seen_files: dict[str, str] = {}  # member path → sha256 of what it held
    for member, name, body in _members(unwrap(src)):
        if member.isdir():
            continue
        if member.issym():
            _add_alias(result, seen_files, name, member.linkname)
            continue
        if body is None:
            kind = "hardlink" if member.islnk() else "special file"
            raise UnsafeArchive(f"entry {name!r} is a {kind}; shipit reads regular files only")
        try:
            _take(result, seen_files, name, member.size, body, handle_blob)
        except ShipitError as exc:
            if name in str(exc):
                raise
            raise exc.context(name) from None
    return result


def _add_alias(result: Scan, seen_files: dict[str, str], name: str, target: str) -> None:
    # Engine ≤ 24 writes a symlink for a layer.tar whose content another layer has;
    # Podman one for every layer.tar, to the <diff_id>.tar beside manifest.json.
    if not name.endswith("/layer.tar"):
        raise UnsafeArchive(f"entry {name!r} is a symlink; only legacy layer.tar may be one")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if target.startswith("/") or resolved.startswith("..") or resolved == name:
        raise UnsafeArchive(f"symlink {name!r} -> {target!r} points outside the archive")
    # A name is a link or a file, once: a file under a link's name would make links loop.
    if seen_files.setdefault(name, f"-> {resolved}") != f"-> {resolved}":
        raise BadInput(f"{name}: appears twice in the archive with different content")
    result.aliases[name] = resolved


def _take(
    result: Scan,
    seen_files: dict[str, str],
    name: str,
    size: int,
    body: Readable,
    handle_blob: BlobHandler,
) -> None:
    blob = _BLOB.match(name)
    named = _NAMED_BY_DIGEST.match(name)
    if name in _TOP_DOCS or (not blob and name.endswith(".json") and "/" not in name):
        data = _read_document(body, size, name)
        _same_once(seen_files, name, hashlib.sha256(data).hexdigest())
        if name in _TOP_DOCS:
            result.top[name] = data
        else:
            result.legacy_configs[name] = Document.parse(data, name)
        return
    if blob:
        algo, hexpart = blob.groups()
        if algo != "sha256":
            raise BadInput(f"digest algorithm {algo!r} is not supported")
        if not _HEX64.match(hexpart):
            raise BadInput("blob name is not a sha256 digest")
        expected: str | None = f"sha256:{hexpart}"
    elif named:
        # Verified against the digest its name claims, then found by that name.
        expected = f"sha256:{named.group(1) or named.group(2)}"
        if name != expected:
            result.aliases[name] = expected
    elif name.endswith("/layer.tar") and name.count("/") == 1:
        expected = None
    else:
        # Legacy leftovers (<id>/json, <id>/VERSION) and unknown extras: dropped.
        if len(result.ignored) < _MAX_IGNORED and len(name) <= _MAX_IGNORED_NAME:
            result.ignored.add(name)
        return
    key = expected or name
    head = read_exactly(body, min(size, 512))
    if expected and (expected in result.blobs or expected in result.documents):
        _skip_duplicate(result, seen_files, name, expected, size, head, body)
        return
    if size <= MAX_DOCUMENT and _looks_like_json(head):
        data = head + read_exactly(body, size - len(head))
        if len(data) != size:
            raise BadInput("the tar archive is truncated")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected and digest != expected:
            raise DigestMismatch(f"content has digest {short(digest)}, not {short(expected)}")
        _same_once(seen_files, name, digest)
        if expected:
            result.documents[expected] = Document.parse(data, name)
            return
        # A legacy layer.tar that is JSON is not a layer; keep it as an opaque blob below.
        body = _Prefixed(data, body)
        head = b""
    record = handle_blob(key, expected, size, head, body)
    _same_once(seen_files, name, record.source_digest)
    result.blobs[key] = record
    result.order.append(key)


def _skip_duplicate(
    result: Scan,
    seen_files: dict[str, str],
    name: str,
    digest: str,
    size: int,
    head: bytes,
    body: Readable,
) -> None:
    # The same name twice: allowed only with the same content (it is then read once).
    hasher = hashlib.sha256(head)
    left = size - len(head)
    while left > 0:
        chunk = body.read(min(left, CHUNK))
        if not chunk:
            raise BadInput("the tar archive is truncated")
        hasher.update(chunk)
        left -= len(chunk)
    if "sha256:" + hasher.hexdigest() != digest:
        raise DigestMismatch(f"second copy does not match digest {short(digest)}")
    _same_once(seen_files, name, digest.split(":", 1)[1] if ":" in digest else digest)


def _same_once(seen_files: dict[str, str], name: str, digest: str) -> None:
    digest = digest.split(":", 1)[-1]
    previous = seen_files.setdefault(name, digest)
    if previous != digest:
        raise BadInput("appears twice in the archive with different content")
