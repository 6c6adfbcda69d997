"""A corpus of hostile and broken archives, generated from imagefactory's tiny images.

Each ``Case`` is one archive that every archive command (``inspect``, ``verify``,
``convert``, ``load``) must refuse with a one-line ``BadInput`` naming the problem.
``expect`` is a regex the error line must match.

A few cases damage only the compressed bytes *inside* a layer whose digest still holds
(truncated layer streams, decompression bombs). Only a command that decompresses the
layer can see that: ``verify`` always does, ``convert``/``load`` do when they recompress
it (``codec`` names a compression that forces it), and ``inspect`` never does — by design
it checks digests, not diff_ids. Those cases say ``inside_layer=True``.

Decompression bombs assume ``SHIPIT_MAX_LAYER_SIZE`` = ``MAX_LAYER`` (the tests set it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zstandard
from imagefactory import legacy_archive, oci_archive, sample_images, sha, tar_bytes

#: The layer size limit the tests configure (the sample layers are ~100 kB).
MAX_LAYER = 4 << 20
#: How far a bomb decompresses: 64 times the limit.
BOMB_SIZE = 64 * MAX_LAYER

REG = tarfile.REGTYPE


# Archives as editable entry lists ---------------------------------------------------


@dataclass
class Entry:
    name: str
    data: bytes = b""
    type: bytes = REG
    linkname: str = ""


@dataclass
class Archive:
    """An archive's entries, in order, with helpers that keep digests consistent."""

    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> Archive:
        out = cls()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                content = b""
                if member.isreg():
                    f = tar.extractfile(member)
                    assert f is not None
                    content = f.read()
                out.entries.append(Entry(member.name, content, member.type, member.linkname))
        return out

    def copy(self) -> Archive:
        return Archive([replace(e) for e in self.entries])

    def find(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def drop(self, name: str) -> None:
        self.entries = [e for e in self.entries if e.name != name]

    def doc(self, name: str) -> Any:
        return json.loads(self.find(name).data)

    def blob(self, digest: str) -> bytes:
        return self.find(blob_name(digest)).data

    # OCI layout navigation (first image of sample_images: rosie, two layers)
    def manifest_digest(self, n: int = 0) -> str:
        return self.doc("index.json")["manifests"][n]["digest"]

    def manifest(self, n: int = 0) -> dict[str, Any]:
        return json.loads(self.blob(self.manifest_digest(n)))

    def layer_digest(self, i: int = 0, n: int = 0) -> str:
        return self.manifest(n)["layers"][i]["digest"]

    def config_digest(self, n: int = 0) -> str:
        return self.manifest(n)["config"]["digest"]

    def set_blob(self, digest: str, data: bytes) -> str:
        """Replace blob ``digest`` with ``data`` under its new digest, and repoint every
        document that referred to it (which changes their digests in turn)."""
        new = sha(data)
        entry = self.find(blob_name(digest))
        entry.name, entry.data = blob_name(new), data
        if new != digest:
            self._repoint(digest, new, len(data))
        return new

    def edit_blob(self, digest: str, edit: Callable[[Any], Any]) -> str:
        value = json.loads(self.blob(digest))
        value = edit(value) or value
        return self.set_blob(digest, dumps(value))

    def edit_doc(self, name: str, edit: Callable[[Any], Any]) -> None:
        entry = self.find(name)
        value = json.loads(entry.data)
        entry.data = dumps(edit(value) or value)

    def _repoint(self, old: str, new: str, size: int) -> None:
        for entry in list(self.entries):
            if entry.type != REG or old[7:].encode() not in entry.data:
                continue
            try:
                value = json.loads(entry.data)
            except ValueError:
                continue
            value = _swap(value, old, new, size)
            if entry.name.startswith("blobs/sha256/"):
                self.set_blob("sha256:" + entry.name[13:], dumps(value))
            else:
                entry.data = dumps(value)

    def tar(self, fmt: int = tarfile.GNU_FORMAT) -> bytes:
        return write_tar(self.entries, fmt)


def _swap(value: Any, old: str, new: str, size: int) -> Any:
    if isinstance(value, dict):
        out = {k: _swap(v, old, new, size) for k, v in value.items()}
        if out.get("digest") == new:
            out["size"] = size
        return out
    if isinstance(value, list):
        return [_swap(v, old, new, size) for v in value]
    if isinstance(value, str):
        return value.replace(old, new).replace(blob_name(old), blob_name(new))
    return value


def blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def write_tar(entries: list[Entry], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.type
            info.linkname = entry.linkname
            info.mode = 0o644
            if entry.type == REG:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                if entry.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                    info.devmajor, info.devminor = 1, 3
                tar.addfile(info)
    return buf.getvalue()


def header_offsets(data: bytes) -> Iterator[tuple[int, tarfile.TarInfo]]:
    """Offsets of each member's header block in a tar (GNU long names included)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            yield member.offset, member


def fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block[:512])


# Bases --------------------------------------------------------------------------------


def oci(layer_compression: str = "none") -> Archive:
    return Archive.parse(oci_archive(sample_images(), layer_compression))


def containerd() -> Archive:
    return Archive.parse(oci_archive(sample_images(), "gzip", docker_types=True))


def legacy() -> Archive:
    return Archive.parse(legacy_archive(sample_images()))


def legacy_layer_paths(arch: Archive) -> list[str]:
    return arch.doc("manifest.json")[0]["Layers"]


def legacy_symlinks(arch: Archive) -> list[Entry]:
    return [e for e in arch.entries if e.type == tarfile.SYMTYPE]


# Compression helpers --------------------------------------------------------------------


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def zeros_stream(kind: str, size: int) -> tuple[bytes, str]:
    """``size`` zero bytes compressed (a bomb), and the sha256 of what it expands to."""
    chunk = bytes(1 << 20)
    hasher = hashlib.sha256()
    out = io.BytesIO()
    if kind == "gzip":
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        for _ in range(size // len(chunk)):
            out.write(packer.compress(chunk))
            hasher.update(chunk)
        out.write(packer.flush())
    else:
        with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as writer:
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                hasher.update(chunk)
    return out.getvalue(), "sha256:" + hasher.hexdigest()


# The cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]
    expect: str  # regex the one error line must match
    inside_layer: bool = False  # damage only decompressing the layer reveals
    codec: str | None = None  # convert/load compression that recompresses the bad layer


CASES: list[Case] = []


def case(expect: str, *, inside_layer: bool = False, codec: str | None = None):
    def register(fn: Callable[[], bytes]) -> Callable[[], bytes]:
        name = fn.__name__.removeprefix("case_").replace("_", "-")
        CASES.append(Case(name, fn, expect, inside_layer, codec))
        return fn

    return register


# Names -------------------------------------------------------------------------------


@case(r"absolute path")
def case_absolute_path() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("/tmp/shipit-pwned", b"pwned"))
    return arch.tar()


@case(r"points outside the archive")
def case_dotdot_path() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("../shipit-pwned", b"pwned"))
    return arch.tar()


@case(r"points outside the archive")
def case_long_name_dotdot() -> bytes:
    # > 100 characters: a GNU long-name entry carries the real name.
    arch = oci()
    arch.entries.insert(0, Entry("a" * 120 + "/../../../../shipit-pwned", b"pwned"))
    return arch.tar(tarfile.GNU_FORMAT)


@case(r"absolute path")
def case_pax_path_absolute() -> bytes:
    # A pax header's path overrides the (harmless) name in the ustar header.
    arch = oci()
    arch.entries.insert(0, Entry("/tmp/" + "é" * 60 + "/shipit-pwned", b"pwned"))
    return arch.tar(tarfile.PAX_FORMAT)


@case(r"not acceptable")
def case_backslash_path() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("..\\..\\shipit-pwned", b"pwned"))
    return arch.tar()


@case(r"entry name 'blobs/sha256/[0-9a-f]{64}\\n' is not acceptable")
def case_newline_in_entry_name() -> bytes:
    # "$" in a pattern matches before a trailing newline; the error must stay one line.
    arch = oci()
    arch.find(blob_name(arch.layer_digest())).name += "\n"
    return arch.tar()


@case(r"config 'evil\\nline.json' is missing from the archive")
def case_newline_in_manifest_json_path() -> bytes:
    arch = legacy()
    arch.edit_doc("manifest.json", lambda m: [{**m[0], "Config": "evil\nline.json"}, *m[1:]])
    return arch.tar()


@case(r"too large")
def case_huge_long_name() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("x" * (2 << 20), b"pwned"))
    return arch.tar(tarfile.GNU_FORMAT)


# Links and special files ---------------------------------------------------------------


@case(r"is a symlink")
def case_symlink_blob() -> bytes:
    arch = oci()
    layer = arch.find(blob_name(arch.layer_digest()))
    layer.type, layer.linkname, layer.data = tarfile.SYMTYPE, "/etc/passwd", b""
    return arch.tar()


@case(r"points outside the archive")
def case_symlink_layer_absolute() -> bytes:
    arch = legacy()
    legacy_symlinks(arch)[0].linkname = "/etc/passwd"
    return arch.tar()


@case(r"points outside the archive")
def case_symlink_layer_escapes() -> bytes:
    arch = legacy()
    legacy_symlinks(arch)[0].linkname = "../../../../etc/passwd"
    return arch.tar()


@case(r"missing from the archive")
def case_symlink_layer_dangling() -> bytes:
    arch = legacy()
    legacy_symlinks(arch)[0].linkname = "../" + "0" * 64 + "/layer.tar"
    return arch.tar()


@case(r"appears twice in the archive with different content")
def case_symlink_layer_loop() -> bytes:
    # a -> b -> a, and a regular file under a's name as well.
    arch = legacy()
    first, second = legacy_layer_paths(arch)
    a, b = arch.find(first), arch.find(second)
    arch.entries.remove(a)
    arch.entries.remove(b)
    arch.entries[:0] = [
        Entry(first, type=tarfile.SYMTYPE, linkname="../" + second),
        Entry(second, type=tarfile.SYMTYPE, linkname="../" + first),
        a,
        b,
    ]
    return arch.tar()


@case(r"hardlink")
def case_hardlink_blob() -> bytes:
    arch = oci()
    layer = arch.find(blob_name(arch.layer_digest(1)))
    layer.type, layer.linkname, layer.data = tarfile.LNKTYPE, "/etc/passwd", b""
    return arch.tar()


@case(r"special file")
def case_char_device() -> bytes:
    arch = oci()
    layer = arch.find(blob_name(arch.layer_digest()))
    layer.type, layer.data = tarfile.CHRTYPE, b""
    return arch.tar()


@case(r"special file")
def case_fifo() -> bytes:
    arch = legacy()
    arch.entries.insert(0, Entry("manifest.json", type=tarfile.FIFOTYPE))
    return arch.tar()


# Content that does not match its name, size or config -----------------------------------


@case(r"content has digest .* not sha256:")
def case_layer_digest_mismatch() -> bytes:
    arch = oci()
    layer = arch.find(blob_name(arch.layer_digest()))
    data = bytearray(layer.data)
    data[600] ^= 0xFF
    layer.data = bytes(data)
    return arch.tar()


@case(r"content has digest .* not sha256:")
def case_config_digest_mismatch() -> bytes:
    arch = oci()
    config = arch.find(blob_name(arch.config_digest()))
    config.data = config.data.replace(b"/app/hello", b"/bin/evil!")
    return arch.tar()


@case(r"descriptor says")
def case_layer_descriptor_size() -> bytes:
    arch = oci()

    def grow(manifest: dict[str, Any]) -> None:
        manifest["layers"][0]["size"] += 7

    arch.edit_blob(arch.manifest_digest(), grow)
    return arch.tar()


@case(r"descriptor says")
def case_index_entry_size() -> bytes:
    arch = oci()

    def grow(index: dict[str, Any]) -> None:
        for entry in index["manifests"]:
            entry["size"] += 1

    arch.edit_doc("index.json", grow)
    return arch.tar()


@case(r"config says")
def case_diff_ids_mismatch() -> bytes:
    arch = oci()

    def swap(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"].reverse()

    arch.edit_blob(arch.config_digest(), swap)
    return arch.tar()


@case(r"2 layers but 1 diff_ids")
def case_diff_ids_count() -> bytes:
    arch = oci()

    def drop(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"].pop()

    arch.edit_blob(arch.config_digest(), drop)
    return arch.tar()


@case(r"config says")
def case_legacy_layer_not_its_diff_id() -> bytes:
    # A legacy layer.tar has no digest in its name: only the config's diff_id names it.
    arch = legacy()
    layer = arch.find(legacy_layer_paths(arch)[1])
    layer.data = tar_bytes({"app/hello": b"Goodbye!\n"})
    return arch.tar()


@case(r"config .* has digest")
def case_legacy_config_not_its_name() -> bytes:
    arch = legacy()
    config = arch.find(arch.doc("manifest.json")[0]["Config"])
    config.data = config.data.replace(b"/app/hello", b"/bin/evil!")
    return arch.tar()


# Truncation and corrupt compression ---------------------------------------------------------


@case(r"truncated")
def case_truncated_tar_mid_blob() -> bytes:
    data = oci().tar()
    offset = dict((m.name, o) for o, m in header_offsets(data))
    return data[: offset["index.json"] - 1000]


@case(r"truncated")
def case_truncated_tar_mid_header() -> bytes:
    data = oci().tar()
    offsets = [o for o, _ in header_offsets(data)]
    return data[: offsets[3] + 200]


@case(r"neither index.json nor manifest.json")
def case_tar_cut_at_entry() -> bytes:
    # Cut exactly before index.json's header: a valid prefix that lacks the index.
    data = oci().tar()
    offset = dict((m.name, o) for o, m in header_offsets(data))
    return data[: offset["oci-layout"]]


@case(r"corrupt gzip stream.*truncated")
def case_truncated_gzip_outer() -> bytes:
    data = gz(oci().tar())
    return data[: len(data) * 2 // 3]


@case(r"corrupt zstd stream.*truncated")
def case_truncated_zstd_outer() -> bytes:
    data = zst(oci().tar())
    return data[: len(data) * 2 // 3]


@case(r"corrupt xz stream")
def case_truncated_xz_outer() -> bytes:
    data = lzma.compress(oci().tar())
    return data[: len(data) // 2]


@case(r"corrupt gzip stream|content has digest")
def case_corrupt_gzip_outer() -> bytes:
    data = bytearray(gz(oci().tar()))
    data[len(data) // 2] ^= 0x55
    data[len(data) // 2 + 1] ^= 0xAA
    return bytes(data)


@case(r"corrupt gzip stream: .*[Ii]nvalid deflate block")
def case_invalid_deflate_block_outer() -> bytes:
    # The first deflate block header says BTYPE=11 (reserved).
    data = bytearray(gz(oci().tar()))
    data[10] = 0xFF
    return bytes(data)


@case(r"corrupt gzip stream: .*[Ii]nvalid deflate block", inside_layer=True, codec="zstd")
def case_invalid_deflate_block_layer() -> bytes:
    arch = containerd()
    digest = arch.layer_digest()
    data = bytearray(arch.blob(digest))
    data[10] = 0xFF
    arch.set_blob(digest, bytes(data))
    return arch.tar()


@case(r"corrupt gzip stream.*truncated", inside_layer=True, codec="zstd")
def case_truncated_gzip_layer() -> bytes:
    arch = containerd()
    digest = arch.layer_digest()
    arch.set_blob(digest, arch.blob(digest)[:-300])
    return arch.tar()


@case(r"corrupt zstd stream.*truncated", inside_layer=True, codec="gzip")
def case_truncated_zstd_layer() -> bytes:
    arch = oci("zstd")
    digest = arch.layer_digest()
    arch.set_blob(digest, arch.blob(digest)[:-100])
    return arch.tar()


def _bomb(kind: str) -> bytes:
    # Consistent in every digest and diff_id: only the size of what it expands to is wrong.
    arch = oci(kind)
    bomb, diff_id = zeros_stream(kind, BOMB_SIZE)

    def expands_to_bomb(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"][1] = diff_id

    arch.edit_blob(arch.config_digest(), expands_to_bomb)
    arch.set_blob(arch.layer_digest(1), bomb)
    return arch.tar()


@case(r"decompresses beyond \d+ bytes", inside_layer=True, codec="zstd")
def case_bomb_gzip_layer() -> bytes:
    return _bomb("gzip")


@case(r"decompresses beyond \d+ bytes", inside_layer=True, codec="gzip")
def case_bomb_zstd_layer() -> bytes:
    return _bomb("zstd")


# Documents ------------------------------------------------------------------------------


@case(r"index.json: invalid JSON")
def case_invalid_json_index() -> bytes:
    arch = oci()
    arch.find("index.json").data = b'{"schemaVersion": 2, "manifests": [}'
    return arch.tar()


@case(r"invalid JSON")
def case_invalid_json_manifest_blob() -> bytes:
    arch = oci()
    arch.set_blob(arch.manifest_digest(), b'{"schemaVersion": 2, "layers": [,]}')
    return arch.tar()


@case(r"invalid JSON")
def case_json_bad_utf8() -> bytes:
    arch = oci()
    arch.set_blob(
        arch.config_digest(), arch.blob(arch.config_digest()).replace(b"amd64", b"\xff\xfe")
    )
    return arch.tar()


@case(r"nested deeper than")
def case_deeply_nested_config() -> bytes:
    arch = oci()
    deep = b'{"rootfs": {"diff_ids": []}, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    arch.set_blob(arch.config_digest(), deep)
    return arch.tar()


@case(r"too large")
def case_huge_json_index() -> bytes:
    arch = oci()
    index = arch.doc("index.json")
    index["padding"] = "x" * (9 << 20)
    arch.find("index.json").data = dumps(index)
    return arch.tar()


@case(r"not a JSON document of at most 8 MiB")
def case_huge_json_manifest_blob() -> bytes:
    arch = oci()

    def pad(manifest: dict[str, Any]) -> None:
        manifest["annotations"] = {"padding": "x" * (9 << 20)}

    arch.edit_blob(arch.manifest_digest(), pad)
    return arch.tar()


@case(r"expected a list of objects")
def case_manifest_json_not_a_list() -> bytes:
    arch = legacy()
    arch.find("manifest.json").data = b'{"Config": "x.json", "Layers": []}'
    return arch.tar()


# Media types ----------------------------------------------------------------------------


@case(r"unsupported media type 'application/vnd.oci.image.layer.v1.tar\+gzip'")
def case_media_type_layer_in_index() -> bytes:
    # index.json says its entry is a layer; it is a manifest.
    arch = oci()

    def retype(index: dict[str, Any]) -> None:
        for entry in index["manifests"]:
            entry["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"

    arch.edit_doc("index.json", retype)
    return arch.tar()


@case(r"descriptor says media type '.*index.*', document says '.*manifest.*'")
def case_media_type_manifest_called_index() -> bytes:
    arch = oci()

    def retype(index: dict[str, Any]) -> None:
        for entry in index["manifests"]:
            entry["mediaType"] = "application/vnd.oci.image.index.v1+json"

    arch.edit_doc("index.json", retype)
    return arch.tar()


@case(r"descriptor says media type '.*manifest.*', document says '.*index.*'")
def case_media_type_disagrees_with_document() -> bytes:
    # The descriptor says image manifest; the document says it is an index.
    arch = oci()
    arch.edit_blob(
        arch.manifest_digest(),
        lambda m: {**m, "mediaType": "application/vnd.oci.image.index.v1+json"},
    )
    return arch.tar()


@case(r"invalid mediaType")
def case_media_type_not_a_string() -> bytes:
    # No mediaType in the descriptor, and a document whose own mediaType is an object.
    arch = oci()

    def untype(index: dict[str, Any]) -> None:
        for entry in index["manifests"]:
            del entry["mediaType"]

    arch.edit_doc("index.json", untype)
    arch.edit_blob(arch.manifest_digest(), lambda m: {**m, "mediaType": {"evil": 1}})
    return arch.tar()


# References to what is not there ------------------------------------------------------------


@case(r"missing from the archive")
def case_index_points_at_missing_manifest() -> bytes:
    arch = oci()
    arch.drop(blob_name(arch.manifest_digest()))
    return arch.tar()


@case(r"missing from the archive")
def case_manifest_points_at_missing_layer() -> bytes:
    arch = oci()
    arch.drop(blob_name(arch.layer_digest(1)))
    return arch.tar()


@case(r"missing from the archive")
def case_manifest_json_points_at_missing_layer() -> bytes:
    arch = legacy()
    arch.drop(legacy_layer_paths(arch)[1])
    return arch.tar()


@case(r"neither index.json nor manifest.json")
def case_no_index_no_manifest() -> bytes:
    arch = oci()
    arch.drop("index.json")
    arch.drop("manifest.json")
    return arch.tar()


@case(r"holds no image")
def case_empty_index() -> bytes:
    arch = oci()
    arch.drop("manifest.json")
    arch.edit_doc("index.json", lambda i: {**i, "manifests": []})
    return arch.tar()


# The same name twice ----------------------------------------------------------------------


@case(r"appears twice")
def case_index_json_twice() -> bytes:
    arch = oci()
    index = arch.find("index.json")
    other = json.loads(index.data)
    other["manifests"] = other["manifests"][:1]
    arch.entries.append(Entry("index.json", dumps(other)))
    return arch.tar()


@case(r"second copy does not match|content has digest")
def case_layer_blob_twice() -> bytes:
    arch = oci()
    name = blob_name(arch.layer_digest())
    arch.entries.append(Entry(name, tar_bytes({"bin/sh": b"evil"})))
    return arch.tar()


@case(r"appears twice")
def case_legacy_layer_twice() -> bytes:
    arch = legacy()
    path = legacy_layer_paths(arch)[1]
    arch.entries.append(Entry(path, tar_bytes({"bin/sh": b"evil"})))
    return arch.tar()


@case(r"appears twice in the archive with different content")
def case_legacy_layer_file_then_symlink() -> bytes:
    arch = legacy()
    first, second = legacy_layer_paths(arch)
    arch.entries.append(Entry(second, type=tarfile.SYMTYPE, linkname="../" + first))
    return arch.tar()


# Digest algorithms and malformed digests ------------------------------------------------------


@case(r"digest algorithm 'sha512' is not supported")
def case_blob_named_sha512() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("blobs/sha512/" + hashlib.sha512(b"x").hexdigest(), b"x"))
    return arch.tar()


@case(r"digest algorithm 'sha512' is not supported")
def case_descriptor_sha512() -> bytes:
    arch = oci()

    def sha512(manifest: dict[str, Any]) -> None:
        manifest["layers"][0]["digest"] = "sha512:" + hashlib.sha512(b"x").hexdigest()

    arch.edit_blob(arch.manifest_digest(), sha512)
    return arch.tar()


@case(r"not a sha256 digest")
def case_blob_name_bad_hex() -> bytes:
    arch = oci()
    arch.entries.insert(0, Entry("blobs/sha256/" + "G" * 64, b"x"))
    return arch.tar()


@case(r"not a sha256 digest")
def case_descriptor_bad_hex() -> bytes:
    arch = oci()
    arch.edit_doc(
        "index.json",
        lambda i: {**i, "manifests": [{**i["manifests"][0], "digest": "sha256:" + "AB" * 32}]},
    )
    return arch.tar()


@case(r"diff_id .* not a sha256 digest|not supported")
def case_diff_id_malformed() -> bytes:
    arch = oci()

    def bad(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"][0] = "md5:d41d8cd98f00b204e9800998ecf8427e"

    arch.edit_blob(arch.config_digest(), bad)
    return arch.tar()


@case(r"layer path 'blobs/sha256/\.\./\.\./etc/passwd'.* is not a sha256 digest")
def case_manifest_json_layer_path_bad_hex() -> bytes:
    # Engine 25+ classic layout read through manifest.json alone (no index.json).
    arch = oci()
    arch.drop("index.json")

    def escape(manifest: list[dict[str, Any]]) -> None:
        manifest[0]["Layers"][1] = "blobs/sha256/../../etc/passwd"

    arch.edit_doc("manifest.json", escape)
    return arch.tar()


# Not an archive at all ------------------------------------------------------------------------


@case(r"the archive is empty")
def case_empty_file() -> bytes:
    return b""


@case(r"not a tar archive")
def case_not_a_tar() -> bytes:
    return b"Hello, I am a text file and not an image archive.\n" * 20


@case(r"not a tar archive")
def case_random_bytes() -> bytes:
    return hashlib.shake_256(b"shipit").digest(4096)


@case(r"not a tar archive")
def case_gzip_of_garbage() -> bytes:
    return gz(b"{}" * 2000)


@case(r"not a tar archive, or a corrupt one")
def case_bad_header_checksum() -> bytes:
    data = bytearray(oci().tar())
    offset = [o for o, _ in header_offsets(bytes(data))][2]
    data[offset + 5] ^= 0x01  # the name changes; the checksum does not
    return bytes(data)


@case(r"corrupt pax header")
def case_pax_size_not_a_number() -> bytes:
    data = bytearray(oci().tar())
    # A pax header block whose size record is not a number, before the first member.
    record = b"size=12abc\n"
    record = b"%d %s" % (len(record) + 3, record)
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = len(record)
    block = header.tobuf(tarfile.USTAR_FORMAT)
    payload = record + bytes(-len(record) % 512)
    return block + payload + bytes(data)


@case(r"corrupt tar header: .* has a negative size")
def case_negative_member_size() -> bytes:
    data = bytearray(oci().tar())
    block = bytearray(data[:512])
    block[124:136] = b"\xff" * 12  # base-256: -1
    fix_checksum(block)
    data[:512] = block
    return bytes(data)


# Odd but valid: what the checks above must not refuse -------------------------------------


def _odd_layer_image() -> list[Any]:
    images = sample_images()
    # An uncompressed layer whose first entry's name starts like JSON.
    images[0].layers[1] = tar_bytes({"[weird]/file": b"hi\n", "{x}": b"y"})
    return images


ACCEPTED: dict[str, Callable[[], bytes]] = {
    "oci-layer-starting-with-bracket": lambda: oci_archive(_odd_layer_image()),
    "legacy-layer-starting-with-bracket": lambda: legacy_archive(_odd_layer_image()),
    "legacy-symlinked-layers": lambda: legacy().tar(),
    "buildx-attestation-manifest": lambda: _with_attestation(),
    "containerd-gzip": lambda: containerd().tar(),
    "oci-zstd-gzip-wrapped": lambda: gz(oci("zstd").tar()),
    "legacy-pax-zstd-wrapped": lambda: zst(legacy().tar(tarfile.PAX_FORMAT)),
}


def _with_attestation() -> bytes:
    """A containerd-store save of a buildx image: the image index also holds a provenance
    attestation manifest whose one layer is an in-toto JSON statement."""
    arch = Archive.parse(oci_archive(sample_images()[:1], "gzip", nested=True))
    statement = dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": []})
    config = dumps(
        {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha(statement)]},
        }
    )
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.in-toto+json",
                    "digest": sha(statement),
                    "size": len(statement),
                }
            ],
        }
    )
    for data in (statement, config, manifest):
        arch.entries.insert(0, Entry(blob_name(sha(data)), data))

    def attach(index: dict[str, Any]) -> None:
        index["manifests"].append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {
                    "vnd.docker.reference.digest": index["manifests"][0]["digest"],
                    "vnd.docker.reference.type": "attestation-manifest",
                },
                "platform": {"architecture": "unknown", "os": "unknown"},
            }
        )

    arch.edit_blob(arch.manifest_digest(), attach)
    return arch.tar()


#: Valid archives shipit refuses today (tests mark them xfail, strict).
ACCEPTED_BUT_REFUSED: dict[str, tuple[Callable[[], bytes], str]] = {}


def writer(folder: Path) -> Callable[[Case], Path]:
    """``path(case)``: the case's archive in ``folder``, built on first use."""

    def path(case: Case) -> Path:
        target = folder / f"{case.name}.tar"
        if not target.exists():
            target.write_bytes(case.build())
        return target

    return path


def by_name() -> dict[str, Case]:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    return {c.name: c for c in CASES}
