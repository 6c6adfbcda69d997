"""shipit as a library: every CLI command is one call here (engine-to-engine work lives
in ``shipit.shipping`` and is re-exported here).

    from shipit.api import ship
    report = ship(["rosie:latest"], to="deploy-server")
    print(report.bytes_sent, report.target.image_store)

Functions never print; pass ``progress=Progress(callback)`` to watch them work.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from shipit.archive.model import Image
from shipit.compression import Codec
from shipit.errors import BadInput, ShipitError, Unsupported, UsageError
from shipit.oci import familiar_ref, short
from shipit.pipeline import IterReader, Result, run, scan_only
from shipit.progress import Progress
from shipit.sinks import FileSink
from shipit.transform import LayerPolicy

if TYPE_CHECKING:  # the Docker SDK and paramiko load only for commands that talk to engines
    from shipit.daemon import Endpoint, EngineInfo


@dataclass(frozen=True)
class Connect:
    """How to reach engines: the SSH config to read and whether to trust new host keys."""

    ssh_config: str | os.PathLike[str] | None = None
    accept_new_host_key: bool = False

    def open(self, target: str | None) -> Endpoint:
        from shipit.daemon import resolve_endpoint

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
    layers_from_memo: int = 0  # compressed on an earlier run: named, not compressed again
    layers_skipped: int = 0
    bytes_saved: int = 0
    attempts: int = 1
    stages: int = 0
    bytes_read: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    compression: str = "none"
    wire_compression: str | None = None  # the whole upload's, around plain layers
    bytes_before_wire: int | None = None  # the upload before wire_compression
    target: EngineInfo | None = None
    loaded: list[str] = field(default_factory=list)
    output: str | None = None
    link: float | None = None  # bytes/s measured to the target (inf: on this machine)

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
            "layers_from_memo": self.layers_from_memo,
            "layers_skipped": self.layers_skipped,
            "bytes_saved": self.bytes_saved,
            "attempts": self.attempts,
            "stages": self.stages,
            "bytes_read": self.bytes_read,
            "bytes_sent": self.bytes_sent,
            "ratio": round(self.ratio, 3),
            "seconds": round(self.seconds, 3),
            "compression": self.compression,
        }
        if self.wire_compression:
            out["wire_compression"] = self.wire_compression
            out["bytes_before_wire"] = self.bytes_before_wire
        if self.output:
            out["output"] = self.output
        if self.target:
            out["target"] = {
                "name": self.target.name,
                "store": self.target.image_store,
                "version": self.target.engine_version,
                "api_version": self.target.api_version,
            }
        if self.link is not None:
            out["link_mb_s"] = link_mb_s(self.link)
        if self.loaded:
            out["loaded"] = self.loaded
        return out


def link_mb_s(link: float) -> float | str:
    """A measured link for ``--json``: MB/s, or "local" for an engine on this machine."""
    return "local" if link == float("inf") else round(link / 1e6, 1)


def _report(result: Result, codec: str) -> Report:
    names = [familiar_ref(n) for image in result.images for n in image.names]
    layers = {layer.key for image in result.images for m in image.manifests() for layer in m.layers}
    return Report(
        images=names,
        layers=len(layers),
        layers_sent=len(result.sent),
        layers_recompressed=sum(1 for b in result.blobs if b.rewritten and not b.remembered),
        layers_from_memo=sum(1 for b in result.blobs if b.remembered),
        bytes_read=result.bytes_in,
        bytes_sent=result.bytes_out,
        seconds=result.seconds,
        compression=codec,
    )


# Choosing what the target gets ---------------------------------------------------------


def readable_by(info: EngineInfo) -> frozenset[str]:
    """Layer compressions an engine decompresses on load."""
    return frozenset({"none", "gzip", "zstd"} if info.loads_zstd else {"none", "gzip"})


#: Links at least this fast (bytes/s) carry uncompressed layers to a classic store faster
#: than compressed ones: the engine decompresses on one core while it registers a layer.
#: Engine 20.10 gunzips at ~100 MB/s, so from ~500 Mbit/s on gzip costs more than it
#: saves; zstd decompresses fast enough that only an engine on this machine skips it.
UNCOMPRESSED_LINK = {"gzip": 60e6, "zstd": float("inf")}
#: Below this (bytes/s, ~160 Mbit/s) the link, not the CPU, bounds a transfer, so for a
#: classic store the spare CPU goes into a stronger setting: zstd 6 sends 7 % fewer bytes
#: than zstd 3 and still compresses at ~200 MB/s on two cores (long-distance matching
#: would save 12 %, but engines then decompress 40 % slower: measured on Engine 26).
SLOW_LINK = 20e6


def choose_codec(
    info: EngineInfo, requested: Codec | None, link: float | None, *, alone: bool = True
) -> Codec:
    """The layer compression for a target, or Unsupported before a byte is sent.

    ``link`` is the measured bytes/s to it (``inf``: on this machine; None: unknown).
    ``alone`` is False when the same ship feeds other targets: this machine's cores then
    serve all of them, so the link-driven choices that cost CPU are off: plain layers over
    SSH (encryption of 3× the bytes; fan-out to three on loopback measured 1.45× one target
    with gzip 1 into Engine 20.10, 1.62× with none) and the stronger levels on slow links.
    """
    if requested is not None:
        if requested.name not in readable_by(info):
            raise Unsupported(
                f"{info.name} (Engine {info.engine_version}, {info.image_store} store) "
                f"cannot load {requested.name} layers; use --compression gzip or none"
            )
        return requested
    packed = "zstd" if info.loads_zstd else "gzip"
    local = link == float("inf")  # a socket on this machine: nothing to encrypt
    fast = link is not None and link >= UNCOMPRESSED_LINK[packed] and (alone or local)
    if fast and info.image_store == "classic":
        return Codec("none")  # compressing would only cost time, ours and the engine's
    # The containerd store keeps blobs as sent and shipit finds them again by digest, so
    # it always gets the same bytes (zstd 3) whatever the link: a stronger level on one
    # run would make every layer of the next redeploy look new.
    # Only for a lone target: in a fan-out every distinct codec is one more compression
    # (CPU and ~50 MB of zstd workers), which a level bump for one target would cost.
    slow = alone and link is not None and link < SLOW_LINK and info.image_store == "classic"
    if packed == "zstd":
        return Codec("zstd", 6) if slow else Codec("zstd")
    return Codec("gzip", 3) if slow else Codec("gzip")


def choose_wire(
    info: EngineInfo,
    requested: Codec | None,
    layers: Codec,
    wire: Codec | None = None,
    *,
    alone: bool = True,
) -> tuple[Codec, Codec | None]:
    """The layer compression and the compression of the whole upload for a target.

    A classic store keeps no compressed blob: it decompresses every layer as it loads it,
    and it takes a whole upload compressed too (Engine >= 23 zstd, 20.10 gzip). When shipit
    picks for a lone classic target (``requested`` and ``wire`` None) and ``layers`` would
    be compressed, the layers go plain inside an upload compressed with ``layers``'s
    setting: as many bytes on the wire, but each layer streams as it is read instead of
    waiting in a spool until its compressed size is known for its tar header (5 s of idle
    link for the 700 MB first layer of the benchmark image at 100 Mbit/s). In a fan-out
    the layers stay compressed: one compression then serves every target of a codec. The
    containerd store is not chosen for this because it keeps the layer blobs as sent:
    compressed, they take under a third of the disk, and a later ship finds them by the memo.

    ``wire`` forces the upload's compression (``none``: off); the layers inside then go
    plain on either store unless ``requested`` names their compression. On the containerd
    store that trades the plain blobs' disk for a cold ship that does not wait for the
    first layer's compressed size (3.6 s of 74 for the benchmark image at 100 Mbit/s).
    """
    if wire is not None:
        if wire.name == "none":
            return layers, None
        if wire.name not in readable_by(info):
            raise Unsupported(
                f"{info.name} (Engine {info.engine_version}) cannot load a {wire.name} upload"
            )
        return (Codec("none") if requested is None else layers), wire
    if requested is None and alone and info.image_store == "classic" and layers.name != "none":
        return Codec("none"), layers
    return layers, None


def _checked_names(images: list[str]) -> list[str]:
    if not images:
        raise UsageError("name at least one image")
    for name in images:
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise UsageError(f"invalid image name {name!r}")
    return images


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
    from shipit.daemon import save_stream

    with connect.open(source) as engine:
        src = IterReader(save_stream(engine, _checked_names(images)))
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


def __getattr__(name: str) -> Any:
    # load/ship need the Docker SDK; importing it lazily keeps archive commands quick.
    if name in ("DaemonSink", "TargetResult", "load", "ship", "ship_many"):
        from shipit import shipping

        return getattr(shipping, name)
    raise AttributeError(name)


__all__ = [
    "Connect",
    "Inspection",
    "TargetResult",  # noqa: F822 - lazy, see __getattr__
    "Report",
    "ShipitError",
    "choose_codec",
    "choose_wire",
    "convert",
    "inspect",
    "load",  # noqa: F822
    "save",
    "ship",  # noqa: F822
    "ship_many",  # noqa: F822
    "verify",
]
