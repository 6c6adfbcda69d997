"""What the user hands shipit: image names and archive paths, checked before use."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from shipit.errors import UsageError


def checked_names(images: list[str]) -> list[str]:
    if not images:
        raise UsageError("name at least one image")
    for name in images:
        if not name or name.startswith("-") or any(c.isspace() for c in name):
            raise UsageError(f"invalid image name {name!r}")
    return images


def open_input(path: str) -> BinaryIO:
    """An archive to read (``-``: stdin); the caller closes it."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None


def input_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size if path != "-" else None
    except OSError:
        return None
