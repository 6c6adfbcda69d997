"""Where archives go: a file (written atomically), stdout, or a Docker engine."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shipit.errors import ShipitError

ALL_COMPRESSIONS = frozenset({"none", "gzip", "zstd", "bzip2", "xz"})


@dataclass
class FileSink:
    """An archive file. Nothing appears at ``path`` until the archive is complete."""

    path: str
    readable: frozenset[str] = ALL_COMPRESSIONS

    @property
    def name(self) -> str:
        return self.path

    def consume(self, chunks: Iterable[bytes]) -> int:
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


def _write_all(out: Any, chunks: Iterable[bytes]) -> int:
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    return written
