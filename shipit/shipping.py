"""Engine to engine(s): load an archive into an engine, or ship images from one engine
into several, shaped for each and sending each only what it lacks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from shipit.api import (
    SLOW_LINK,
    Connect,
    Report,
    _checked_names,
    _open_input,
    _report,
    choose_codec,
    choose_wire,
    readable_by,
)
from shipit.archive.reader import CountingReader
from shipit.compression import Codec, compressed_chunks
from shipit.daemon import (
    Endpoint,
    EngineInfo,
    image_inspect,
    load_stream,
    probe,
    remove_repository,
)
from shipit.daemon import save_stream as daemon_save_stream
from shipit.delta import Delta, image_layers, plan
from shipit.errors import EngineError, ShipitError, UsageError, VerificationFailed
from shipit.memo import Compressed, Memo
from shipit.oci import familiar_ref, short
from shipit.pipeline import (
    IterReader,
    Producer,
    Result,
    Subscriber,
    Tee,
    run,
    subscriber_stream,
)
from shipit.progress import Event, Progress
from shipit.staging import STAGE_REPO, StagedFeed
from shipit.transform import LayerPolicy


@dataclass
class DaemonSink:
    """A Docker engine's ``/images/load``, fed as a streamed request body; with ``wire``,
    the body is compressed as a whole (see ``choose_wire``) and ``wire_bytes`` counts it."""

    endpoint: Endpoint
    info: EngineInfo
    wire: Codec | None = None
    wire_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def readable(self) -> frozenset[str]:
        return readable_by(self.info)

    def consume(self, chunks: Iterable[bytes]) -> list[str]:
        if self.wire is not None:
            chunks = compressed_chunks(chunks, self.wire, self._counted)
        return load_stream(self.endpoint, chunks)

    def _counted(self, n: int) -> None:
        with self._lock:  # stage uploads compress in their own threads
            self.wire_bytes += n


def load(
    path: str,
    *,
    target: str | None = None,
    codec: Codec | None = None,
    connect: Connect = Connect(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Load an archive into an engine, shaped for it: layers it cannot read are
    recompressed (zstd → gzip for Engine < 23), manifest.json is always written."""
    with ExitStack() as stack:
        src = stack.enter_context(_open_input(path))
        engine = stack.enter_context(connect.open(target))
        info = probe(engine)
        if codec is not None:
            choose_codec(info, codec, link=None)
        sink = DaemonSink(engine, info)
        policy = LayerPolicy(codec, readable=sink.readable)
        result, loaded = run(src, sink, policy, progress=progress)
        report = _report(result, str(codec) if codec else "as archived")
        report.target, report.loaded = info, loaded
        _verify_landed(engine, info, result)
    return report


@dataclass
class TargetResult:
    """How shipping went for one target: a report, or the error that stopped it."""

    target: str
    report: Report | None = None
    error: ShipitError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.report is not None:
            return {"target": self.target, "ok": True, "report": self.report.to_dict()}
        assert self.error is not None
        return {
            "target": self.target,
            "ok": False,
            "error": str(self.error),
            "exit_code": self.error.exit_code,
        }


@dataclass
class _Target:
    """One destination during a ship: its connection, what it reads, what it lacks."""

    name: str
    endpoint: Endpoint
    info: EngineInfo
    codec: Codec
    delta: Delta
    wire: Codec | None = None  # the whole upload's compression (layers then go plain)
    upload_plain: int = 0  # with wire: the upload's bytes before that compression
    link: float | None = None  # measured bytes/s (inf: this machine), when it was measured
    stage_order: list[str] = field(default_factory=list)  # diff_ids to load bottom-up
    result: Result = field(default_factory=Result)
    loaded: list[str] = field(default_factory=list)
    error: ShipitError | None = None
    attempts: int = 0


def ship(
    images: list[str],
    to: str,
    *,
    source: str | None = None,
    codec: Codec | None = None,
    connect: Connect = Connect(),  # noqa: B008 - frozen
    progress: Progress | None = None,
    verify: bool = True,
    full: bool = False,
    staged: bool | None = None,
    wire: Codec | None = None,
) -> Report:
    """Stream images from one engine into another, recompressed for the target, sending
    only the layers it lacks, and check that what landed has the source's config and
    diff_ids. Raises the target's error if it failed."""
    (outcome,) = ship_many(
        images,
        [to],
        source=source,
        codec=codec,
        connect=connect,
        progress=progress,
        verify=verify,
        full=full,
        staged=staged,
        wire=wire,
    )
    if outcome.error is not None:
        raise outcome.error
    assert outcome.report is not None
    return outcome.report


def ship_many(
    images: list[str],
    targets: list[str],
    *,
    source: str | None = None,
    codec: Codec | None = None,
    connect: Connect = Connect(),  # noqa: B008 - frozen
    progress: Progress | None = None,
    verify: bool = True,
    full: bool = False,
    staged: bool | None = None,
    wire: Codec | None = None,
) -> list[TargetResult]:
    """Ship to several targets from one read of the source: each distinct layer
    compression is produced once, targets are fed concurrently, each with its own delta.
    A target that fails does not stop the others; its error is in its result.

    ``staged`` loads layers bottom-up in several loads so the target registers them while
    the rest streams (see shipit.staging); None: when the link is slow. ``wire`` forces
    the compression of each whole upload (``none``: off); None: see ``choose_wire``."""
    names = _checked_names(images)
    if not targets:
        raise UsageError("name at least one --to target")
    outcomes = {name: TargetResult(name) for name in targets}
    with ExitStack() as stack:
        origin = stack.enter_context(connect.open(source))
        layers = image_layers(origin, names)  # ImageNotFound before any target is touched
        # The source engine takes seconds before its first byte (a classic store exports
        # every layer first): connect to the targets and ask them what they hold meanwhile.
        save = _SaveAhead(origin, names)
        stack.callback(save.close)
        memo = Memo.default()
        live: list[_Target] = []
        alone = len(set(targets)) == 1
        for name in dict.fromkeys(targets):
            try:
                live.append(
                    _open_target(stack, connect, name, codec, wire, layers, full, staged, alone)
                )
            except ShipitError as exc:
                outcomes[name].error = exc
        _warm(live, memo)
        if progress is not None:
            progress.total = _save_size(origin, names)
        pending = live
        while pending:
            for target in pending:
                target.attempts += 1
                target.result, target.error = Result(), None
            _transfer(origin, names, pending, progress, memo, save.take)
            for target in pending:
                _settle(target, verify)
            # A target that lost a layer between the check and the load: once more, whole.
            pending = [t for t in pending if t.error is not None and _retry_whole(t)]
        for target in live:
            if target.error is not None:
                outcomes[target.name].error = target.error
            else:
                report = _report(target.result, str(target.codec))
                if target.wire is not None:
                    report.wire_compression = str(target.wire)
                    report.bytes_before_wire = target.upload_plain
                report.target, report.loaded = target.info, target.loaded
                report.layers_skipped = len(target.result.skipped)
                report.bytes_saved = target.result.bytes_saved
                report.attempts = target.attempts
                report.link = target.link
                report.stages = target.result.stages
                outcomes[target.name].report = report
    return [outcomes[name] for name in targets]


def _open_target(
    stack: ExitStack,
    connect: Connect,
    name: str,
    codec: Codec | None,
    wire: Codec | None,
    layers: list[list[str]],
    full: bool,
    staged: bool | None,
    alone: bool,
) -> _Target:
    endpoint = stack.enter_context(connect.open(name))
    info = probe(endpoint)
    link = endpoint.link_speed() if codec is None or staged is None else None
    chosen, wire = choose_wire(
        info, codec, choose_codec(info, codec, link, alone=alone), wire, alone=alone
    )
    delta = Delta(endpoint.name) if full else plan(endpoint, info, layers)
    if staged is None:
        staged = link is not None and link < SLOW_LINK
    if staged:
        remove_repository(endpoint, STAGE_REPO)  # a run killed mid-stage may have left some
    order = layers[0] if staged and layers else []
    return _Target(name, endpoint, info, chosen, delta, wire, link=link, stage_order=order)


def _retry_whole(target: _Target) -> bool:
    if target.attempts > 1 or not target.result.skipped:
        return False
    if not isinstance(target.error, EngineError | VerificationFailed):
        return False
    target.delta = Delta(target.endpoint.name)
    return True


def _settle(target: _Target, verify: bool) -> None:
    """After the load: skipped blobs still there (containerd), then what landed."""
    if target.error is not None:
        return
    try:
        if not target.delta.still_has(target.result.skipped):
            raise VerificationFailed(
                f"after loading into {target.endpoint.name}: a skipped layer has gone missing"
            )
        if verify:
            _verify_landed(target.endpoint, target.info, target.result)
    except ShipitError as exc:
        target.error = exc


def _transfer(
    origin: Endpoint,
    names: list[str],
    targets: list[_Target],
    progress: Progress | None,
    memo: Memo,
    started: Callable[[], Iterator[bytes] | None] = lambda: None,
) -> None:
    """One read of the source (``started``: a save already under way, if still unused);
    one producer per distinct codec; one thread per target."""
    emit = progress.emit if progress else (lambda event: None)
    groups: dict[str, list[_Target]] = {}
    for target in targets:
        groups.setdefault(str(target.codec), []).append(target)
    try:
        chunks = started() or daemon_save_stream(origin, names)
        counting = CountingReader(IterReader(chunks), lambda n: emit(Event("read", n)))
    except ShipitError as exc:
        for target in targets:
            target.error = exc
        return
    # Even for one producer: the tee's thread reads the socket while the producer hashes
    # and compresses (both let go of the GIL), which is what a redeploy's speed is.
    tee = Tee(counting, len(groups))
    producers: list[Producer] = []
    workers: list[threading.Thread] = []
    for n, members in enumerate(groups.values()):
        subscribers = [Subscriber(t.name) for t in members]
        readable = frozenset.intersection(*(readable_by(t.info) for t in members))
        policy = LayerPolicy(
            members[0].codec,
            readable=readable,
            skip=_skip_for(members),
            known=_known_for(members, memo),
            memo=memo,
        )
        drop = partial(tee.drop, n)
        producers.append(Producer(tee.reader(n), policy, subscribers, on_done=drop))
        for target, subscriber in zip(members, subscribers, strict=True):
            workers.append(
                threading.Thread(
                    target=_feed,
                    args=(target, subscriber, progress),
                    name=f"shipit-{target.name}",
                    daemon=True,
                )
            )
    for thread in [*producers, *workers]:
        thread.start()
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)  # short joins keep Ctrl-C responsive
    finally:
        for producer in producers:
            producer.stop()
    for target in targets:
        target.result.bytes_in = counting.count


class _SaveAhead:
    """The source's save, requested in the background; ``take`` hands it over once."""

    def __init__(self, origin: Endpoint, names: list[str]) -> None:
        self._chunks: Iterator[bytes] | None = None
        self._error: ShipitError | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._request, args=(origin, names), name="shipit-save", daemon=True
        )
        self._thread.start()

    def _request(self, origin: Endpoint, names: list[str]) -> None:
        try:
            chunks = daemon_save_stream(origin, names)
        except ShipitError as exc:
            self._error = exc
            return
        with self._lock:
            self._chunks = chunks
            late = self._closed
        if late:
            self.close()

    def take(self) -> Iterator[bytes] | None:
        """The save's chunks (raising its error), or None once taken or closed."""
        while self._thread.is_alive():
            self._thread.join(0.2)  # short joins keep Ctrl-C responsive
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            if self._error is not None:
                raise self._error
            return self._chunks

    def close(self) -> None:
        """Drop the save if nobody took it (now, or when its answer comes)."""
        with self._lock:
            self._closed = True
            chunks, self._chunks = self._chunks, None
        if isinstance(chunks, Generator):
            chunks.close()


def _warm(targets: list[_Target], memo: Memo) -> None:
    """While the source prepares its save: probe for the blobs the memo says the layers
    become, so the stream does not wait on those round trips (containerd targets)."""
    for target in targets:
        target.delta.warm(memo, target.codec)


def _skip_for(group: list[_Target]) -> Callable[[str], bool]:
    """A blob is left unread only when no target of the group needs it."""
    return lambda digest: all(t.delta.pre_skip(digest) for t in group)


def _known_for(group: list[_Target], memo: Memo) -> Callable[[str], Compressed | None]:
    """A blob is left uncompressed when the memo names its compressed form and every
    target of the group holds that (containerd: a probe per candidate layer)."""
    codec = group[0].codec

    def known(digest: str) -> Compressed | None:
        found = memo.get(digest, codec)
        if found is None:
            return None
        return None if any(t.delta.wants(found.blob(digest)) for t in group) else found

    return known


def _feed(target: _Target, subscriber: Subscriber, progress: Progress | None) -> None:
    sink = DaemonSink(target.endpoint, target.info, target.wire)
    if target.stage_order and target.attempts == 1:
        staged = StagedFeed(
            target.endpoint,
            target.info,
            subscriber,
            target.result,
            target.stage_order,
            load=sink.consume,
            send_blob=target.delta.wants,
            progress=progress,
        )
        run: Callable[[], list[str]] = staged.run
        stream = None
    else:
        stream = subscriber_stream(
            subscriber, target.result, progress=progress, send_blob=target.delta.wants
        )
        run = partial(sink.consume, stream)
    try:
        target.loaded = run()
        if sink.wire is not None:  # what went out was compressed as a whole
            target.upload_plain, target.result.bytes_out = target.result.bytes_out, sink.wire_bytes
    except ShipitError as exc:
        target.error = exc
    except Exception as exc:  # a bug must not take the other targets down
        target.error = ShipitError(f"shipping to {target.name}: {exc}")
    finally:
        if stream is not None:
            stream.close()
        subscriber.leave()


def _save_size(engine: Endpoint, names: list[str]) -> int | None:
    # The save stream carries each image's uncompressed layers: about its Size.
    sizes = {}
    for name in names:
        details = image_inspect(engine, name)
        if details:
            sizes[details.get("Id")] = int(details.get("Size") or 0)
    return sum(sizes.values()) or None


def _verify_landed(engine: Endpoint, info: EngineInfo, result: Result) -> None:
    """Every name must now be the image we sent: same diff_ids, same config (classic ID)."""
    assert result.output is not None
    problems = []
    for names, root, runnable in result.output.images:
        for name in names:
            details = image_inspect(engine, name)
            if details is None:
                problems.append(f"{familiar_ref(name)} is missing")
                continue
            if runnable is None:
                continue
            expected_ids = [layer.diff_id for layer in runnable.layers]
            got = (details.get("RootFS") or {}).get("Layers") or []
            if got != expected_ids:
                problems.append(f"{familiar_ref(name)} has different diff_ids")
            want_id = runnable.config.digest if info.image_store == "classic" else root.digest
            if details.get("Id") != want_id:
                problems.append(
                    f"{familiar_ref(name)} has ID {short(str(details.get('Id')))}, "
                    f"expected {short(want_id)}"
                )
    if problems:
        raise VerificationFailed(f"after loading into {engine.name}: " + "; ".join(problems))
