"""How an address names a target: one rule per kind of destination, first match wins.
Each kind's module is imported only when its rule matches (the Docker SDK and paramiko
load only for engines)."""

from __future__ import annotations

from shipit.options import Connect
from shipit.target import Target


def open_target(address: str | None, connect: Connect) -> Target:
    """The target an address names. Rules, first match wins:

    - ``file:PATH`` or a path ending in ``.tar`` (also ``.tar.gz``, ``.tar.zst``): an
      archive file;
    - anything else: a Docker engine (a URL, a context, an SSH alias; see
      shipit.daemon.address).
    """
    if address is not None and _is_archive_path(address):
        from shipit.archive.target import ArchiveTarget

        return ArchiveTarget(address.removeprefix("file:"))
    from shipit.daemon.target import DockerTarget

    return DockerTarget.open(address, connect)


def _is_archive_path(address: str) -> bool:
    if address.startswith("file:"):
        return True
    return "://" not in address and address.endswith((".tar", ".tar.gz", ".tar.zst", ".tgz"))
