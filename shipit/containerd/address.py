"""What a containerd address names: ``ctr://[user@]host[:port]`` or ``containerd://…``,
optionally ``?namespace=NS&address=SOCKET&snapshotter=NAME``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from shipit.addresses import parse_user_host_port
from shipit.errors import UsageError

SCHEMES = ("ctr://", "containerd://")
#: The kubelet's namespace: what a Kubernetes node runs images from.
DEFAULT_NAMESPACE = "k8s.io"
DEFAULT_SNAPSHOTTER = "overlayfs"
#: Where containerd listens unless configured otherwise, and where k3s puts its own.
DEFAULT_SOCKET = "/run/containerd/containerd.sock"
K3S_SOCKET = "/run/k3s/containerd/containerd.sock"
#: containerd's rule for namespace names (``namespaces.Validate``).
_NAMESPACE = re.compile(r"[a-zA-Z0-9]+(?:[._-][a-zA-Z0-9]+)*")
_SNAPSHOTTER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")


@dataclass(frozen=True)
class NodeAddress:
    """Where a containerd is: an SSH destination and how to reach containerd there."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    namespace: str = DEFAULT_NAMESPACE
    socket: str | None = None
    """The socket; None: ``$CONTAINERD_ADDRESS`` on the host, else the usual paths."""
    snapshotter: str = DEFAULT_SNAPSHOTTER


def is_containerd_address(address: str) -> bool:
    return address.startswith(SCHEMES)


def parse_node_address(address: str) -> NodeAddress:
    """``ctr://[user@]host[:port][?namespace=NS&address=SOCKET&snapshotter=NAME]``."""
    scheme = next((s for s in SCHEMES if address.startswith(s)), None)
    if scheme is None:
        raise UsageError(f"{address}: not a containerd address (ctr://HOST or containerd://HOST)")
    rest, _, query = address[len(scheme) :].partition("?")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise UsageError(f"{address}: expected {scheme}[user@]host[:port][?namespace=NS]")
    user, host, port = parse_user_host_port(rest)
    options = {"namespace": DEFAULT_NAMESPACE, "address": "", "snapshotter": DEFAULT_SNAPSHOTTER}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in options:
            raise UsageError(
                f"{address}: unknown option {key!r} (known: namespace, address, snapshotter)"
            )
        options[key] = value
    namespace, socket, snapshotter = (
        options["namespace"],
        options["address"],
        options["snapshotter"],
    )
    if not _NAMESPACE.fullmatch(namespace) or len(namespace) > 76:
        raise UsageError(f"{address}: {namespace!r} is not a containerd namespace name")
    if socket and not socket.startswith("/"):
        raise UsageError(f"{address}: address={socket} must be an absolute socket path")
    if not _SNAPSHOTTER.fullmatch(snapshotter):
        raise UsageError(f"{address}: {snapshotter!r} is not a snapshotter name")
    return NodeAddress(address, host, user, port, namespace, socket or None, snapshotter)
