"""source → image model → transforms → sink, with reading and writing overlapped.

A producer thread reads the source archive and recompresses each layer into an anonymous
temp file (the tar header that follows needs its size); the calling thread writes each
finished blob to the sink while the next one is being read. When the source ends, the
tree is rewritten and the documents, ``index.json`` and ``manifest.json`` follow.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from shipit.archive import model
from shipit.archive.reader import BlobRecord, CountingReader, Scan, scan
from shipit.archive.writer import OCI_LAYOUT, TarStream
from shipit.compression import Readable, Reader
from shipit.progress import Event, Progress
from shipit.transform import LayerPolicy, Output, rewrite

#: Finished blobs waiting for the sink. They sit in temp files, so this bounds disk use,
#: not memory; it lets compression run ahead of a slow sink by a few layers.
READY_DEPTH = 3


class _Cancelled(Exception):
    pass


@dataclass
class Result:
    """What a conversion did, filled in as the stream is consumed."""

    images: list[model.Image] = field(default_factory=list)
    blobs: list[BlobRecord] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # digests of blobs written to the sink
    skipped: list[str] = field(default_factory=list)  # digests the sink already had
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    output: Output | None = None
    scan: Scan | None = None


class _Producer(threading.Thread):
    def __init__(self, src: Readable, policy: LayerPolicy, allow_missing: frozenset[str]) -> None:
        super().__init__(name="shipit-reader", daemon=True)
        self.src = src
        self.policy = policy
        self.allow_missing = allow_missing
        self.ready: queue.Queue[tuple[str, Any]] = queue.Queue(READY_DEPTH)
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            self.policy.on_blob = lambda record: self._put(("blob", record))
            scanned = scan(self.src, self.policy)
            images = model.build(scanned, allow_missing=self.allow_missing)
            self._put(("done", (scanned, images, rewrite(images, scanned))))
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, which raises it
            with contextlib.suppress(_Cancelled):
                self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> None:
        while True:
            if self.cancel.is_set():
                if item[0] == "blob" and item[1].spool is not None:
                    item[1].spool.close()
                raise _Cancelled()
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        self.cancel.set()
        # Free whatever finished blobs are still queued (their temp files vanish on close).
        while True:
            try:
                kind, value = self.ready.get_nowait()
            except queue.Empty:
                break
            if kind == "blob" and value.spool is not None:
                value.spool.close()
        self.join(timeout=5)


def convert_stream(
    src: Readable,
    policy: LayerPolicy,
    result: Result,
    *,
    progress: Progress | None = None,
    send_blob: Callable[[BlobRecord], bool] = lambda record: True,
    allow_missing: frozenset[str] = frozenset(),
    manifest_json: bool = True,
) -> Generator[bytes, None, None]:
    """Yield the output archive's bytes; ``result`` is complete when the iterator ends.

    ``send_blob`` may decline a blob the sink already has; the manifests still list it.
    """
    emit = progress.emit if progress else (lambda event: None)
    counting = CountingReader(src, lambda n: emit(Event("read", n)))
    producer = _Producer(counting, policy, allow_missing)
    tar = TarStream()
    started = time.monotonic()

    def out(data: bytes) -> bytes:
        result.bytes_out += len(data)
        return data

    producer.start()
    try:
        yield out(tar.start())
        while True:
            kind, value = producer.ready.get()
            if kind == "error":
                raise value
            if kind == "done":
                result.scan, result.images, result.output = value
                break
            record: BlobRecord = value
            result.blobs.append(record)
            emit(Event("blob", record.size, record=record))
            try:
                if record.digest in tar.written:
                    continue
                if not send_blob(record):
                    result.skipped.append(record.digest)
                    continue
                assert record.spool is not None
                result.sent.append(record.digest)
                for chunk in tar.blob(record.digest, record.size, record.spool):
                    emit(Event("sent", len(chunk)))
                    yield out(chunk)
            finally:
                if record.spool is not None:
                    record.spool.close()
        assert result.output is not None
        for digest, raw in result.output.documents.items():
            yield out(tar.blob_bytes(digest, raw))
        yield out(tar.data("oci-layout", OCI_LAYOUT))
        yield out(tar.data("index.json", result.output.index_json))
        if manifest_json:
            yield out(tar.data("manifest.json", result.output.manifest_json))
        yield out(tar.end())
    finally:
        producer.stop()
        result.bytes_in = counting.count
        result.seconds = time.monotonic() - started


def scan_only(src: Readable, policy: LayerPolicy, progress: Progress | None = None) -> Result:
    """Read an archive without writing one (inspect, verify)."""
    emit = progress.emit if progress else (lambda event: None)
    policy.spool = False
    policy.on_blob = lambda record: emit(Event("blob", record.size, record=record))
    counting = CountingReader(src, lambda n: emit(Event("read", n)))
    started = time.monotonic()
    scanned = scan(counting, policy)
    images = model.build(scanned)
    return Result(
        images=images,
        blobs=[scanned.blobs[key] for key in scanned.order],
        bytes_in=counting.count,
        seconds=time.monotonic() - started,
        output=rewrite(images, scanned),
        scan=scanned,
    )


class IterReader(Reader):
    """A file-like reader over an iterator of byte chunks (e.g. an HTTP response)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
            if size < 0:
                continue
        if size < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:size], self._buf[size:]
        return data


class Sink(Protocol):
    """Where an archive goes. Sinks say what they can read; the pipeline asks."""

    @property
    def name(self) -> str: ...

    @property
    def readable(self) -> frozenset[str]: ...

    def consume(self, chunks: Iterable[bytes]) -> Any: ...


def run(
    src: Readable,
    sink: Sink,
    policy: LayerPolicy,
    *,
    progress: Progress | None = None,
    send_blob: Callable[[BlobRecord], bool] = lambda record: True,
    allow_missing: frozenset[str] = frozenset(),
) -> tuple[Result, Any]:
    """Convert ``src`` into ``sink``; returns the result and whatever the sink reported."""
    result = Result()
    stream: Generator[bytes, None, None] = convert_stream(
        src, policy, result, progress=progress, send_blob=send_blob, allow_missing=allow_missing
    )
    try:
        reply = sink.consume(stream)
    finally:
        stream.close()
    return result, reply
