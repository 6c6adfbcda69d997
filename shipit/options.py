"""What a ship is asked to do: how to reach engines, and every option, as frozen values
passed whole (adding an option touches this file and the CLI, nothing in between)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from shipit.compression import Codec
from shipit.platforms import Platform

CONNECT_TIMEOUT = 10.0
"""Seconds to connect to an engine or host: TCP, SSH handshake, authentication, the first
API call. Not a limit on later transfers."""


@dataclass(frozen=True)
class Connect:
    """How to reach engines: the SSH config to read and whether to trust new host keys."""

    ssh_config: str | os.PathLike[str] | None = None
    accept_new_host_key: bool = False
    sudo: bool | None = None
    """Over SSH, reach the engine through ``sudo -n`` (None: when the socket is denied)."""


@dataclass(frozen=True)
class ShipOptions:
    """One ship's options (the defaults are what ``shipit IMAGE --to T`` does)."""

    codec: Codec | None = None
    """Layer compression; None: chosen per target and link (shipit.policy)."""
    wire: Codec | None = None
    """Compression of each whole upload; None: chosen per target."""
    staged: bool | None = None
    """Load layers bottom-up in several loads; None: when the link is slow."""
    full: bool = False
    """Send every layer, even those a target holds."""
    verify: bool = True
    """Check what landed against what was sent."""
    space_check: bool = True
    """Refuse a target whose disk plainly cannot hold the images, before sending."""
    trust_layers: bool = False
    """Pass layers on without decompressing those that are not recompressed (their
    diff_ids and inflation then go unchecked until the target reads them)."""
    platforms: tuple[Platform, ...] = ()
    """Platforms to ship; empty: the one each target runs (archives: all present)."""
    connect: Connect = field(default_factory=Connect)
