"""What shipit landed before: a source image ID → the image IDs it became on targets.

A classic store names an image by its config digest, which shipit never rewrites, so the
same image has the same ID on both ends. A containerd store names it by the digest of
the manifest (or index) it was loaded from, and shipit writes that manifest itself (with
the layers recompressed for the target), so the ID there differs from the source's. To
tell, before any save, that such a target already holds an image exactly, shipit keeps
the IDs its verified landings had: a target whose name shows one of them, with the same
diff_ids, holds that image, byte for byte (the ID is a digest over the whole tree).

Entries are written only after a landing was checked, one small JSON file per source ID,
replaced atomically. Like the memo of compressed layers it is an optimisation: any
trouble reading or writing it means "not known", and the image is shipped as usual.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from shipit.memo import cache_dir, replace_json

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Per source image, the most target IDs kept (one per codec and layout, in practice).
KEEP = 16


class Landings:
    def __init__(self, root: Path) -> None:
        self.root = root / "landed"

    @classmethod
    def default(cls) -> Landings:
        return cls(cache_dir())

    def _path(self, source_id: str) -> Path | None:
        if not _DIGEST.fullmatch(source_id):
            return None
        return self.root / source_id.removeprefix("sha256:")

    def ids(self, source_id: str) -> frozenset[str]:
        """The target IDs landed for ``source_id`` (always including itself)."""
        found = {source_id}
        path = self._path(source_id)
        if path is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.update(_digests(json.loads(path.read_text())))
        return frozenset(found)

    def landed_before(self, source_id: str) -> bool:
        """Whether a checked landing of ``source_id`` was noted here (under any ID)."""
        path = self._path(source_id)
        return path is not None and path.is_file()

    def remember(self, source_id: str, target_id: str) -> None:
        """Note a checked landing of ``source_id`` as ``target_id`` (its own ID too: then
        the file says only that it landed somewhere before)."""
        path = self._path(source_id)
        if path is None or not _DIGEST.fullmatch(target_id):
            return
        with contextlib.suppress(OSError, ValueError, TypeError):
            try:
                known = _digests(json.loads(path.read_text()))
            except FileNotFoundError:
                known = []
            if target_id in known:
                return
            replace_json(path, [*known, target_id][-KEEP:])


def _digests(entries: object) -> list[str]:
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, str) and _DIGEST.fullmatch(e)]
