"""Checking what landed: every name on a target is the image sent, for the platform the
target runs. One check for every target that can show an image as ``docker image
inspect`` does (its ``Id``, ``RootFS.Layers``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shipit.archive.model import ImageManifest
from shipit.errors import VerificationFailed
from shipit.oci import familiar_ref, short
from shipit.platforms import Platform
from shipit.target import Capabilities
from shipit.transform import Landed, Output

#: Looks up names on a target: each name's inspect details, or None where it is missing.
Inspect = Callable[[tuple[str, ...]], Mapping[str, Mapping[str, Any] | None]]


def manifest_for(landed: Landed, platform: Platform | None) -> ImageManifest | None:
    """The manifest of ``landed`` a target running ``platform`` shows."""
    for manifest in landed.manifests:
        own = Platform.from_json(manifest.config.value)
        if platform is not None and own is not None and own.matches(platform):
            return manifest
    return landed.runnable


def check_landed(output: Output, caps: Capabilities, inspect: Inspect, target: str) -> None:
    """Raise VerificationFailed unless every name has the diff_ids sent and the ID the
    target's ``identity`` says it must have (the config digest, or the digest on top)."""
    problems = []
    for landed in output.images:
        manifest = manifest_for(landed, caps.platform)
        found = inspect(landed.names)
        for name in landed.names:
            details = found.get(name)
            if details is None:
                problems.append(f"{familiar_ref(name)} is missing")
                continue
            if manifest is None:
                continue
            got = (details.get("RootFS") or {}).get("Layers") or []
            if got != [layer.diff_id for layer in manifest.layers]:
                problems.append(f"{familiar_ref(name)} has different diff_ids")
            if caps.identity == "none":
                continue
            want = manifest.config.digest if caps.identity == "config" else landed.root.digest
            have = str(details.get("Id"))
            have = have if have.startswith("sha256:") else f"sha256:{have}"  # Podman's form
            if have != want:
                problems.append(
                    f"{familiar_ref(name)} has ID {short(have)}, expected {short(want)}"
                )
    if problems:
        raise VerificationFailed(f"after loading into {target}: " + "; ".join(problems))
