"""shipit as a library: every CLI command is one call here.

    from shipit.api import ship, ShipOptions
    report = ship(["rosie:latest"], to="deploy-server")
    print(report.bytes_sent, report.target.store)

Functions never print; pass ``progress=Progress(callback)`` to watch them work. Errors
are ``shipit.errors.ShipitError`` subclasses, each with an exit code. The Docker SDK and
paramiko load only when a command talks to an engine.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from shipit.addresses import open_target
from shipit.archive.model import Image
from shipit.errors import BadInput, ShipitError
from shipit.inputs import input_size, open_input
from shipit.oci import familiar_ref, short
from shipit.options import Connect, ShipOptions
from shipit.pipeline import Result, scan_only
from shipit.platforms import Platform, is_attestation
from shipit.policy import choose_codec, choose_wire
from shipit.progress import Progress
from shipit.report import Report, TargetResult, link_mb_s
from shipit.shipping import convert, load, save, ship, ship_many
from shipit.target import Capabilities, Target, TargetFacts
from shipit.transform import LayerPolicy, WrittenManifest


@dataclass
class Inspection:
    images: list[Image]
    result: Result

    def to_dict(self) -> dict[str, Any]:
        records = {r.key: r for r in self.result.blobs}
        documents = self.result.scan.documents if self.result.scan else {}
        written = self.result.rewritten.images if self.result.rewritten else []
        images = []
        referenced = 0
        for image, tree in zip(self.images, written, strict=True):
            manifests = []
            for entry in tree.entries():
                if not isinstance(entry, WrittenManifest):
                    manifests.append(_absent(entry))
                    continue
                manifest = entry.manifest
                layers = []
                for layer in manifest.layers:
                    record = records.get(layer.key)
                    size: int | None
                    kind: str | None
                    if record is None and layer.key in documents:  # an in-toto statement
                        size, kind = documents[layer.key].size, "json"
                    else:
                        size = record.source_size if record else None
                        kind = record.source_compression if record else None
                        referenced += size or 0
                    layers.append(
                        {
                            "digest": record.source_digest if record else layer.key,
                            "size": size,
                            "compression": kind,
                            "diff_id": layer.diff_id,
                        }
                    )
                manifests.append(
                    {
                        "digest": manifest.descriptor.digest if manifest.descriptor else None,
                        "platform": str(entry.platform) if entry.platform else None,
                        "attestation": bool(entry.attests),
                        "present": True,
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


def _absent(entry: Any) -> dict[str, Any]:
    platform = Platform.from_json(entry.platform)
    return {
        "digest": entry.digest,
        "platform": str(platform) if platform else None,
        "attestation": is_attestation(entry.annotations),
        "present": False,
        "config": None,
        "layers": [],
    }


def inspect(path: str, *, full: bool = False, progress: Progress | None = None) -> Inspection:
    """Read an archive and describe it; ``full`` also checks every layer's diff_id."""
    with ExitStack() as stack:
        src = stack.enter_context(open_input(path))
        result = scan_only(src, LayerPolicy(None, full=full), progress)
    return Inspection(result.images, result)


def verify(path: str, *, progress: Progress | None = None) -> Inspection:
    """Check every digest, size and diff_id of an archive; raises BadInput on the first flaw."""
    inspection = inspect(path, full=True, progress=progress)
    for record in inspection.result.blobs:
        if record.source_compression != "none" and record.diff_id is None:
            raise BadInput(f"layer {short(record.source_digest)} could not be checked")
    return inspection


__all__ = [
    "Capabilities",
    "Connect",
    "Inspection",
    "Platform",
    "Report",
    "ShipOptions",
    "ShipitError",
    "Target",
    "TargetFacts",
    "TargetResult",
    "choose_codec",
    "choose_wire",
    "convert",
    "input_size",
    "inspect",
    "link_mb_s",
    "load",
    "open_target",
    "save",
    "ship",
    "ship_many",
    "verify",
]
