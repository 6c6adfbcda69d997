"""How an address names a target or a source: one rule per kind, first match wins.

Each kind's module is imported only when its rule matches (the Docker SDK and paramiko load
only for engines). An SSH destination that names no kind (``ssh://host``, an alias) is
asked once, over the session that then serves the target, which engine the host runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipit.errors import Unsupported, UsageError
from shipit.options import Connect
from shipit.target import Source, Target

if TYPE_CHECKING:
    from shipit.remote import RemoteHost

#: One command on an SSH host: which engines' CLIs it has.
_MARK = "shipit-engines:"
_WHICH = (
    f"echo {_MARK}; for c in docker podman ctr k3s; do "
    'command -v "$c" >/dev/null 2>&1 && echo "$c"; done; true'
)


def open_target(address: str | None, connect: Connect) -> Target:
    """The target an address names. Rules, first match wins:

    - ``file:PATH`` or a path ending in ``.tar`` (also ``.tar.gz``, ``.tar.zst``): an
      archive file;
    - ``podman://[user@]host[:port]``: Podman on that host over SSH (shipit.podman);
    - ``ctr://[user@]host[:port]`` or ``containerd://…`` (``?namespace=``, ``&address=``,
      ``&snapshotter=``): containerd over SSH, driven by its ``ctr`` (shipit.containerd);
    - an SSH destination whose host has no ``docker``: its Podman, else its containerd
      (``ctr`` or ``k3s``, in the ``k8s.io`` namespace);
    - anything else: a Docker engine (a URL, a context, an SSH alias; shipit.daemon).
    """
    if address is not None and _is_archive_path(address):
        from shipit.archive.target import ArchiveTarget

        return ArchiveTarget(address.removeprefix("file:"))
    from shipit.containerd.address import is_containerd_address
    from shipit.podman.address import is_podman_address

    if address is not None and is_podman_address(address):
        from shipit.podman.target import PodmanTarget

        return PodmanTarget.open(address, connect)
    if address is not None and is_containerd_address(address):
        from shipit.containerd.target import ContainerdTarget

        return ContainerdTarget.open(address, connect)
    from shipit.daemon.target import DockerTarget

    remote, engines = _ask_host(address, connect)
    if remote is None:
        return DockerTarget.open(address, connect)
    try:
        if engines is None or "docker" in engines:
            return DockerTarget.open(address, connect, session=remote.session)
        if "podman" in engines:
            from shipit.podman.target import PodmanHost, PodmanTarget

            return PodmanTarget.on(PodmanHost(remote))
        if engines & {"ctr", "k3s"}:
            from shipit.containerd.target import open_on

            return open_on(remote, address or "")
        raise Unsupported(f"{remote.name}: neither docker, podman nor ctr on the host")
    except BaseException:
        remote.close()
        raise


def open_source(address: str | None, connect: Connect) -> Source:
    """The engine an address names, to save images from: a Docker engine or Podman, by
    the rules of ``open_target`` (an archive is read by ``shipit load``; a containerd
    node is a target only)."""
    from shipit.podman.address import is_podman_address

    if address is not None and is_podman_address(address):
        from shipit.podman.target import PodmanSource

        return PodmanSource.open(address, connect)
    from shipit.daemon.target import DockerSource

    remote, engines = _ask_host(address, connect)
    if remote is None:
        return DockerSource.open(address, connect)
    try:
        if engines is None or "docker" in engines:
            return DockerSource.open(address, connect, session=remote.session)
        if "podman" in engines:
            from shipit.podman.target import PodmanHost, PodmanSource

            return PodmanSource(PodmanHost(remote))
        if not engines & {"ctr", "k3s"}:
            raise Unsupported(f"{remote.name}: neither docker nor podman on the host")
        raise Unsupported(f"{remote.name}: images are shipped to a containerd host, not from one")
    except BaseException:
        remote.close()
        raise


def is_ssh_destination(address: str | None) -> bool:
    """An address whose host is asked which engine it runs: an SSH destination (an alias,
    ``ssh://``, a context that names one)."""
    from shipit.daemon.address import parse_address

    return parse_address(address).ssh_host is not None


def _ask_host(address: str | None, connect: Connect) -> tuple[RemoteHost | None, set[str] | None]:
    """For an SSH destination: one session and one command on it tell which engines' CLIs
    the host has (None: no shell answered, so the Docker engine's own channel will say
    why). Not an SSH destination: (None, None)."""
    from shipit.daemon.address import parse_address

    where = parse_address(address)
    if where.ssh_host is None:
        return None, None
    from shipit.remote import RemoteHost  # paramiko: only for an SSH destination

    remote = RemoteHost.open(
        where.ssh_host, connect, user=where.ssh_user, port=where.ssh_port, name=where.name
    )
    try:
        done = remote.run_shell(_WHICH, timeout=30)
    except BaseException:
        remote.close()
        raise
    words = done.text.split()
    if not done.ok or _MARK not in words:
        return remote, None
    return remote, set(words[words.index(_MARK) + 1 :])


def _is_archive_path(address: str) -> bool:
    if address.startswith("file:"):
        return True
    return "://" not in address and address.endswith((".tar", ".tar.gz", ".tar.zst", ".tgz"))


def parse_user_host_port(spec: str) -> tuple[str | None, str, int | None]:
    """Split ``[user@]host[:port]`` (IPv6 as ``[addr]:port``) as ProxyJump and ssh:// write it."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host:
        raise UsageError(f"ssh destination {spec!r}: no host")
    try:
        return user or None, host, int(port) if port else None
    except ValueError:
        raise UsageError(f"ssh destination {spec!r}: port {port!r} is not a number") from None
