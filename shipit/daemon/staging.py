"""Staged loads: let the target register layers while later ones are still on the wire.

An engine does the expensive part of ``docker load`` only after the upload has ended: the
classic store extracts the whole upload, then registers every layer (untar into the graph
driver, decompressing); the containerd store unpacks every layer into a snapshot. On a
slow link that is 10-30 s of idle wire at the end. So, when the link is slow (and the
producer is therefore well ahead of it), shipit sends the image's layers bottom-up as a
series of loads. Stage *k* is a throwaway image whose config lists the first layers and
whose archive carries only the ones no earlier stage carried; while the engine registers
it, stage *k+1*'s blobs are already streaming. The end of each stage's archive (its
config, manifest and ``manifest.json``/``index.json``) is held back until the previous
stage has loaded, because the engine must find the lower chains in place. The final load
is the real image, carrying whatever no stage did: every layer it names is then either in
its archive or already registered (classic: its chain exists, so the file is not opened;
containerd: the blob is in the content store, held by the stage image). Stage images are
tagged ``shipit-stage.invalid/stage:…`` and deleted afterwards; the layers stay, used by
the real image.

Only the first image's layers are staged, in order; blobs that arrive out of order wait in
their spool files. Anything that cannot be placed (a layer whose diff_id is unknown, an
image that uses a layer twice) simply goes in the final load.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import docker.errors

from shipit.archive.reader import BlobRecord
from shipit.archive.writer import TarStream, make_image
from shipit.compression import FRAME_END
from shipit.daemon.endpoint import Endpoint
from shipit.daemon.engine import throwaway_tag
from shipit.errors import ShipitError
from shipit.oci import OCI_LAYER_FOR, Descriptor
from shipit.pipeline import (
    BlobReady,
    Done,
    Failed,
    Message,
    Result,
    SendBlob,
    Subscriber,
    emitter,
    release,
    send_blob_chunks,
    subscriber_stream,
)
from shipit.platforms import Platform
from shipit.progress import Progress
from shipit.transform import Layout

STAGE_REPO = "shipit-stage.invalid/stage"
#: A stage closes once it carries this many bytes: fewer, larger loads (each costs the
#: engine a request and a temp dir) while still overlapping most of the work.
STAGE_BYTES = 32 << 20

#: Looks (every 0.5 s) for a stage the engine may still register after its load failed.
SETTLE_TRIES = 10

Load = Callable[[Iterable[bytes]], list[str]]
"""One upload into the target's ``/images/load``; returns its "Loaded …" lines."""


class _Upload(threading.Thread):
    """One stage's ``/images/load``, its body fed chunk by chunk from the feeding thread."""

    def __init__(self, load: Load, target: str, name: str, prev: _Upload | None) -> None:
        super().__init__(name=f"shipit-{name}", daemon=True)
        self.load = load
        self.target = target
        self.prev = prev
        self.chunks: queue.Queue[bytes | None] = queue.Queue(8)
        self.error: ShipitError | None = None
        self.ended = False  # the body's end was queued

    def run(self) -> None:
        try:
            self.load(iter(self.chunks.get, None))
        except ShipitError as exc:
            self.error = exc
        except Exception as exc:  # a bug here must still fail the ship, not hang it
            self.error = ShipitError(f"loading a stage into {self.target}: {exc}")

    def put(self, chunk: bytes | None) -> None:
        while True:
            if not self.is_alive():
                self.finish()
                raise ShipitError(f"{self.target} ended a stage's load early")
            try:
                self.chunks.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue

    def close_after_prev(self, documents: list[bytes]) -> None:
        """In the background: once the stage below has loaded, send the documents that
        make this stage an image. If it failed, end the body short (the engine drops it)."""

        def close() -> None:
            try:
                if self.prev is not None:
                    self.prev.finish()
                for chunk in documents:
                    self.put(chunk)
            except ShipitError:
                pass  # finish() reports the first failure of the chain
            finally:
                self.abort()

        threading.Thread(target=close, name=f"{self.name}-close", daemon=True).start()

    def abort(self) -> None:
        """End the body now (a no-op once ended)."""
        if not self.ended:
            self.ended = True
            with contextlib.suppress(ShipitError):
                self.put(None)

    def finish(self) -> None:
        """Wait until the engine has loaded this stage; raise the first failure below or here."""
        if self.prev is not None:
            self.prev.finish()
        while self.is_alive():
            self.join(0.2)
        if self.error is not None:
            raise self.error


class StagedFeed:
    """Feeds one target from its subscriber as a series of stage loads, then the image."""

    def __init__(
        self,
        endpoint: Endpoint,
        platform: Platform,
        subscriber: Subscriber,
        result: Result,
        order: list[str],
        *,
        load: Load,
        send_blob: SendBlob,
        layout: Layout,
        progress: Progress | None = None,
        end_frames: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.load = load
        self.platform = platform
        self.subscriber = subscriber
        self.result = result
        self.order = order if len(set(order)) == len(order) else []
        self.send_blob = send_blob
        self.layout = layout
        self.end_frames = end_frames  # a zstd upload: see FRAME_END
        self.emit = emitter(progress, subscriber.name)
        self.progress = progress
        self.pool: dict[str, BlobReady] = {}  # layers that arrived before their turn
        self.backlog: list[Message] = []  # everything else taken off the queue, in order
        self.over = False  # "done" (or an error) came: nothing more to wait for
        self.token = throwaway_tag(secrets.token_hex(6))
        self.uploads: list[tuple[str, _Upload]] = []  # stage images, loaded or loading
        self.placed: list[BlobRecord] = []  # the layers staged so far, bottom-up

    def run(self) -> list[str]:
        """Load everything; returns the engine's "Loaded …" lines of the real image."""
        started = time.monotonic()
        last: _Upload | None = None
        try:
            done = 0  # layers of ``order`` already placed (sent or present)
            while not self.over and done < len(self.order) - 1:
                placed, last = self._stage(done, last)
                if not placed:
                    break
                done += placed
            final = subscriber_stream(
                self.subscriber,
                self.result,
                progress=self.progress,
                send_blob=self.send_blob,
                layout=self.layout,
                backlog=[*self.backlog, *self.pool.values()],
                before_documents=self._waiting(last) if last else None,
            )
            self.backlog, self.pool = [], {}
            try:
                return self.load(final)
            finally:
                final.close()
        finally:
            for item in [*self.backlog, *self.pool.values()]:
                release(item)
            self.subscriber.leave()
            self.result.seconds = time.monotonic() - started
            self._remove_stages()

    def _waiting(self, last: _Upload) -> Callable[[], None]:
        """``last.finish``, its wait counted in ``result.stage_wait``."""

        def finish() -> None:
            began = time.monotonic()
            try:
                last.finish()
            finally:
                self.result.stage_wait += time.monotonic() - began

        return finish

    def _stage(self, done: int, last: _Upload | None) -> tuple[int, _Upload | None]:
        """Send the next stage: layers ``order[done:]`` until STAGE_BYTES, never the last
        one. Returns how many layers it placed and the newest upload."""
        layers: list[BlobRecord] = []
        upload: _Upload | None = None
        tar = TarStream()
        sent = 0
        name = f"{STAGE_REPO}:{self.token}-{len(self.uploads) + 1}"
        for diff_id in self.order[done : len(self.order) - 1]:
            message = self._take(diff_id)
            if message is None:
                break
            layers.append(message.record)
            self.placed.append(message.record)
            for chunk in send_blob_chunks(message, tar, self.result, self.emit, self.send_blob):
                if upload is None:
                    upload = _Upload(self.load, self.endpoint.name, name, last)
                    self.uploads.append((name, upload))
                    upload.start()
                    self._put(upload, tar.start())
                self._put(upload, chunk)
                sent += len(chunk)
            if sent >= STAGE_BYTES:
                break
        if upload is None:
            return len(layers), last
        if self.end_frames:
            upload.put(FRAME_END)  # its compressor is freed before the documents wait
        documents = list(self._documents(name, self.placed, tar))
        self.result.bytes_out += sum(len(chunk) for chunk in documents)
        upload.close_after_prev(documents)  # meanwhile the next stage streams
        self.result.stages += 1
        return len(layers), upload

    def _put(self, upload: _Upload, chunk: bytes) -> None:
        self.result.bytes_out += len(chunk)
        upload.put(chunk)

    def _take(self, diff_id: str) -> BlobReady | None:
        """The layer ``diff_id``, waiting for it to be read; None if it never will be."""
        while diff_id not in self.pool:
            if self.over:
                return None
            message = self.subscriber.ready.get()
            if isinstance(message, Failed):
                self.over = True
                raise message.error
            if isinstance(message, BlobReady) and message.record.diff_id is not None:
                self.pool.setdefault(message.record.diff_id, message)
                continue
            self.over = isinstance(message, Done)
            self.backlog.append(message)
        return self.pool.pop(diff_id)

    def _documents(self, name: str, layers: list[BlobRecord], tar: TarStream) -> Iterator[bytes]:
        """The stage image: a config listing the diff_ids of every layer staged so far
        (the lower ones are on the target already), and its manifests."""
        blobs = [
            (r.diff_id or "", Descriptor(OCI_LAYER_FOR[r.compression], r.digest, r.size))
            for r in layers
        ]
        return make_image(name, self.platform, blobs).tar_entries(tar)

    def _remove_stages(self) -> None:
        for _name, upload in self.uploads:
            upload.abort()  # a stage cut short by a failure: the engine drops it
            upload.join(30)
        for name, upload in self.uploads:
            # A stage whose whole body went out can still be registered by the engine
            # after its load failed on our side (the answer lost): watch for it a while.
            tries = SETTLE_TRIES if upload.ended and upload.error is not None else 1
            for attempt in range(tries):
                try:
                    self.endpoint.api.remove_image(name, force=True)
                    break
                except docker.errors.NotFound:
                    if attempt + 1 < tries:
                        time.sleep(0.5)
                except Exception:  # the engine is gone: nothing more to do here
                    break
