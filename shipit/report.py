"""What a command did, for people (the CLI renders it) and scripts (``--json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shipit.errors import ShipitError
from shipit.oci import familiar_ref
from shipit.pipeline import Result
from shipit.target import TargetFacts


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
    target: TargetFacts | None = None
    loaded: list[str] = field(default_factory=list)
    output: str | None = None
    link: float | None = None  # bytes/s measured to the target (inf: on this machine)
    platforms: list[str] = field(default_factory=list)  # what was shipped, when chosen
    notes: list[str] = field(default_factory=list)  # what a user should know, one line each
    phases: dict[str, float] = field(default_factory=dict)  # where the seconds went
    decisions: list[str] = field(default_factory=list)  # what was chosen and why (-v)
    already_there: bool = False  # the target held every image: nothing saved or sent

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
        if self.target and self.target.kind != "archive":
            out["target"] = {
                "name": self.target.name,
                "kind": self.target.kind,
                "store": self.target.store,
                "version": self.target.version,
                "api_version": self.target.api_version,
            }
        if self.link is not None:
            out["link_mb_s"] = link_mb_s(self.link)
        if self.loaded:
            out["loaded"] = self.loaded
        if self.platforms:
            out["platforms"] = self.platforms
        if self.notes:
            out["notes"] = self.notes
        if self.phases:
            out["phases"] = self.phases
        if self.decisions:
            out["decisions"] = self.decisions
        if self.already_there:
            out["already_there"] = True
        return out


def link_mb_s(link: float) -> float | str:
    """A measured link for ``--json``: MB/s, or "local" for an engine on this machine."""
    return "local" if link == float("inf") else round(link / 1e6, 1)


def report_of(result: Result, codec: str) -> Report:
    """The counts every command reports, from what one sink got."""
    names = [familiar_ref(n) for image in result.images for n in image.names]
    blobs = {record.key for record in result.blobs}
    layers = {
        layer.key
        for image in result.images
        for m in image.manifests()
        for layer in m.layers
        if layer.key in blobs or result.scan is None or layer.key not in result.scan.documents
    }
    return Report(
        images=names,
        layers=len(layers),
        layers_sent=len(result.sent),
        layers_recompressed=sum(1 for b in result.blobs if b.rewritten and not b.remembered),
        layers_from_memo=sum(1 for b in result.blobs if b.remembered),
        layers_skipped=len(result.skipped),
        bytes_saved=result.bytes_saved,
        bytes_read=result.bytes_in,
        bytes_sent=result.bytes_out,
        seconds=result.seconds,
        compression=codec,
        stages=result.stages,
        notes=list(result.output.notes) if result.output else [],
    )


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
