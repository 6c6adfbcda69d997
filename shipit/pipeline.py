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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from shipit.archive import model
from shipit.archive.reader import CHUNK, BlobRecord, CountingReader, Scan, scan
from shipit.archive.writer import OCI_LAYOUT, TarStream
from shipit.compression import Readable, Reader
from shipit.errors import ShipitError
from shipit.progress import Event, Progress
from shipit.transform import (
    GrowingSpool,
    LayerPolicy,
    Layout,
    Output,
    Rewritten,
    rewrite,
    spool_dir,
)

#: Finished blobs a sink may fall behind by. They sit in temp files, so this bounds disk
#: use, not memory; it lets compression run ahead of a slow sink by a few layers.
READY_DEPTH = 4
#: Bytes of source a slower compression may fall behind a faster one (fan-out).
TEE_DEPTH = 16  # chunks of CHUNK bytes


class _Cancelled(Exception):
    pass


class SharedSpool:
    """A blob in an anonymous temp file, read by several sinks independently: finished,
    or still growing (then its writer holds a share until it ends)."""

    def __init__(self, file: BinaryIO | GrowingSpool, readers: int) -> None:
        self._growing = file if isinstance(file, GrowingSpool) else None
        self._file = file.file if isinstance(file, GrowingSpool) else file
        self._fd = self._file.fileno()
        self._refs = readers + (1 if self._growing else 0)
        self._lock = threading.Lock()
        if self._growing is not None:
            self._growing.when_ended(self.release)

    def reader(self) -> Reader:
        if self._growing is not None:
            return _GrowingReader(self._growing)
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


class _GrowingReader(Reader):
    def __init__(self, spool: GrowingSpool) -> None:
        self._spool = spool
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        data = self._spool.read_at(self._pos, CHUNK if size < 0 else size)
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
    bytes_before_wire: int | None = None  # an upload compressed whole: its plain size
    last_byte_at: float | None = None  # time.monotonic() when the archive's end was handed on
    seconds: float = 0.0
    stages: int = 0  # loads before the image's own (staged loads)
    #: Staged loads: seconds the image's own upload held its documents back while the
    #: engine registered the stage below (target work in mid-ship, not after the last byte).
    stage_wait: float = 0.0
    output: Output | None = None
    scan: Scan | None = None
    rewritten: Rewritten | None = None

    @property
    def bytes_saved(self) -> int:
        return sum(record.size for record in self.skipped)

    def take(self, done: Done, layout: Layout | None) -> None:
        """The source ended: keep its model and shape the output for this sink."""
        self.scan, self.images, self.rewritten = done.scan, done.images, done.rewritten
        self.output = done.rewritten.shape(layout or Layout())


@dataclass(frozen=True)
class BlobReady:
    """A finished blob; ``spool`` holds its bytes, or None when no sink needs them."""

    record: BlobRecord
    spool: SharedSpool | None = None

    def release(self) -> None:
        """Give back this sink's share of the spool (once sent, or declined)."""
        if self.spool is not None:
            self.spool.release()


@dataclass(frozen=True)
class Done:
    """The source ended: the scan, its images, and the tree with every digest carried up."""

    scan: Scan
    images: list[model.Image]
    rewritten: Rewritten


@dataclass(frozen=True)
class Failed:
    """The source could not be read; every sink raises ``error``."""

    error: BaseException


Message = BlobReady | Done | Failed
"""What a producer hands each subscriber, in order: blobs, then Done or Failed."""


def release(message: Message) -> None:
    """Give back the spool share of a message no sink will send."""
    if isinstance(message, BlobReady):
        message.release()


class Subscriber:
    """One sink's view of a producer: its own queue of finished blobs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: queue.Queue[Message] = queue.Queue(READY_DEPTH)
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
            scanned = scan(self.src, self.policy.handler(self._blob))
            images = model.build(scanned)
            self._broadcast(Done(scanned, images, rewrite(images, scanned)))
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
                self._broadcast(Failed(error))
        finally:
            if self._on_done:
                self._on_done()

    def _blob(self, record: BlobRecord, spool: BinaryIO | GrowingSpool | None) -> None:
        live = [s for s in self.subscribers if not s.gone.is_set()]
        if isinstance(spool, GrowingSpool):
            shared: SharedSpool | None = SharedSpool(spool, len(live))  # closed when ended
        elif spool is not None and not live:
            spool.close()
            shared = None
        else:
            shared = SharedSpool(spool, len(live)) if spool is not None else None
        for subscriber in live:
            self._put(subscriber, BlobReady(record, shared))

    def _broadcast(self, message: Message) -> None:
        for subscriber in self.subscribers:
            self._put(subscriber, message)

    def _put(self, subscriber: Subscriber, message: Message) -> None:
        while True:
            if self.cancel.is_set():
                release(message)
                raise _Cancelled()
            if subscriber.gone.is_set():
                release(message)
                return
            try:
                subscriber.ready.put(message, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        self.cancel.set()
        for subscriber in self.subscribers:
            subscriber.leave()
        self.join(timeout=5)


Emit = Callable[[Event], None]
SendBlob = Callable[[BlobRecord], bool]


def _silent(event: Event) -> None:
    pass


def emitter(progress: Progress | None, target: str = "") -> Emit:
    """Where a sink's events go, each stamped with the ``target`` it is for."""
    if progress is None:
        return _silent
    if not target:
        return progress.emit
    return lambda event: progress.emit(replace(event, target=target))


def send_blob_chunks(
    message: BlobReady, tar: TarStream, result: Result, emit: Emit, wanted: SendBlob
) -> Iterator[bytes]:
    """One blob into one sink's archive: recorded in ``result``, its bytes yielded unless
    the sink has it already (``wanted`` says no) or it was written once; the spool share
    is given back in every case. Plain and staged feeds both send through here."""
    record = message.record
    result.blobs.append(record)
    emit(Event("blob", record.size, record=record))
    try:
        if record.digest in tar.written:
            return
        if message.spool is None or not wanted(record):
            result.skipped.append(record)
            return
        result.sent.append(record.digest)
        for chunk in tar.blob(record.digest, record.size, message.spool.reader()):
            emit(Event("sent", len(chunk)))
            yield chunk
    finally:
        message.release()


def document_chunks(tar: TarStream, out: Output) -> Iterator[bytes]:
    """What follows the blobs and makes the archive an image: documents and index files."""
    for digest, raw in out.documents.items():
        yield tar.blob_bytes(digest, raw)
    yield tar.data("oci-layout", OCI_LAYOUT)
    yield tar.data("index.json", out.index_json)
    if out.manifest_json is not None:
        yield tar.data("manifest.json", out.manifest_json)
    yield tar.end()


def subscriber_stream(
    subscriber: Subscriber,
    result: Result,
    *,
    progress: Progress | None = None,
    send_blob: SendBlob = lambda record: True,
    layout: Layout | None = None,
    backlog: Iterable[Message] = (),
    before_documents: Callable[[], None] | None = None,
) -> Generator[bytes, None, None]:
    """The bytes of one sink's archive; ``result`` is complete when the iterator ends.

    ``send_blob`` may decline a blob the sink already has; the manifests still list it.
    ``layout`` says which platforms and top-level files this sink gets (default: all of
    them). ``backlog`` holds messages already taken off the subscriber's queue (they come
    first); ``before_documents`` runs after the last blob, before the documents that make
    the archive an image (staged loads wait there for the previous stage).
    """
    emit = emitter(progress, subscriber.name)
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
            message = waiting.pop() if waiting else subscriber.ready.get()
            if isinstance(message, Failed):
                raise message.error
            if isinstance(message, Done):
                result.take(message, layout)
                break
            for chunk in send_blob_chunks(message, tar, result, emit, send_blob):
                yield out(chunk)
        assert result.output is not None
        if before_documents is not None:
            before_documents()
        for chunk in document_chunks(tar, result.output):
            yield out(chunk)
        result.last_byte_at = time.monotonic()
    finally:
        for message in waiting:
            release(message)
        subscriber.leave()
        result.seconds = time.monotonic() - started


def convert_stream(
    src: Readable,
    policy: LayerPolicy,
    result: Result,
    *,
    progress: Progress | None = None,
    send_blob: SendBlob = lambda record: True,
    layout: Layout | None = None,
) -> Generator[bytes, None, None]:
    """One source into one sink: the output archive's bytes."""
    emit = emitter(progress)
    counting = CountingReader(src, lambda n: emit(Event("read", n)))
    subscriber = Subscriber("output")
    producer = Producer(counting, policy, [subscriber])
    producer.start()
    try:
        yield from subscriber_stream(
            subscriber, result, progress=progress, send_blob=send_blob, layout=layout
        )
    finally:
        producer.stop()
        result.bytes_in = counting.count


def scan_only(src: Readable, policy: LayerPolicy, progress: Progress | None = None) -> Result:
    """Read an archive without writing one (inspect, verify)."""
    emit = emitter(progress)

    def on_blob(record: BlobRecord, spool: BinaryIO | GrowingSpool | None) -> None:
        emit(Event("blob", record.size, record=record))

    counting = CountingReader(src, lambda n: emit(Event("read", n)))
    started = time.monotonic()
    scanned = scan(counting, replace(policy, spool=False).handler(on_blob))
    images = model.build(scanned)
    result = Result(
        blobs=[scanned.blobs[key] for key in scanned.order],
        bytes_in=counting.count,
        seconds=time.monotonic() - started,
    )
    result.take(Done(scanned, images, rewrite(images, scanned)), None)
    return result


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
