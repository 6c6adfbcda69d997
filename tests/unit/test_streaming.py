"""An uncompressed layer named by its digest streams to the sink while it is still being
read, and is still checked: when its bytes do not match its name, the sink's archive is
cut off before the documents that would make it an image."""

from __future__ import annotations

import io
import os
import threading

import pytest
from imagefactory import TestImage, oci_archive, read_tar, sha, tar_bytes, validate

from shipit.errors import DigestMismatch, ShipitError
from shipit.pipeline import Result, convert_stream
from shipit.transform import LayerPolicy

BIG = 8 << 20  # bytes of the layer's one file: several of the reader's chunks


def _image() -> TestImage:
    return TestImage(["big:1"], [tar_bytes({"blob.bin": os.urandom(BIG)})])


class _HeldSource(io.RawIOBase):
    """The archive, handed out up to ``hold_at`` and then only once ``go`` is set (or
    after a timeout, so a pipeline that does not stream fails instead of hanging)."""

    def __init__(self, data: bytes, hold_at: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.hold_at = hold_at
        self.go = threading.Event()
        self.waited_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._pos >= self.hold_at and not self.go.is_set():
            self.waited_out = not self.go.wait(10)
        end = len(self._data) if self.go.is_set() else self.hold_at
        n = min(len(buffer), end - self._pos) or min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_a_plain_layer_reaches_the_sink_before_it_has_been_read_whole() -> None:
    image = _image()
    data = oci_archive([image])
    layer = image.layers[0]
    start = bytes(data).find(layer[:4096])
    assert start > 0
    source = _HeldSource(data, hold_at=start + len(layer) // 2)
    out = bytearray()
    for chunk in convert_stream(io.BufferedReader(source), LayerPolicy(), Result()):
        out += chunk
        if layer[:4096] in out:
            source.go.set()  # the sink has layer bytes while half of it is unread
    assert not source.waited_out, "the layer was sent only after it had been read whole"
    assert read_tar(bytes(out))[f"blobs/sha256/{sha(layer)[7:]}"] == layer
    validate(bytes(out))


def test_a_streamed_layer_that_does_not_match_its_name_cuts_the_archive_off() -> None:
    image = _image()
    layer = image.layers[0]
    data = bytearray(oci_archive([image]))
    at = bytes(data).find(layer[:4096]) + len(layer) // 2
    data[at] ^= 0xFF  # same size, other bytes: found only once the layer is all read
    out = bytearray()
    with pytest.raises(DigestMismatch, match="content has digest"):
        for chunk in convert_stream(io.BytesIO(bytes(data)), LayerPolicy(), Result()):
            out += chunk
    assert b"index.json" not in out and b"manifest.json" not in out


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shipit-hash"]


def test_a_large_blob_hashed_on_its_own_thread_leaves_none_behind_on_any_path() -> None:
    image = _image()  # its layer is past HASH_BEHIND_FROM: hashed on a thread of its own
    data = oci_archive([image])
    out = b"".join(convert_stream(io.BytesIO(data), LayerPolicy(), Result()))
    assert read_tar(out)[f"blobs/sha256/{sha(image.layers[0])[7:]}"] == image.layers[0]
    assert not _hash_threads()
    cut = data[: data.find(image.layers[0][:4096]) + len(image.layers[0]) // 2]
    with pytest.raises(ShipitError, match="truncated"):
        b"".join(convert_stream(io.BytesIO(cut), LayerPolicy(), Result()))
    assert not _hash_threads()
