"""Platforms: parsing and matching, and each sink getting the manifests for its platform
(a single-platform store one manifest; a store that keeps indexes an index of what is
present; an archive everything)."""

from __future__ import annotations

import io
import json

import pytest
from imagefactory import (
    TestImage,
    multi_platform_archive,
    oci_archive,
    read_tar,
    sample_images,
    tar_bytes,
)

from shipit.compression import Codec
from shipit.errors import PlatformMissing, UsageError
from shipit.pipeline import Result, convert_stream
from shipit.platforms import Platform, parse_platforms
from shipit.transform import LayerPolicy, Layout

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64/v8")


def test_parse_and_normalise():
    assert str(Platform.parse("linux/arm64")) == "linux/arm64"
    assert Platform.parse("arm64").os == "linux"
    assert Platform.of("linux", "aarch64") == Platform("linux", "arm64")
    assert Platform.of("linux", "x86_64") == Platform("linux", "amd64")
    assert Platform.of("linux", "armhf") == Platform("linux", "arm", "v7")
    both = parse_platforms(["linux/amd64,linux/arm64", "linux/amd64"])
    assert both == (AMD64, Platform.parse("linux/arm64"))
    with pytest.raises(UsageError):
        Platform.parse("linux/arm64/v8/extra")
    with pytest.raises(UsageError):
        Platform.parse("linux//v8")


def test_matching_fills_in_default_variants():
    assert Platform.parse("linux/arm64").matches(ARM64)  # arm64 means arm64/v8
    assert ARM64.matches(Platform.parse("linux/arm64"))
    assert not Platform.parse("linux/arm/v6").matches(Platform.parse("linux/arm"))  # arm is v7
    assert Platform.parse("linux/arm/v7").matches(Platform.parse("linux/arm"))
    assert not AMD64.matches(ARM64)


def _two_platforms(**kw) -> tuple[bytes, list[TestImage]]:
    base = tar_bytes({"bin/tool": b"amd64 tool\n" * 100})
    arm = tar_bytes({"bin/tool": b"arm64 tool\n" * 100})
    images = [
        TestImage(["multi:1"], [base], ["/bin/tool"]),
        TestImage(["multi:1"], [arm], ["/bin/tool"], architecture="arm64", variant="v8"),
    ]
    return multi_platform_archive(["multi:1"], images, **kw), images


def _convert(data: bytes, layout: Layout | None) -> tuple[dict[str, bytes], Result]:
    result = Result()
    out = b"".join(
        convert_stream(io.BytesIO(data), LayerPolicy(Codec("zstd")), result, layout=layout)
    )
    return read_tar(out), result


def _configs(files: dict[str, bytes]) -> list[dict]:
    """The configs manifest.json names, as a classic store reads them."""
    return [json.loads(files[e["Config"]]) for e in json.loads(files["manifest.json"])]


def test_a_single_platform_sink_gets_the_manifest_for_its_platform():
    data, _ = _two_platforms()
    for wanted, arch in ((AMD64, "amd64"), (ARM64, "arm64")):
        files, result = _convert(data, Layout((wanted,), indexes=False, manifest_json=True))
        (config,) = _configs(files)
        assert config["architecture"] == arch
        (entry,) = json.loads(files["index.json"])["manifests"]
        manifest = json.loads(files["blobs/" + entry["digest"].replace(":", "/")])
        assert manifest["config"]["digest"].endswith(
            json.loads(files["manifest.json"])[0]["Config"].rsplit("/", 1)[1]
        )
        assert result.output is not None
        (landed,) = result.output.images
        assert landed.runnable is not None and landed.runnable.config.value["architecture"] == arch


def test_a_missing_platform_is_refused_naming_what_the_image_has():
    data, _ = _two_platforms(absent=[{"architecture": "arm", "os": "linux", "variant": "v7"}])
    with pytest.raises(PlatformMissing) as caught:
        _convert(data, Layout((Platform.parse("linux/s390x"),), indexes=False))
    message = str(caught.value)
    assert "multi:1 has no linux/s390x manifest" in message
    assert "linux/amd64, linux/arm64/v8" in message
    assert "linux/arm/v7" in message  # named, but not in the archive
    assert "\n" not in message


def test_an_index_keeping_sink_gets_only_what_is_present_with_its_attestations():
    data, _ = _two_platforms(
        absent=[{"architecture": "arm", "os": "linux", "variant": "v7"}], attest=True
    )
    files, result = _convert(data, Layout((AMD64,), indexes=True, manifest_json=False))
    (entry,) = json.loads(files["index.json"])["manifests"]
    index = json.loads(files["blobs/" + entry["digest"].replace(":", "/")])
    kinds = [
        (
            m.get("platform", {}).get("architecture"),
            m.get("annotations", {}).get("vnd.docker.reference.type"),
        )
        for m in index["manifests"]
    ]
    assert kinds == [("amd64", None), ("unknown", "attestation-manifest")]
    for child in index["manifests"]:  # every blob the index names is in the archive
        manifest = json.loads(files["blobs/" + child["digest"].replace(":", "/")])
        for layer in [manifest["config"], *manifest["layers"]]:
            assert "blobs/" + layer["digest"].replace(":", "/") in files
    # The attestation still names the amd64 manifest, whose digest changed (zstd layers).
    amd64 = index["manifests"][0]["digest"]
    assert index["manifests"][1]["annotations"]["vnd.docker.reference.digest"] == amd64
    assert "manifest.json" not in files
    assert result.output is not None and result.output.notes == []


def test_an_absent_attestation_is_dropped_with_a_note():
    data, _ = _two_platforms(attest=True, attestation_blobs=False)
    files, result = _convert(data, Layout((ARM64,), indexes=True))
    (entry,) = json.loads(files["index.json"])["manifests"]
    index = json.loads(files["blobs/" + entry["digest"].replace(":", "/")])
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["arm64"]
    assert result.output is not None
    (note,) = result.output.notes
    assert note.startswith("multi:1: left out the attestation of sha256:")


def test_an_archive_keeps_every_platform_named():
    data, _ = _two_platforms(
        absent=[{"architecture": "arm", "os": "linux", "variant": "v7"}], attest=True
    )
    files, result = _convert(data, None)
    (entry,) = json.loads(files["index.json"])["manifests"]
    index = json.loads(files["blobs/" + entry["digest"].replace(":", "/")])
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    assert platforms == ["amd64", "arm64", "arm", "unknown", "unknown", "unknown"]
    # manifest.json names this machine's platform (amd64 here) for `docker load`.
    assert [c["architecture"] for c in _configs(files)] == [Platform.host().architecture]


def test_a_single_manifest_image_is_matched_by_its_config():
    data = oci_archive(sample_images())
    files, _ = _convert(data, Layout((AMD64,), indexes=False))
    assert len(_configs(files)) == 2
    with pytest.raises(
        PlatformMissing, match="rosie:latest has no linux/arm64/v8 manifest; it has linux/amd64"
    ):
        _convert(data, Layout((ARM64,), indexes=False))
