"""Mutated archives against the reader: only ShipitError may come out, nothing may hang,
and nothing may be written outside the temp folder shipit was given.

Valid archives from imagefactory (every layout, plain and wrapped) are mutated by byte
flips, truncations, splices, and random tar entries (random names — hostile or
meaningful — random types, link targets and contents), then read by ``api.inspect``
(from a file), ``api.verify`` and the convert stream. Whatever convert accepts, shipit
must read back: its own output passes ``verify``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_corpus import Archive, Entry, gz, write_tar, zst
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from imagefactory import legacy_archive, oci_archive, sample_images, sha, tar_bytes

from shipit import api
from shipit.compression import Codec
from shipit.errors import ShipitError
from shipit.pipeline import Result, convert_stream, scan_only
from shipit.transform import LayerPolicy

#: Examples per run; SHIPIT_FUZZ_EXAMPLES=20000 for a long hunt.
EXAMPLES = int(os.environ.get("SHIPIT_FUZZ_EXAMPLES", "300"))
#: One example that takes longer than this is a hang, not a slow input.
HANG_SECONDS = 20


def _bases() -> dict[str, bytes]:
    images = sample_images()[:1]  # one image keeps examples small and fast
    legacy = legacy_archive(sample_images())
    return {
        "legacy": legacy,
        "oci": oci_archive(images),
        "containerd-gzip": oci_archive(images, "gzip", docker_types=True),
        "nested-zstd": oci_archive(images, "zstd", nested=True),
        "legacy-gzip-wrapped": gz(legacy),
        "oci-zstd-wrapped": zst(oci_archive(images, "gzip")),
    }


BASES = _bases()
PARSED = {name: Archive.parse(data) for name, data in BASES.items() if "wrapped" not in name}
KNOWN_NAMES = sorted({e.name for a in PARSED.values() for e in a.entries})


# Mutations -----------------------------------------------------------------------------


@st.composite
def flips(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(out) - 1))
        out[pos] ^= draw(st.integers(1, 255))
    return bytes(out)


@st.composite
def truncations(draw, data: bytes) -> bytes:
    # Near headers and the end are the interesting places; anywhere is allowed.
    cut = draw(
        st.one_of(
            st.integers(0, len(data)),
            st.integers(0, len(data) // 512).map(lambda n: n * 512),
            st.integers(0, 1024).map(lambda n: max(0, len(data) - n)),
        )
    )
    return data[:cut]


@st.composite
def splices(draw, data: bytes) -> bytes:
    pos = draw(st.integers(0, len(data)))
    kind = draw(st.sampled_from(["insert", "delete", "copy", "other-archive"]))
    if kind == "insert":
        return data[:pos] + draw(st.binary(min_size=1, max_size=600)) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + draw(st.integers(1, 2048)) :]
    if kind == "copy":
        start = draw(st.integers(0, len(data)))
        return data[:pos] + data[start : start + draw(st.integers(1, 4096))] + data[pos:]
    other = BASES[draw(st.sampled_from(sorted(BASES)))]
    start = draw(st.integers(0, len(other)))
    return data[:pos] + other[start:]


_TYPES = [
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.CONTTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
    tarfile.GNUTYPE_SPARSE,
    b"V",  # GNU volume header
    b"Z",  # unknown
]

_names = st.one_of(
    st.sampled_from(KNOWN_NAMES),
    st.sampled_from(
        [
            "index.json",
            "manifest.json",
            "oci-layout",
            "repositories",
            "../escape",
            "/etc/passwd",
            "./index.json",
            "blobs/sha256/..",
            "blobs/sha512/" + "a" * 128,
            "blobs/sha256/" + "0" * 64,
            "x/layer.tar",
            "x/../layer.tar",
            "a" * 150 + "/layer.tar",
            "é/layer.tar",
        ]
    ),
    st.text(min_size=1, max_size=40),
)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def contents(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "tar", "gzip", "zstd", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=700))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "empty":
        return b""
    layer = tar_bytes({draw(st.text(min_size=1, max_size=12)): draw(st.binary(max_size=64))})
    return {"tar": layer, "gzip": gz(layer), "zstd": zst(layer)}[kind]


@st.composite
def entry_edits(draw, base: Archive) -> bytes:
    arch = base.copy()
    for _ in range(draw(st.integers(1, 4))):
        action = draw(
            st.sampled_from(["add", "retype", "replace", "drop", "swap", "json", "document"])
        )
        entries = arch.entries
        if action == "add" or not entries:
            entry = Entry(draw(_names), draw(contents()), draw(st.sampled_from(_TYPES)))
            entry.linkname = draw(st.one_of(st.just(""), _names))
            entries.insert(draw(st.integers(0, len(entries))), entry)
            continue
        i = draw(st.integers(0, len(entries) - 1))
        if action == "retype":
            entries[i].type = draw(st.sampled_from(_TYPES))
            entries[i].linkname = draw(_names)
        elif action == "replace":
            entries[i].data = draw(contents())
        elif action == "drop":
            del entries[i]
        elif action == "swap":
            j = draw(st.integers(0, len(entries) - 1))
            entries[i], entries[j] = entries[j], entries[i]
        elif action == "json":
            entries[i].data = _edit_json(draw, entries[i].data)
        else:
            _edit_document(draw, arch)
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    try:
        return write_tar(arch.entries, fmt)
    except (ValueError, UnicodeError):  # a name ustar cannot hold: keep what we have
        return write_tar(arch.entries, tarfile.PAX_FORMAT)


def _edit_document(draw, arch: Archive) -> None:
    """Change a value in a JSON document and carry its new digest up the tree, so the
    archive stays consistent and the model's own checks are what must catch it."""
    documents = [e for e in arch.entries if e.type == tarfile.REGTYPE and e.data[:1] in b"{["]
    if not documents:
        return
    entry = draw(st.sampled_from(documents))
    data = _edit_json(draw, entry.data)
    if entry.name.startswith("blobs/sha256/"):
        arch.set_blob("sha256:" + entry.name[len("blobs/sha256/") :], data)
    else:
        entry.data = data


def _edit_json(draw, data: bytes) -> bytes:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return draw(contents())
    # Replace one value somewhere in the document (a digest, a size, a mediaType...).
    node, path = value, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append((node, key))
        node = node[key]
    if not path:
        return json.dumps(draw(_json_values)).encode()
    parent, key = path[-1]
    parent[key] = draw(
        st.one_of(
            _json_values,
            st.sampled_from(
                [
                    "sha256:" + "0" * 64,
                    "sha512:" + "0" * 128,
                    "sha256:" + "A" * 64,
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                    "blobs/sha256/../../etc/passwd",
                    "../" + "0" * 64 + "/layer.tar",
                    [],
                    {},
                    -1,
                    0,
                    2**63,
                ]
            ),
        )
    )
    return json.dumps(value).encode()


@st.composite
def mutated(draw) -> Mutant:
    return Mutant(draw(_mutated()))


@st.composite
def _mutated(draw) -> bytes:
    name = draw(st.sampled_from(sorted(BASES)))
    data = BASES[name]
    how = draw(st.sampled_from(["flip", "truncate", "splice", "entries", "entries+flip"]))
    if how == "flip":
        return draw(flips(data))
    if how == "truncate":
        return draw(truncations(data))
    if how == "splice":
        return draw(splices(data))
    base = PARSED.get(name) or PARSED[draw(st.sampled_from(sorted(PARSED)))]
    data = draw(entry_edits(base))
    return draw(flips(data)) if how == "entries+flip" else data


# The property ----------------------------------------------------------------------------


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    def fire(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def confined(root: Path) -> Iterator[Path]:
    """A fresh work folder as cwd, SHIPIT_TMPDIR and TMPDIR; asserts all stay empty
    (apart from the input) and that no temp file is still open afterwards."""
    work = Path(tempfile.mkdtemp(dir=root))
    tmp = work / "tmp"
    tmp.mkdir()
    saved = {k: os.environ.get(k) for k in ("SHIPIT_TMPDIR", "TMPDIR")}
    cwd = os.getcwd()
    os.environ["SHIPIT_TMPDIR"] = os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # gettempdir() caches; make it look again
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = None
    assert sorted(os.listdir(work)) == ["in.tar", "tmp"], os.listdir(work)
    assert os.listdir(tmp) == [], os.listdir(tmp)
    open_files = [
        target
        for fd in os.listdir("/proc/self/fd")
        if (target := _readlink(f"/proc/self/fd/{fd}")).startswith(str(work))
    ]
    assert open_files == [], open_files
    (work / "in.tar").unlink()
    tmp.rmdir()
    work.rmdir()


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _event(text: str) -> None:
    with contextlib.suppress(InvalidArgument):  # outside @given (the bases test)
        event(text)


class Mutant(bytes):
    """An input archive whose repr is short (Hypothesis prints failing examples)."""

    def __repr__(self) -> str:
        return f"Mutant(<{len(self)} bytes, {sha(self)[:19]}>)"


def _only_shipit_errors(root: Path, data: bytes) -> None:
    try:
        _check(root, data)
    except BaseException as exc:
        saved = root / f"failing-{sha(data)[7:19]}.tar"
        saved.write_bytes(data)
        exc.add_note(f"the input archive is saved as {saved}")
        raise


def _check(root: Path, data: bytes) -> None:
    with confined(root) as work, watchdog(HANG_SECONDS):
        path = work / "in.tar"
        path.write_bytes(data)
        try:
            api.inspect(str(path))
        except ShipitError as exc:
            _event(f"inspect: {type(exc).__name__}")
        try:
            api.verify(str(path))
            verified = True
        except ShipitError:
            verified = False
        try:
            result = Result()
            policy = LayerPolicy(Codec("gzip", level=1), max_layer=1 << 20)
            out = b"".join(convert_stream(io.BytesIO(data), policy, result))
        except ShipitError:
            return
        _event("convert accepted")
        # Accepted: shipit reads back what it wrote (every digest and size holds), and
        # what verify accepted converts into something verify accepts. (A compressed
        # layer convert passes through is not decompressed, so a layer that does not
        # match its diff_id is only caught where verify caught it in the input.)
        scan_only(io.BytesIO(out), LayerPolicy(None))
        if verified:
            scan_only(io.BytesIO(out), LayerPolicy(None, full=True))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated())
def test_mutated_archives_raise_only_shipit_errors(root: Path, data: bytes) -> None:
    _only_shipit_errors(root, data)


def test_bases_are_valid(root: Path) -> None:
    for data in BASES.values():
        _only_shipit_errors(root, data)
        scan_only(io.BytesIO(data), LayerPolicy(None, full=True))
    assert sha(BASES["oci"])  # the bases are real archives, not empty
