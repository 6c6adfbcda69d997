"""Where images go: the one interface every destination implements, and how an address
names one.

A target says what it can take in ``Capabilities`` (layer and upload compressions, the
layout and platform it needs, whether it keeps blobs as sent, whether it can stage
loads, how it tells what it holds and how a landing is checked). Shaping policy
(shipit.policy) and the ship (shipit.shipping) ask those, never a class or a store name.

A new kind of destination is one module implementing ``Target`` plus one rule in
``open_target``: the Docker engine is shipit.daemon.target, an archive file is
shipit.archive.target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shipit.errors import ShipitError
from shipit.platforms import Platform

if TYPE_CHECKING:
    from shipit.archive.reader import BlobRecord
    from shipit.compression import Codec
    from shipit.memo import Memo
    from shipit.options import Connect
    from shipit.pipeline import Result, Subscriber
    from shipit.progress import Progress
    from shipit.transform import Layout


@dataclass(frozen=True)
class Capabilities:
    """What a target can take. Policy reads these; nothing else about a target."""

    compressions: frozenset[str]
    """Layer compressions it decompresses on load."""
    upload_compressions: frozenset[str]
    """Compressions of a whole upload it reads (empty: it takes a plain tar only)."""
    keeps_blobs: bool
    """Layer blobs are stored as sent (the containerd store) rather than unpacked and
    dropped (a classic store): compressed blobs then save its disk and are found again."""
    manifest_json: bool
    """It reads the legacy ``manifest.json`` (classic stores read nothing else)."""
    indexes: bool
    """It keeps an index per image, so several platforms can go to it."""
    platform: Platform | None
    """The platform it runs; None for a destination that runs nothing (an archive)."""
    stages: bool
    """It can register layers in several loads while the rest streams (staged loads)."""
    holdings: Literal["chains", "content", "nothing"]
    """How it tells what it has: layer chains by diff_id (a classic store), blobs in a
    content store (containerd), or not at all."""
    identity: Literal["config", "manifest", "none"]
    """How a landed image is checked: its ID is the config digest, or the digest of the
    manifest or index sent; ``none``: nothing to check."""
    describe: str
    """For messages: ``rig-d20 (Engine 20.10.24, classic store)``."""

    def readable(self, compression: str) -> bool:
        return compression in self.compressions


@dataclass(frozen=True)
class TargetFacts:
    """What a report says about a target."""

    name: str
    kind: str  # "docker", "archive", ...
    store: str  # "classic", "containerd", "file", ...
    version: str = ""
    api_version: str = ""


@dataclass(frozen=True)
class Plan:
    """How one target is fed on one ship, decided before a byte is sent."""

    codec: Codec | None
    """The layers' compression; None: as they come, unless the target cannot read them."""
    wire: Codec | None
    """The whole upload's compression around the layers (None: plain)."""
    staged: bool
    layout: Layout
    link: float | None
    """Measured bytes/s to the target (inf: this machine; None: not measured)."""
    stage_order: tuple[str, ...] = ()
    """Staged loads: the diff_ids to load bottom-up (the first image's layers)."""


class Holdings(Protocol):
    """What one target already has, so need not be sent (the delta)."""

    def pre_skip(self, digest: str) -> bool:
        """Leave a blob unread: the target needs it under no name (before reading it)."""
        ...

    def wants(self, record: BlobRecord) -> bool:
        """Whether the target needs this blob sent."""
        ...

    def warm(self, memo: Memo, codec: Codec) -> None:
        """Ask ahead about the blobs the memo names (while the source prepares)."""
        ...

    def still_has(self, records: Iterable[BlobRecord]) -> bool:
        """After the load: every blob left out is still there."""
        ...


class HoldsNothing:
    """A target that keeps nothing between ships (a file) or was told to take everything."""

    def pre_skip(self, digest: str) -> bool:
        return False

    def wants(self, record: BlobRecord) -> bool:
        return True

    def warm(self, memo: Memo, codec: Codec) -> None:
        pass

    def still_has(self, records: Iterable[BlobRecord]) -> bool:
        return True


class Target(Protocol):
    """A destination, connected. Close it (or use ``with``) when done."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def facts(self) -> TargetFacts: ...

    def measure_link(self) -> float | None:
        """Bytes/s to the target (inf: on this machine; None: unknown)."""
        ...

    def about(self) -> dict[str, Any]:
        """What ``shipit info --json`` prints about it."""
        ...

    def summary(self) -> list[tuple[str, str]]:
        """What ``shipit info`` prints about it: (label, value) rows."""
        ...

    def holdings(self, layers: list[list[str]]) -> Holdings:
        """Ask what it holds of the images whose diff_ids are ``layers``."""
        ...

    def prepare(self, plan: Plan) -> None:
        """Before the first byte: clear what a killed run may have left."""
        ...

    def receive(
        self,
        subscriber: Subscriber,
        result: Result,
        plan: Plan,
        holdings: Holdings,
        progress: Progress | None,
    ) -> list[str]:
        """Take one archive from ``subscriber``; returns what the target said it loaded."""
        ...

    def verify(self, result: Result) -> None:
        """Check what landed against what was sent (VerificationFailed)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Target: ...

    def __exit__(self, *exc: object) -> None: ...


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
