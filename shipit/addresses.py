"""How an address names a target: one rule per kind of destination, first match wins.
Each kind's module is imported only when its rule matches (the Docker SDK and paramiko
load only for engines)."""

from __future__ import annotations

from shipit.errors import ShipitError
from shipit.options import Connect
from shipit.target import Target


def open_target(address: str | None, connect: Connect) -> Target:
    """The target an address names. Rules, first match wins:

    - ``file:PATH`` or a path ending in ``.tar`` (also ``.tar.gz``, ``.tar.zst``): an
      archive file;
    - ``ctr://[user@]host[:port]`` or ``containerd://…`` (``?namespace=``, ``&address=``,
      ``&snapshotter=``): containerd over SSH, driven by its ``ctr`` (shipit.containerd);
    - an SSH alias whose host has ``ctr`` or ``k3s`` and no ``docker``: that containerd,
      in the ``k8s.io`` namespace (one command on the host tells);
    - anything else: a Docker engine (a URL, a context, an SSH alias; see
      shipit.daemon.address).
    """
    if address is not None and _is_archive_path(address):
        from shipit.archive.target import ArchiveTarget

        return ArchiveTarget(address.removeprefix("file:"))
    from shipit.containerd.address import is_containerd_address
    from shipit.containerd.target import ContainerdTarget, open_detected

    if address is not None and is_containerd_address(address):
        return ContainerdTarget.open(address, connect)
    if address is not None and _is_plain_ssh_alias(address):
        node = open_detected(address, connect)
        if node is not None:
            return node
    from shipit.daemon.target import DockerTarget

    return DockerTarget.open(address, connect)


def _is_archive_path(address: str) -> bool:
    if address.startswith("file:"):
        return True
    return "://" not in address and address.endswith((".tar", ".tar.gz", ".tar.zst", ".tgz"))


def _is_plain_ssh_alias(address: str) -> bool:
    """An SSH destination typed as such (not a URL, not a docker context name)."""
    from shipit.daemon.address import parse_address

    if "://" in address or address == "default":
        return False
    try:
        return parse_address(address).is_ssh
    except ShipitError:
        return False
