"""Platforms (``linux/arm64/v8``): parsing, normalising and matching them the way
containerd does, and choosing an image's manifests for the platforms a target runs.

An image saved from the containerd store is often an index over several platforms, some
of whose manifests are absent from the archive (only the host's were pulled), with
BuildKit attestation manifests beside them (``unknown/unknown``). A single-platform
store takes one manifest; a store that keeps indexes takes an index naming only what is
present.
"""

from __future__ import annotations

import platform as _host
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shipit.errors import UsageError

#: The annotations BuildKit puts on an attestation manifest's index entry.
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION = "attestation-manifest"

_ARCH_ALIASES = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
}
#: The variant an architecture has when none is written (containerd's Normalize).
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


@dataclass(frozen=True, order=True)
class Platform:
    """os/architecture[/variant], normalised: ``aarch64`` is ``arm64``, whose variant is v8."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def of(cls, os: str, architecture: str, variant: str | None = None) -> Platform:
        os = (os or "").lower()
        arch = (architecture or "").lower()
        variant = (variant or "").lower() or None
        arch, implied = _ARCH_ALIASES.get(arch, (arch, None))
        variant = variant or implied
        if arch == "arm64" and variant == "8":
            variant = "v8"
        return cls(os, arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8``, ``linux/amd64`` (a bare ``arm64`` means linux)."""
        parts = [p for p in text.strip().split("/")]
        if not 1 <= len(parts) <= 3 or not all(parts):
            raise UsageError(f"platform {text!r}: expected os/arch[/variant], e.g. linux/arm64")
        if len(parts) == 1:
            parts.insert(0, "linux")
        return cls.of(*parts)

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Platform | None:
        """The ``platform`` of a descriptor, or the os/architecture/variant of a config."""
        if not isinstance(value, Mapping):
            return None
        os, arch = value.get("os"), value.get("architecture")
        if not isinstance(os, str) or not isinstance(arch, str) or not os or not arch:
            return None
        variant = value.get("variant")
        return cls.of(os, arch, variant if isinstance(variant, str) else None)

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform."""
        return cls.of("linux", _host.machine())

    @property
    def known(self) -> bool:
        return self.os != "unknown" and self.architecture != "unknown"

    def matches(self, other: Platform) -> bool:
        """Same os and architecture, and the same variant once defaults are filled in."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        default = _DEFAULT_VARIANT.get(self.architecture)
        return (self.variant or default) == (other.variant or default)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platforms(values: Iterable[str]) -> tuple[Platform, ...]:
    """``--platform`` values (each may also be a comma-separated list), in order, once each."""
    out: list[Platform] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                found = Platform.parse(part)
                if found not in out:
                    out.append(found)
    return tuple(out)


def describe(platforms: Iterable[Platform]) -> str:
    names = [str(p) for p in platforms]
    return ", ".join(names) if names else "none"


def is_attestation(annotations: Mapping[str, str]) -> bool:
    return annotations.get(REFERENCE_TYPE) == ATTESTATION
