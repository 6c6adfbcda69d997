"""shipit as a library: every CLI command is one call here.

    from shipit.api import ship
    report = ship(["rosie:latest"], to="deploy-server")
    print(report.bytes_sent, report.target.image_store)

Functions never print; pass ``progress=Progress(callback)`` to watch them work.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from shipit.archive.model import Image
from shipit.archive.reader import CountingReader
from shipit.compression import Codec
from shipit.daemon import Endpoint, EngineInfo, image_inspect, load_stream, probe, resolve_endpoint
from shipit.daemon import save_stream as daemon_save_stream
from shipit.delta import Delta, image_layers, plan
from shipit.errors import (
    BadInput,
    EngineError,
    ShipitError,
    Unsupported,
    UsageError,
    VerificationFailed,
)
from shipit.oci import familiar_ref, short
from shipit.pipeline import (
    IterReader,
    Producer,
    Result,
    Subscriber,
    Tee,
    run,
    scan_only,
    subscriber_stream,
)
from shipit.progress import Event, Progress
from shipit.sinks import FileSink
from shipit.transform import LayerPolicy


@dataclass(frozen=True)
class Connect:
    """How to reach engines: the SSH config to read and whether to trust new host keys."""

    ssh_config: str | os.PathLike[str] | None = None
    accept_new_host_key: bool = False

    def open(self, target: str | None) -> Endpoint:
        return resolve_endpoint(
            target, ssh_config=self.ssh_config, accept_new_host_key=self.accept_new_host_key
        )


@dataclass
class Report:
    """What a save, convert, load or ship did. ``to_dict`` is the ``--json`` summary."""

    images: list[str] = field(default_factory=list)  # every name, e.g. rosie:latest
    layers: int = 0
    layers_sent: int = 0
    layers_recompressed: int = 0
    layers_skipped: int = 0
    bytes_saved: int = 0
    attempts: int = 1
    bytes_read: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    compression: str = "none"
    target: EngineInfo | None = None
    loaded: list[str] = field(default_factory=list)
    output: str | None = None

    @property
    def ratio(self) -> float:
        return self.bytes_read / self.bytes_sent if self.bytes_sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": self.images,
            "tags": len(self.images),
            "layers": self.layers,
            "layers_sent": self.layers_sent,
            "layers_recompressed": self.layers_recompressed,
            "layers_skipped": self.layers_skipped,
            "bytes_saved": self.bytes_saved,
            "attempts": self.attempts,
            "bytes_read": self.bytes_read,
            "bytes_sent": self.bytes_sent,
            "ratio": round(self.ratio, 3),
            "seconds": round(self.seconds, 3),
            "compression": self.compression,
        }
        if self.output:
            out["output"] = self.output
        if self.target:
            out["target"] = {
                "name": self.target.name,
                "store": self.target.image_store,
                "version": self.target.engine_version,
                "api_version": self.target.api_version,
            }
        if self.loaded:
            out["loaded"] = self.loaded
        return out


def layer_digests(result: Result) -> set[str]:
    return {b.digest for b in result.blobs}


def _report(result: Result, codec: str) -> Report:
    names = [familiar_ref(n) for image in result.images for n in image.names]
    layers = {layer.key for image in result.images for m in image.manifests() for layer in m.layers}
    return Report(
        images=names,
        layers=len(layers),
        layers_sent=sum(1 for d in result.sent if d in layer_digests(result)),
        layers_recompressed=sum(1 for b in result.blobs if b.rewritten),
        bytes_read=result.bytes_in,
        bytes_sent=result.bytes_out,
        seconds=result.seconds,
        compression=codec,
    )


# Choosing what the target gets ---------------------------------------------------------


def readable_by(info: EngineInfo) -> frozenset[str]:
    """Layer compressions an engine decompresses on load."""
    return frozenset({"none", "gzip", "zstd"} if info.loads_zstd else {"none", "gzip"})


def choose_codec(info: EngineInfo, requested: Codec | None, local: bool) -> Codec:
    """The layer compression for a target, or Unsupported before a byte is sent."""
    if requested is not None:
        if requested.name not in readable_by(info):
            raise Unsupported(
                f"{info.name} (Engine {info.engine_version}, {info.image_store} store) "
                f"cannot load {requested.name} layers; use --compression gzip or none"
            )
        return requested
    if local and info.image_store == "classic":
        return Codec("none")  # a local socket: compressing only costs time
    return Codec("zstd") if info.loads_zstd else Codec("gzip")


# Archives ----------------------------------------------------------------------------


def _open_input(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None


def input_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size if path != "-" else None
    except OSError:
        return None


def convert(source: str, output: str, codec: Codec, *, progress: Progress | None = None) -> Report:
    """Rewrite an archive (a file or ``-``) with ``codec`` layers into ``output``."""
    with ExitStack() as stack:
        src = stack.enter_context(_open_input(source))
        sink = FileSink(output)
        result, _ = run(src, sink, LayerPolicy(codec), progress=progress)
    report = _report(result, str(codec))
    report.output = output
    return report


def save(
    images: list[str],
    output: str,
    codec: Codec,
    *,
    source: str | None = None,
    connect: Connect = Connect(),  # noqa: B008 - frozen
    progress: Progress | None = None,
) -> Report:
    """Save images (all their tags, shared layers once) from an engine into an archive."""
    with connect.open(source) as engine:
        src = IterReader(daemon_save_stream(engine, _checked_names(images)))
        result, _ = run(src, FileSink(output), LayerPolicy(codec), progress=progress)
    report = _report(result, str(codec))
    report.output = output
    return report


@dataclass
class Inspection:
    images: list[Image]
    result: Result

    def to_dict(self) -> dict[str, Any]:
        records = {r.key: r for r in self.result.blobs}
        images = []
        referenced = 0
        for image in self.images:
            manifests = []
            for manifest in image.manifests():
                layers = []
                for layer in manifest.layers:
                    record = records.get(layer.key)
                    size = record.source_size if record else None
                    referenced += size or 0
                    layers.append(
                        {
                            "digest": record.source_digest if record else layer.key,
                            "size": size,
                            "compression": record.source_compression if record else None,
                            "diff_id": layer.diff_id,
                        }
                    )
                manifests.append(
                    {
                        "digest": manifest.descriptor.digest if manifest.descriptor else None,
                        "config": {
                            "digest": manifest.config.digest,
                            "size": manifest.config.size,
                        },
                        "layers": layers,
                    }
                )
            images.append({"names": [familiar_ref(n) for n in image.names], "manifests": manifests})
        unique = sum(r.source_size for r in self.result.blobs)
        return {
            "images": images,
            "blobs": len(self.result.blobs),
            "archive_bytes": self.result.bytes_in,
            "layer_bytes_referenced": referenced,
            "layer_bytes_stored": unique,
            "dedup_saved_bytes": max(0, referenced - unique),
        }


def inspect(path: str, *, full: bool = False, progress: Progress | None = None) -> Inspection:
    """Read an archive and describe it; ``full`` also checks every layer's diff_id."""
    with ExitStack() as stack:
        src = stack.enter_context(_open_input(path))
        result = scan_only(src, LayerPolicy(None, full=full), progress)
    return Inspection(result.images, result)


def verify(path: str, *, progress: Progress | None = None) -> Inspection:
    """Check every digest, size and diff_id of an archive; raises BadInput on the first flaw."""
    inspection = inspect(path, full=True, progress=progress)
    for record in inspection.result.blobs:
        if record.source_compression != "none" and record.diff_id is None:
            raise BadInput(f"layer {short(record.source_digest)} could not be checked")
    return inspection


# Engines -------------------------------------------------------------------------------


@dataclass
class DaemonSink:
    """A Docker engine's ``/images/load``, fed as a streamed request body."""

    endpoint: Endpoint
    info: EngineInfo

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def readable(self) -> frozenset[str]:
        return readable_by(self.info)

    def consume(self, chunks: Iterable[bytes]) -> list[str]:
        return load_stream(self.endpoint, chunks)


def _checked_names(images: list[str]) -> list[str]:
    if not images:
        raise UsageError("name at least one image")
    for name in images:
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise UsageError(f"invalid image name {name!r}")
    return images


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
            choose_codec(info, codec, local=engine.session is None)
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
) -> list[TargetResult]:
    """Ship to several targets from one read of the source: each distinct layer
    compression is produced once, targets are fed concurrently, each with its own delta.
    A target that fails does not stop the others; its error is in its result."""
    names = _checked_names(images)
    if not targets:
        raise UsageError("name at least one --to target")
    outcomes = {name: TargetResult(name) for name in targets}
    with ExitStack() as stack:
        origin = stack.enter_context(connect.open(source))
        layers = image_layers(origin, names)  # ImageNotFound before any target is touched
        live: list[_Target] = []
        for name in dict.fromkeys(targets):
            try:
                live.append(_open_target(stack, connect, name, codec, layers, full))
            except ShipitError as exc:
                outcomes[name].error = exc
        if progress is not None:
            progress.total = _save_size(origin, names)
        pending = live
        while pending:
            for target in pending:
                target.attempts += 1
                target.result, target.error = Result(), None
            _transfer(origin, names, pending, progress)
            for target in pending:
                _settle(target, verify)
            # A target that lost a layer between the check and the load: once more, whole.
            pending = [t for t in pending if t.error is not None and _retry_whole(t)]
        for target in live:
            if target.error is not None:
                outcomes[target.name].error = target.error
            else:
                report = _report(target.result, str(target.codec))
                report.target, report.loaded = target.info, target.loaded
                report.layers_skipped = len(target.result.skipped)
                report.bytes_saved = target.result.bytes_saved
                report.attempts = target.attempts
                outcomes[target.name].report = report
    return [outcomes[name] for name in targets]


def _open_target(
    stack: ExitStack,
    connect: Connect,
    name: str,
    codec: Codec | None,
    layers: list[list[str]],
    full: bool,
) -> _Target:
    endpoint = stack.enter_context(connect.open(name))
    info = probe(endpoint)
    chosen = choose_codec(info, codec, local=endpoint.session is None)
    delta = Delta(endpoint.name) if full else plan(endpoint, info, layers)
    return _Target(name, endpoint, info, chosen, delta)


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
    origin: Endpoint, names: list[str], targets: list[_Target], progress: Progress | None
) -> None:
    """One read of the source; one producer per distinct codec; one thread per target."""
    emit = progress.emit if progress else (lambda event: None)
    groups: dict[str, list[_Target]] = {}
    for target in targets:
        groups.setdefault(str(target.codec), []).append(target)
    try:
        counting = CountingReader(
            IterReader(daemon_save_stream(origin, names)), lambda n: emit(Event("read", n))
        )
    except ShipitError as exc:
        for target in targets:
            target.error = exc
        return
    tee = Tee(counting, len(groups)) if len(groups) > 1 else None
    producers: list[Producer] = []
    workers: list[threading.Thread] = []
    for n, members in enumerate(groups.values()):
        subscribers = [Subscriber(t.name) for t in members]
        readable = frozenset.intersection(*(readable_by(t.info) for t in members))
        policy = LayerPolicy(
            members[0].codec,
            readable=readable,
            skip=_skip_for(members),
        )
        src = tee.reader(n) if tee else counting
        drop = (lambda n=n: tee.drop(n)) if tee else None
        producers.append(Producer(src, policy, subscribers, on_done=drop))
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


def _skip_for(group: list[_Target]) -> Callable[[str], bool]:
    """A blob is left unread only when no target of the group needs it."""
    return lambda digest: all(t.delta.pre_skip(digest) for t in group)


def _feed(target: _Target, subscriber: Subscriber, progress: Progress | None) -> None:
    stream = subscriber_stream(
        subscriber, target.result, progress=progress, send_blob=target.delta.wants
    )
    try:
        target.loaded = load_stream(target.endpoint, stream)
    except ShipitError as exc:
        target.error = exc
    except Exception as exc:  # a bug must not take the other targets down
        target.error = ShipitError(f"shipping to {target.name}: {exc}")
    finally:
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


__all__ = [
    "Connect",
    "Inspection",
    "Report",
    "ShipitError",
    "choose_codec",
    "convert",
    "inspect",
    "load",
    "save",
    "ship",
    "ship_many",
    "verify",
]
