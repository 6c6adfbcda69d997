"""An archive file as a target: written atomically (nothing appears at the path until the
archive is complete), or streamed to stdout for ``-``."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from shipit.closable import Closable
from shipit.errors import ShipitError
from shipit.pipeline import Result, Subscriber, subscriber_stream
from shipit.progress import Progress
from shipit.target import (
    Capabilities,
    Holdings,
    HoldsNothing,
    LandedIds,
    Plan,
    Retags,
    SourceImage,
    TargetFacts,
)

ALL_COMPRESSIONS = frozenset({"none", "gzip", "zstd", "bzip2", "xz"})

#: An archive takes anything, in the layout every engine's ``docker load`` reads: an OCI
#: layout with ``manifest.json`` beside ``index.json``, every platform present kept.
ARCHIVE = Capabilities(
    compressions=ALL_COMPRESSIONS,
    upload_compressions=frozenset(),
    keeps_blobs=True,
    manifest_json=True,
    indexes=True,
    platform=None,
    stages=False,
    holdings="nothing",
    identity="none",
    describe="an archive",
)


class ArchiveTarget(Closable):
    """An archive file (``-``: stdout)."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path

    @property
    def capabilities(self) -> Capabilities:
        return ARCHIVE

    @property
    def facts(self) -> TargetFacts:
        return TargetFacts(self.path, "archive", "file")

    def measure_link(self) -> float | None:
        return float("inf")

    def about(self) -> dict[str, Any]:
        return {"name": self.path, "kind": "archive"}

    def summary(self) -> list[tuple[str, str]]:
        return [("archive", self.path), ("takes", "every layout, compression and platform")]

    def already_holds(self, images: Sequence[SourceImage], landed: LandedIds) -> Retags | None:
        return None  # capabilities.retags is False: an archive file is written whole every time

    def retag(self, retags: Retags, images: Sequence[SourceImage], landed: LandedIds) -> None:
        raise NotImplementedError("capabilities.retags is False")

    def holdings(self, layers: list[list[str]]) -> Holdings:
        return HoldsNothing()

    def prepare(self, plan: Plan) -> None:
        pass

    def receive(
        self,
        subscriber: Subscriber,
        result: Result,
        plan: Plan,
        holdings: Holdings,
        progress: Progress | None,
    ) -> list[str]:
        stream = subscriber_stream(subscriber, result, progress=progress, layout=plan.layout)
        try:
            self.write(stream)
        finally:
            stream.close()
        return []

    def verify(self, result: Result) -> None:
        pass  # every digest was computed from the bytes written

    def write(self, chunks: Iterable[bytes]) -> int:
        if self.path == "-":
            return _write_all(sys.stdout.buffer, chunks)
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, partial = tempfile.mkstemp(
                dir=folder, prefix=f".{os.path.basename(self.path)}.", suffix=".partial"
            )
        except OSError as exc:
            raise ShipitError(f"cannot write in {folder}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                written = _write_all(out, chunks)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(partial, 0o644)
            os.replace(partial, self.path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            if isinstance(exc, OSError):
                raise ShipitError(f"writing {self.path}: {exc.strerror or exc}") from None
            raise
        return written

    def close(self) -> None:
        pass


def _write_all(out: Any, chunks: Iterable[bytes]) -> int:
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    return written
