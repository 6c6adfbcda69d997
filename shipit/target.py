"""Where images go: the one interface every destination implements.

A target says what it can take in ``Capabilities`` (layer and upload compressions, the
layout and platform it needs, whether it keeps blobs as sent, whether it can stage
loads, how it tells what it holds and how a landing is checked). Shaping policy
(shipit.policy) and the ship (shipit.shipping) ask those, never a class or a store name.

A new kind of destination is one module implementing ``Target`` plus one rule in
shipit.addresses: the Docker engine is shipit.daemon.target, an archive file is
shipit.archive.target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shipit.platforms import Platform

if TYPE_CHECKING:
    from shipit.archive.reader import BlobRecord
    from shipit.compression import Codec
    from shipit.memo import Memo
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
    full_repo_tags: bool = False
    """It wants full references in ``manifest.json`` (Podman: else it names ``localhost/…``)."""
    one_index_entry: bool = False
    """It reads ``index.json`` only when that names one image once (Podman 4)."""
    retags: bool = False
    """It can tell that it holds an image exactly (by ID) and point a name at it without a
    load, so a ship of what is already there saves and sends nothing."""
    carried_compressions: frozenset[str] = frozenset()
    """Compressions its connection can carry an upload in, undone on the far host before
    the target reads it (over SSH, the host's ``zstd``): for a target that reads none."""

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

    @property
    def image_store(self) -> str:
        """The name the Docker engine's own facts use for ``store``."""
        return self.store

    @property
    def engine_version(self) -> str:
        return self.version


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
    store_bytes: int | None = None
    """About what the images take unpacked, for a target to check its free space against
    before anything is sent (None: do not check)."""


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

    def holds_none(self) -> bool:
        """Nothing the images use is there: a cold ship, whatever form it gets."""
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

    def holds_none(self) -> bool:
        return True


@dataclass(frozen=True)
class SourceImage:
    """One named image on a source, as its engine shows it before any save."""

    name: str
    id: str  # the engine's image ID: the config digest, or (containerd store) the manifest's
    diff_ids: tuple[str, ...]
    platform: Platform
    size: int  # its uncompressed layers, about what a save of it carries


#: The image IDs shipit landed on targets before for a source image ID (shipit.landings).
LandedIds = Callable[[str], frozenset[str]]

#: Names to point at images a target already holds: (image ID there, name).
Retags = list[tuple[str, str]]


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

    def already_holds(self, images: Sequence[SourceImage], landed: LandedIds) -> Retags | None:
        """With ``capabilities.retags``: when it holds every image exactly (its ID is the
        source's, or one ``landed`` names, with the same diff_ids), the names still to
        point; else None, and the images are shipped."""
        ...

    def retag(self, retags: Retags, images: Sequence[SourceImage], landed: LandedIds) -> None:
        """Point the names, then check each name is its image (VerificationFailed)."""
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


class Source(Protocol):
    """An engine to save images from (shipit.daemon.target.DockerSource,
    shipit.podman.target.PodmanSource)."""

    @property
    def name(self) -> str: ...

    def images(self, names: list[str]) -> list[SourceImage]:
        """Each named image, in order (ImageNotFound for one that does not exist)."""
        ...

    def keeps_indexes(self) -> bool: ...
    def save(self, names: list[str]) -> Iterator[bytes]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Source: ...
    def __exit__(self, *exc: object) -> None: ...
