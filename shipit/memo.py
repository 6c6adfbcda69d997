"""What shipit has compressed before: a blob and a codec → the blob that came out.

Compressing is deterministic (the same bytes, codec, level and library give the same
bytes), so a layer compressed once need not be compressed again to learn its digest. A
redeploy into the containerd store needs exactly that digest and not the bytes: the store
keeps blobs as they were sent and finds them by digest. With the memo shipit names the
blob, asks the target whether it holds it, and leaves an unchanged layer uncompressed —
on a 2 GB image that is the difference between 8 s of CPU and none.

Entries come only from bytes shipit compressed and hashed itself: one small JSON file
per blob and codec, written to a temp name and renamed into place. A stale entry (a
library whose output changed) only costs a probe that answers "absent", after which the
layer is compressed as usual. The memo is an optimisation: any trouble reading or
writing it is silent and means "not known". Set ``SHIPIT_CACHE_DIR`` to move it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from shipit.archive.reader import BlobRecord
from shipit.compression import Codec

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def cache_dir() -> Path:
    """``SHIPIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/shipit``, else ``~/.cache/shipit``."""
    named = os.environ.get("SHIPIT_CACHE_DIR")
    if named:
        return Path(named)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "shipit" if xdg else Path.home() / ".cache" / "shipit"


@dataclass(frozen=True)
class Compressed:
    """A blob as a codec made it: what a manifest needs to name it."""

    digest: str
    size: int
    compression: str
    diff_id: str

    def record(self, source: BlobRecord) -> BlobRecord:
        """``source`` (read past, not kept) described as this compressed blob."""
        return replace(
            source,
            digest=self.digest,
            size=self.size,
            compression=self.compression,
            diff_id=source.diff_id or self.diff_id,
            remembered=True,
        )

    def blob(self, source_digest: str) -> BlobRecord:
        """A record of this blob alone, to ask a target about (not read yet)."""
        unread = BlobRecord(
            key=source_digest,
            source_digest=source_digest,
            source_size=0,
            source_compression="none",
            digest="",
            size=0,
            compression="",
        )
        return self.record(unread)


class Memo:
    """Compressed forms of blobs, by the source blob's digest and the codec."""

    def __init__(self, root: Path) -> None:
        self.root = root / "compressed"

    @classmethod
    def default(cls) -> Memo:
        return cls(cache_dir())

    def _path(self, source_digest: str, codec: Codec) -> Path | None:
        if not _DIGEST.fullmatch(source_digest) or codec.name == "none":
            return None
        return self.root / str(codec).replace(":", "-") / source_digest.removeprefix("sha256:")

    def get(self, source_digest: str, codec: Codec) -> Compressed | None:
        path = self._path(source_digest, codec)
        if path is None:
            return None
        try:
            entry = json.loads(path.read_text())
            found = Compressed(
                str(entry["digest"]),
                int(entry["size"]),
                str(entry["compression"]),
                str(entry["diff_id"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        ok = _DIGEST.fullmatch(found.digest) and _DIGEST.fullmatch(found.diff_id)
        return found if ok and found.size > 0 and found.compression == codec.name else None

    def remember(self, codec: Codec, record: BlobRecord) -> None:
        """Note what ``codec`` made of a blob (a record of bytes shipit wrote itself)."""
        path = self._path(record.source_digest, codec)
        if path is None or record.diff_id is None or record.compression != codec.name:
            return
        entry = {
            "digest": record.digest,
            "size": record.size,
            "compression": record.compression,
            "diff_id": record.diff_id,
        }
        with contextlib.suppress(OSError):
            replace_json(path, entry)


def replace_json(path: Path, value: object) -> None:
    """Write ``value`` to a temp name beside ``path`` and rename it into place: a reader
    (another shipit, at the same moment) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(value, out)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
