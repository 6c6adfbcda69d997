"""source → image model → transforms → sink(s), with reading and writing overlapped.

A producer thread reads the source archive and recompresses each layer into an anonymous
temp file (the tar header that follows needs its size); each sink's thread writes every
finished blob while the next one is being read. When the source ends, the tree is
rewritten and the documents, ``index.json`` and ``manifest.json`` follow.

One source can feed several sinks: the source is read once, each distinct layer
compression is produced once (one producer per compression, fed by a tee), and every
sink of a producer reads the same temp files at its own pace, choosing which blobs it
needs (a target that already has a layer is not sent it).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from shipit.archive import model
from shipit.archive.reader import CHUNK, BlobRecord, CountingReader, Scan, scan
from shipit.archive.writer import OCI_LAYOUT, TarStream
from shipit.compression import Readable, Reader
from shipit.errors import ShipitError
from shipit.progress import Event, Progress
from shipit.transform import LayerPolicy, Output, rewrite, spool_dir

#: Finished blobs a sink may fall behind by. They sit in temp files, so this bounds disk
#: use, not memory; it lets compression run ahead of a slow sink by a few layers.
READY_DEPTH = 4
#: Bytes of source a slower compression may fall behind a faster one (fan-out).
TEE_DEPTH = 16  # chunks of CHUNK bytes


class _Cancelled(Exception):
    pass


class SharedSpool:
    """A finished blob in an anonymous temp file, read by several sinks independently."""

    def __init__(self, file: BinaryIO, readers: int) -> None:
        self._file = file
        self._fd = file.fileno()
        self._refs = readers
        self._lock = threading.Lock()

    def reader(self) -> Reader:
        return _SpoolReader(self._fd)

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            if self._refs == 0:
                self._file.close()


class _SpoolReader(Reader):
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        data = os.pread(self._fd, CHUNK if size < 0 else size, self._pos)
        self._pos += len(data)
        return data


@dataclass
class Result:
    """What one sink got, filled in as its stream is consumed."""

    images: list[model.Image] = field(default_factory=list)
    blobs: list[BlobRecord] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # digests of blobs written to the sink
    skipped: list[BlobRecord] = field(default_factory=list)  # blobs the sink already had
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    stages: int = 0  # loads before the image's own (staged loads)
    output: Output | None = None
    scan: Scan | None = None

    @property
    def bytes_saved(self) -> int:
        return sum(record.size for record in self.skipped)


Item = tuple[str, Any]
"""What a producer hands a subscriber: ("blob", (record, SharedSpool | None)), ("done",
(scan, images, output)) or ("error", exception)."""


def release(item: Item) -> None:
    """Give back the spool share of an item no sink will send."""
    kind, value = item
    if kind == "blob" and value[1] is not None:
        value[1].release()


class Subscriber:
    """One sink's view of a producer: its own queue of finished blobs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: queue.Queue[Item] = queue.Queue(READY_DEPTH)
        self.gone = threading.Event()  # the sink failed or finished: stop feeding it

    def leave(self) -> None:
        self.gone.set()
        while True:  # release whatever is still queued for it
            try:
                release(self.ready.get_nowait())
            except queue.Empty:
                return


class Producer(threading.Thread):
    """Reads one source and hands every finished blob to each live subscriber."""

    def __init__(
        self,
        src: Readable,
        policy: LayerPolicy,
        subscribers: list[Subscriber],
        on_done: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="shipit-reader", daemon=True)
        self.src = src
        self.policy = policy
        self.subscribers = subscribers
        self.cancel = threading.Event()
        self._on_done = on_done

    def run(self) -> None:
        try:
            self.policy.on_blob = self._blob
            scanned = scan(self.src, self.policy)
            images = model.build(scanned)
            self._broadcast("done", (scanned, images, rewrite(images, scanned)))
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to every subscriber, which raises it
            if isinstance(exc, OSError):  # e.g. the temp folder is full
                error: BaseException = ShipitError(
                    f"spooling layers in {spool_dir()}: {exc.strerror or exc}"
                )
            else:
                error = exc
            with contextlib.suppress(_Cancelled):
                self._broadcast("error", error)
        finally:
            if self._on_done:
                self._on_done()

    def _blob(self, record: BlobRecord) -> None:
        live = [s for s in self.subscribers if not s.gone.is_set()]
        spool, record.spool = record.spool, None  # the subscribers own it now, if any
        if spool is not None and not live:
            spool.close()
        shared = SharedSpool(spool, len(live)) if spool is not None and live else None
        for subscriber in live:
            self._put(subscriber, ("blob", (record, shared)))

    def _broadcast(self, kind: str, value: Any) -> None:
        for subscriber in self.subscribers:
            self._put(subscriber, (kind, value))

    def _put(self, subscriber: Subscriber, item: Item) -> None:
        while True:
            if self.cancel.is_set():
                release(item)
                raise _Cancelled()
            if subscriber.gone.is_set():
                release(item)
                return
            try:
                subscriber.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        self.cancel.set()
        for subscriber in self.subscribers:
            subscriber.leave()
        self.join(timeout=5)


def subscriber_stream(
    subscriber: Subscriber,
    result: Result,
    *,
    progress: Progress | None = None,
    send_blob: Callable[[BlobRecord], bool] = lambda record: True,
    manifest_json: bool = True,
    backlog: Iterable[Item] = (),
    before_documents: Callable[[], None] | None = None,
) -> Generator[bytes, None, None]:
    """The bytes of one sink's archive; ``result`` is complete when the iterator ends.

    ``send_blob`` may decline a blob the sink already has; the manifests still list it.
    ``backlog`` holds items already taken off the subscriber's queue (they come first);
    ``before_documents`` runs after the last blob, before the documents that make the
    archive an image (staged loads wait there for the previous stage).
    """
    emit = progress.emit if progress else (lambda event: None)
    tar = TarStream()
    started = time.monotonic()
    waiting = list(backlog)
    waiting.reverse()

    def out(data: bytes) -> bytes:
        result.bytes_out += len(data)
        return data

    try:
        yield out(tar.start())
        while True:
            kind, value = waiting.pop() if waiting else subscriber.ready.get()
            if kind == "error":
                raise value
            if kind == "done":
                result.scan, result.images, result.output = value
                break
            record, shared = value
            result.blobs.append(record)
            emit(Event("blob", record.size, record=record))
            try:
                if record.digest in tar.written:
                    continue
                if shared is None or not send_blob(record):
                    result.skipped.append(record)
                    continue
                result.sent.append(record.digest)
                for chunk in tar.blob(record.digest, record.size, shared.reader()):
                    emit(Event("sent", len(chunk)))
                    yield out(chunk)
            finally:
                if shared is not None:
                    shared.release()
        assert result.output is not None
        if before_documents is not None:
            before_documents()
        for digest, raw in result.output.documents.items():
            yield out(tar.blob_bytes(digest, raw))
        yield out(tar.data("oci-layout", OCI_LAYOUT))
        yield out(tar.data("index.json", result.output.index_json))
        if manifest_json:
            yield out(tar.data("manifest.json", result.output.manifest_json))
        yield out(tar.end())
    finally:
        for item in waiting:
            release(item)
        subscriber.leave()
        result.seconds = time.monotonic() - started


def convert_stream(
    src: Readable,
    policy: LayerPolicy,
    result: Result,
    *,
    progress: Progress | None = None,
    send_blob: Callable[[BlobRecord], bool] = lambda record: True,
    manifest_json: bool = True,
) -> Generator[bytes, None, None]:
    """One source into one sink: the output archive's bytes."""
    emit = progress.emit if progress else (lambda event: None)
    counting = CountingReader(src, lambda n: emit(Event("read", n)))
    subscriber = Subscriber("output")
    producer = Producer(counting, policy, [subscriber])
    producer.start()
    try:
        yield from subscriber_stream(
            subscriber, result, progress=progress, send_blob=send_blob, manifest_json=manifest_json
        )
    finally:
        producer.stop()
        result.bytes_in = counting.count


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
    """A file-like reader over an iterator of byte chunks (e.g. an HTTP response).

    Like a raw stream, ``read(n)`` may return fewer than ``n`` bytes (it never crosses a
    chunk boundary) and returns b"" only at the end. A whole chunk is handed over as it
    is, a part of one with a single copy: the tar walker's reads are seldom aligned to
    the chunks, and joining and re-slicing a buffer cost a redeploy ~1 s per 2 GB.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            rest = [self._chunk[self._pos :], *self._chunks]
            self._chunk, self._pos = b"", 0
            return b"".join(rest)
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._pos = chunk, 0
        if self._pos == 0 and size >= len(self._chunk):
            data, self._chunk = self._chunk, b""
            return data
        data = self._chunk[self._pos : self._pos + size]
        self._pos += len(data)
        return data


class Tee:
    """Reads one source once and serves it to several readers, each a bounded
    buffer behind; a reader that goes away (its sinks all failed) is dropped."""

    def __init__(self, src: Readable, readers: int) -> None:
        self._src = src
        self._queues: list[queue.Queue[bytes | BaseException | None]] = [
            queue.Queue(TEE_DEPTH) for _ in range(readers)
        ]
        self._gone = [threading.Event() for _ in range(readers)]
        self._thread = threading.Thread(target=self._pump, name="shipit-tee", daemon=True)
        self._thread.start()

    def reader(self, n: int) -> Readable:
        return IterReader(self._chunks(n))

    def drop(self, n: int) -> None:
        self._gone[n].set()

    def _chunks(self, n: int) -> Generator[bytes, None, None]:
        while True:
            item = self._queues[n].get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _pump(self) -> None:
        item: bytes | BaseException | None
        while True:
            try:
                item = self._src.read(CHUNK) or None
            except BaseException as exc:
                item = exc
            for q, gone in zip(self._queues, self._gone, strict=True):
                while not gone.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            if item is None or isinstance(item, BaseException):
                return
            if all(g.is_set() for g in self._gone):
                return


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
) -> tuple[Result, Any]:
    """Convert ``src`` into ``sink``; returns the result and whatever the sink reported."""
    result = Result()
    stream = convert_stream(src, policy, result, progress=progress, send_blob=send_blob)
    try:
        reply = sink.consume(stream)
    finally:
        stream.close()
    return result, reply
