"""Checking what landed: every name on a target is the image sent, for the platform the
target runs. One check for every target that can show an image as ``docker image
inspect`` does (its ``Id``, ``RootFS.Layers``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shipit.archive.model import ImageManifest
from shipit.errors import EngineError, VerificationFailed
from shipit.oci import familiar_ref, short
from shipit.platforms import Platform
from shipit.target import Capabilities, LandedIds, SourceImage
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


def expected_id(landed: Landed, caps: Capabilities) -> str | None:
    """The ID each name of ``landed`` must show on the target (None: no ID to check)."""
    if caps.identity == "none":
        return None
    manifest = manifest_for(landed, caps.platform)
    if caps.identity == "config":
        return manifest.config.digest if manifest is not None else None
    return landed.root.digest


def image_id(details: Mapping[str, Any]) -> str:
    have = str(details.get("Id"))
    return have if have.startswith("sha256:") else f"sha256:{have}"  # Podman's form


def is_image(details: Mapping[str, Any] | None, ids: frozenset[str], image: SourceImage) -> bool:
    """``details`` show ``image`` exactly: an ID it is known by, and its diff_ids."""
    if details is None or image_id(details) not in ids:
        return False
    return tuple((details.get("RootFS") or {}).get("Layers") or []) == image.diff_ids


def check_retagged(
    images: Sequence[SourceImage], landed: LandedIds, inspect: Inspect, target: str
) -> None:
    """After pointing names at images a target held: each name is its image."""
    found = inspect(tuple(image.name for image in images))
    wrong = [
        familiar_ref(image.name)
        for image in images
        if not is_image(found.get(image.name), landed(image.id), image)
    ]
    if wrong:
        raise VerificationFailed(f"after tagging on {target}: {', '.join(wrong)} not as sent")


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
            want = expected_id(landed, caps)
            if want is None:
                continue
            have = image_id(details)
            if have != want and not (
                caps.identity == "manifest" and same_config(details, manifest.config.value)
            ):
                problems.append(
                    f"{familiar_ref(name)} has ID {short(have)}, expected {short(want)}"
                )
    if problems:
        raise VerificationFailed(f"after loading into {target}: " + "; ".join(problems))


#: The created time, in the forms engines write it: seconds, a fraction, a zone.
_INSTANT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")


def _instant(value: object) -> tuple[str, str, str] | None:
    match = _INSTANT.fullmatch(str(value or ""))
    if match is None:
        return None
    base, fraction, zone = match.groups()
    return base, (fraction or "").rstrip("0"), "Z" if zone in (None, "Z", "+00:00") else zone


def same_config(details: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a containerd store's name shows the image of ``config`` (its creation
    time, platform and settings; the diff_ids are checked apart) under another manifest:
    another ship of the same image, with its layers compressed another way, took the name
    at the same moment. Such a store names an image by its manifest and shows no config
    digest."""
    created = _instant(config.get("created"))
    if created is None or _instant(details.get("Created")) != created:
        return False
    if (details.get("Architecture"), details.get("Os")) != (
        config.get("architecture"),
        config.get("os"),
    ):
        return False
    settings, shown = config.get("config") or {}, details.get("Config") or {}
    return all((settings.get(key) or None) == (shown.get(key) or None) for key in _RUN_SETTINGS)


#: What an image's config says about how it runs, as ``docker image inspect`` shows it
#: (engines leave out, or blank, the rest: ``Image``, the attach flags).
_RUN_SETTINGS = (
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
)


def source_image(name: str, details: Mapping[str, Any]) -> SourceImage:
    """A source image from what ``image inspect`` (Docker's or Podman's) shows of it."""
    image_id = str(details.get("Id") or "")
    if not image_id.startswith("sha256:"):
        image_id = f"sha256:{image_id}"  # Podman's form
    if not image_id.removeprefix("sha256:"):
        raise EngineError(f"{name}: the engine shows no image ID")
    return SourceImage(
        name=name,
        id=image_id,
        diff_ids=tuple((details.get("RootFS") or {}).get("Layers") or []),
        platform=Platform.of(
            str(details.get("Os") or "linux"),
            str(details.get("Architecture") or ""),
            details.get("Variant") or None,
        ),
        size=int(details.get("Size") or 0),
    )
