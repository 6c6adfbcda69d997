"""Layer compression: detect by magic bytes, read any, write gzip, zstd or none.

Compression is detected from the bytes, never from names or media types (the engines
do the same). Output is deterministic: the same input and settings give the same bytes,
so a re-converted archive has the same digests.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import os
import queue
import threading
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import zstandard
from isal import igzip, isal_zlib

from shipit.errors import BadInput, UsageError

Kind = Literal["none", "gzip", "zstd", "bzip2", "xz"]
WRITABLE = ("zstd", "gzip", "none")

_MAGIC: list[tuple[bytes, Kind]] = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class Reader(io.RawIOBase):
    """Base of shipit's stream wrappers: subclasses define ``read``; ``readinto`` follows,
    so codecs that want a raw file (gzip, bz2) can read through them."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def detect(head: bytes) -> Kind:
    """Compression of a stream from its first bytes ('none' when no magic matches)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


@dataclass(frozen=True)
class Codec:
    """A layer compression setting: ``zstd`` level 3 on all cores, gzip level 1, or none."""

    name: Literal["none", "gzip", "zstd"]
    level: int | None = None
    threads: int = 0  # zstd workers; 0 means one per core, plus one

    @classmethod
    def parse(cls, name: str, level: int | None = None, threads: int = 0) -> Codec:
        if name not in WRITABLE:
            raise UsageError(f"unknown compression {name!r} (choose zstd, gzip or none)")
        codec = cls(name, level, threads)  # type: ignore[arg-type]
        codec.effective_level()  # validate now, not halfway through a transfer
        return codec

    def effective_level(self) -> int:
        if self.name == "zstd":
            level = 3 if self.level is None else self.level
            if not 1 <= level <= 22:
                raise UsageError(f"zstd level must be 1..22, not {level}")
            return level
        if self.name == "gzip":
            level = 1 if self.level is None else self.level
            if not 1 <= level <= 9:
                raise UsageError(f"gzip level must be 1..9, not {level}")
            return level
        return 0

    def effective_threads(self) -> int:
        # One worker more than cores: the calling thread spends its time hashing and
        # parsing, and zstd's job hand-off stalls without a spare worker (measured on 2
        # cores: 160 MB/s with 2 workers, 430 MB/s with 3).
        return self.threads or (os.cpu_count() or 1) + 1

    def __str__(self) -> str:
        return self.name if self.name == "none" else f"{self.name}:{self.effective_level()}"


class Compressor(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...


class _ZstdCompressor:
    def __init__(self, codec: Codec, out: Writable) -> None:
        # threads >= 1 always: zstd's multi-threaded format is identical for any worker
        # count, so output does not depend on the machine's cores.
        cctx = zstandard.ZstdCompressor(
            level=codec.effective_level(), threads=max(1, codec.effective_threads())
        )
        self._writer = cctx.stream_writer(out, closefd=False, write_return_read=True)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def finish(self) -> None:
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()


def _gzip_stream(codec: Codec) -> Any:
    level = codec.effective_level()
    # ISA-L is 5x faster than zlib at its levels 1..3; zlib serves the higher ones.
    # wbits=31 writes a gzip header with mtime 0, so output is reproducible.
    if level <= 3:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    return zlib.compressobj(level, zlib.DEFLATED, 31)


class _GzipCompressor:
    def __init__(self, codec: Codec, out: Writable) -> None:
        self._obj = _gzip_stream(codec)
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(self._obj.compress(data))

    def finish(self) -> None:
        self._out.write(self._obj.flush())


class _Plain:
    def __init__(self, out: Writable) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def finish(self) -> None:
        pass


def compressor(codec: Codec, out: Writable) -> Compressor:
    """A writer that compresses into ``out`` (``finish`` ends the stream, not ``out``)."""
    if codec.name == "zstd":
        return _ZstdCompressor(codec, out)
    if codec.name == "gzip":
        return _GzipCompressor(codec, out)
    return _Plain(out)


#: Compressed pieces (of up to 1 MiB) an upload's compression may run ahead of its sending.
AHEAD = 4

#: From this zstd level on, an upload (the link-bound one) also matches repeats up to
#: 2^25 bytes back (long-distance matching). On the rig's 698 MB image of shared
#: libraries at level 6: 186.2 MB instead of 202.2 (-7.9 %), as fast (129 MB/s against
#: 133 on 2 threads), 73 MB peak RSS against 47. A 2^27 window saved 9.5 % for 185 MB.
LONG_FROM_LEVEL = 6
LONG_WINDOW_LOG = 25


#: One long-window compressor at a time: the next stage's upload waits up to LONG_WAIT
#: seconds for the one before to end its frame (over a link slow enough for it, its
#: compression is far ahead of the wire), else compresses without. Two at once took a
#: staged 2 GB upload to 268 MB RSS.
_LONG = threading.BoundedSemaphore(1)
LONG_WAIT = 5.0


class _FrameEnd(bytes):
    """See FRAME_END."""


#: Put among an upload's chunks: the zstd frame ends here, and what follows is compressed
#: by a new, small compressor. A stage's upload ends its frame after its layers, so its
#: large compressor is freed while its documents wait for the stage below. (Both the
#: engines and the zstd CLI read frames one after another; elsewhere it is an empty chunk.)
FRAME_END = _FrameEnd()


def compressed_chunks(
    chunks: Iterable[bytes], codec: Codec, counted: Callable[[int], None] = lambda n: None
) -> Generator[bytes, None, None]:
    """``chunks`` as one ``codec`` stream, e.g. a whole ``docker load`` upload; ``counted``
    hears each output size. Never yields an empty chunk (it would end a chunked body).

    The compression runs in a thread of its own, up to AHEAD pieces ahead: fed only
    between sends, zstd's workers waited for input while the link drained, and a
    100 Mbit/s upload ran 10 % below the link's rate. Close it when done with it: that
    returns only once the thread has let go of ``chunks`` (closed, if it was cut short)."""
    if codec.name == "none":
        yield from (data for data in chunks if data)
        return
    ready: queue.Queue[bytes | BaseException | None] = queue.Queue(AHEAD)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            with contextlib.closing(_compressed(chunks, codec)) as pieces:
                for data in pieces:
                    if data and not put(data):
                        return
            put(None)
        except BaseException as exc:  # handed to the sender, which raises it
            put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if stop.is_set() and close is not None:
                close()  # in this thread, the one that was running it

    thread = threading.Thread(target=run, name="shipit-upload-compressor", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            counted(len(item))
            yield item
    finally:
        stop.set()
        thread.join()


def _compressed(chunks: Iterable[bytes], codec: Codec) -> Generator[bytes, None, None]:
    if codec.name == "zstd":
        # Fixed 1 MiB outputs: joining zstd's bursts (a whole job at a time) into chunks of
        # every size cost 60-90 MB more peak RSS in a 2 GB upload (heap fragmentation).
        # 4 MiB jobs instead of zstd's 8: 62 MB instead of 104 per compressor (staged loads
        # run two or three at once) for 0.2 % more bytes, as fast. Nothing hashes these
        # bytes, so they need not match the layer compressor's.
        long = codec.effective_level() >= LONG_FROM_LEVEL and _LONG.acquire(timeout=LONG_WAIT)
        try:
            chunker = _upload_chunker(codec, long=long)
            for chunk in chunks:
                if chunk is FRAME_END:
                    yield from chunker.finish()
                    chunker = _upload_chunker(codec, long=False)  # the old one is freed
                    if long:
                        long = False
                        _LONG.release()
                        _trim()
                    continue
                yield from chunker.compress(chunk)
            yield from chunker.finish()
        finally:
            if long:
                _LONG.release()
    elif codec.name == "gzip":
        gzip = _gzip_stream(codec)
        for chunk in chunks:
            yield gzip.compress(chunk)
        yield gzip.flush()
    else:
        yield from chunks


def _trim() -> None:
    """Hand freed heap back to the system (glibc; elsewhere nothing): a freed long-window
    compressor otherwise stays in its thread's arena."""
    import ctypes

    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


def _upload_chunker(codec: Codec, *, long: bool) -> Any:
    """A zstd chunker for an upload: 1 MiB outputs, 4 MiB jobs (see ``_compressed``)."""
    extra: dict[str, Any] = {"enable_ldm": True, "window_log": LONG_WINDOW_LOG} if long else {}
    threads = max(1, codec.effective_threads())
    params = zstandard.ZstdCompressionParameters.from_level(
        codec.effective_level(), threads=threads, job_size=4 << 20, **extra
    )
    return zstandard.ZstdCompressor(compression_params=params).chunker(chunk_size=1 << 20)


#: Largest zstd window accepted when reading (a hostile frame could ask for 2 GiB+).
MAX_ZSTD_WINDOW = 1 << 27


def decompressor(kind: Kind, src: Readable) -> Readable:
    """A reader of the decompressed bytes of ``src``. Errors surface as BadInput on read."""
    if kind == "none":
        return src
    if kind == "gzip":
        return _Guarded(igzip.IGzipFile(fileobj=src, mode="rb"), "gzip")
    if kind == "zstd":
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
        # python-zstandard ends silently on a truncated frame; the walker notices.
        checked = _ZstdFramed(src)
        reader = dctx.stream_reader(checked, read_size=1 << 20, read_across_frames=True)  # type: ignore[arg-type]
        return _Guarded(reader, "zstd")
    if kind == "bzip2":
        return _Guarded(bz2.BZ2File(src, "rb"), "bzip2")  # type: ignore[call-overload]
    return _Guarded(lzma.LZMAFile(src, "rb"), "xz")  # type: ignore[arg-type]


#: ISA-L's own error ("Invalid deflate block found"), not a zlib.error (its stub calls it
#: an instance, hence the ignore).
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class _Guarded(Reader):
    """Turns a codec's own exceptions (truncation, corruption) into BadInput."""

    def __init__(self, inner: Any, kind: str) -> None:
        self._inner = inner
        self._kind = kind

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except (
            EOFError,
            OSError,
            zlib.error,
            _ISAL_ERROR,
            zstandard.ZstdError,
            lzma.LZMAError,
        ) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O error, not corrupt data
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, EOFError):
                detail = "stream is truncated"
            raise BadInput(f"corrupt {self._kind} stream: {detail}") from None

    def close(self) -> None:
        self._inner.close()


class _ZstdFramed(Reader):
    """Passes zstd bytes through while walking frame and block headers, so that a
    stream cut anywhere but a frame boundary is reported as truncated at EOF."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._need = 4  # bytes wanted into _buf for the current header
        self._buf = b""
        self._skip = 0  # payload bytes to pass without looking
        self._state = "magic"
        self._checksum = False
        self._started = False

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        if data:
            self._started = True
            self._walk(memoryview(data))
        elif self._started and (self._state != "magic" or self._skip or self._buf):
            raise BadInput("corrupt zstd stream: stream is truncated")
        return data

    def _walk(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), end - pos)
            self._buf += bytes(data[pos : pos + take])
            pos += take
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._header(header)

    def _header(self, h: bytes) -> None:
        state = self._state
        if state == "magic":
            if h == b"\x28\xb5\x2f\xfd":
                self._state, self._need = "fhd", 1
            elif h[1:] == b"\x2a\x4d\x18" and h[0] & 0xF0 == 0x50:
                self._state, self._need = "skippable", 4
            else:
                raise BadInput("corrupt zstd stream: bad frame magic")
        elif state == "skippable":
            self._skip = int.from_bytes(h, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = h[0]
            if fhd & 0x08:
                raise BadInput("corrupt zstd stream: reserved bit set in frame header")
            single = bool(fhd & 0x20)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            self._checksum = bool(fhd & 0x04)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._state, self._need = "block", 3
        elif state == "block":
            value = int.from_bytes(h, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise BadInput("corrupt zstd stream: reserved block type")
            self._skip = 1 if kind == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4
