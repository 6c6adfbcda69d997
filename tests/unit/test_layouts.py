"""The layout rules for archives other writers make (skopeo, podman, crane, ctr, buildx),
on tiny in-memory archives: each is read, every digest is still checked, and what shipit
cannot read is named in one line."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from imagefactory import (
    TestImage as SampleImage,
)
from imagefactory import (
    _tar,
    containers_image_archive,
    ggcr_tarball,
    oci_archive,
    sample_images,
    sha,
)

from shipit.errors import BadInput, DigestMismatch, UnsafeArchive
from shipit.pipeline import Result, scan_only
from shipit.transform import LayerPolicy


def scan(data: bytes, full: bool = True) -> Result:
    return scan_only(io.BytesIO(data), LayerPolicy(None, full=full))


def names(result: Result) -> set[str]:
    return {name for image in result.images for name in image.names}


def rebuilt(data: bytes, edit) -> bytes:
    """The archive with its entries edited (``edit`` gets and returns name → content)."""
    entries: dict[str, bytes | str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.issym():
                entries[member.name] = member.linkname
            elif member.isreg():
                f = tar.extractfile(member)
                assert f is not None
                entries[member.name] = f.read()
    return _tar(list(edit(entries).items()))


def test_containers_image_layers_are_read_by_their_digest_names() -> None:
    result = scan(containers_image_archive(sample_images()))
    assert names(result) == {
        "docker.io/library/rosie:latest",
        "docker.io/library/rosie:test",
        "docker.io/library/other:1",
    }
    # The shared base layer is one blob, though two symlinks point at it.
    diff_ids = {d for image in sample_images() for d in image.diff_ids}
    assert {record.diff_id for record in result.blobs} == diff_ids
    assert len(result.blobs) == 3


def test_a_layer_listed_by_its_symlink_resolves_to_the_digest_named_file() -> None:
    data = containers_image_archive(sample_images()[:1])

    def by_symlink(entries):
        links = [name for name, value in entries.items() if isinstance(value, str)]
        manifest = json.loads(entries["manifest.json"])
        manifest[0]["Layers"] = links
        entries["manifest.json"] = json.dumps(manifest).encode()
        return entries

    result = scan(rebuilt(data, by_symlink))
    assert {r.diff_id for r in result.blobs} == set(sample_images()[0].diff_ids)


def test_a_digest_named_layer_must_hold_that_digest() -> None:
    image = sample_images()[0]
    victim = image.diff_ids[1][7:] + ".tar"

    def tamper(entries):
        entries[victim] = image.layers[0]
        return entries

    with pytest.raises(DigestMismatch, match=r"content has digest .* not sha256:"):
        scan(rebuilt(containers_image_archive([image]), tamper), full=False)


def test_a_digest_named_layer_may_not_be_a_symlink() -> None:
    image = sample_images()[0]
    victim = image.diff_ids[0][7:] + ".tar"

    def link(entries):
        entries[victim] = "/etc/passwd"
        return entries

    with pytest.raises(UnsafeArchive, match="is a symlink"):
        scan(rebuilt(containers_image_archive([image]), link))


def test_ggcr_tarball_config_and_gzip_layers_are_checked_against_their_names() -> None:
    result = scan(ggcr_tarball(sample_images()))
    assert names(result) >= {"docker.io/library/rosie:test"}
    assert {r.source_compression for r in result.blobs} == {"gzip"}
    assert {r.diff_id for r in result.blobs} == {d for i in sample_images() for d in i.diff_ids}


def test_a_config_named_by_digest_must_hold_that_digest() -> None:
    image = sample_images()[0]
    name = sha(image.config)

    def tamper(entries):
        entries[name] = image.config.replace(b"/app/hello", b"/bin/evil!")
        return entries

    with pytest.raises(DigestMismatch, match="content has digest"):
        scan(rebuilt(ggcr_tarball([image]), tamper))


def test_a_layout_shipit_cannot_read_is_named_not_called_missing() -> None:
    image = sample_images()[0]

    def elsewhere(entries):
        manifest = json.loads(entries["manifest.json"])
        moved = []
        for path in manifest[0]["Layers"]:
            entries[f"layers/{path.removesuffix('.tar.gz')}.blob"] = entries.pop(path)
            moved.append(f"layers/{path.removesuffix('.tar.gz')}.blob")
        manifest[0]["Layers"] = moved
        entries["manifest.json"] = json.dumps(manifest).encode()
        return entries

    with pytest.raises(BadInput) as caught:
        scan(rebuilt(ggcr_tarball([image]), elsewhere))
    message = str(caught.value)
    assert "'layers/<hex>.blob', a layout shipit cannot read yet" in message
    assert "missing" not in message and "\n" not in message


def test_an_image_layout_inside_a_folder_is_named() -> None:
    def into_folder(entries):
        return {f"rosie-oci/{name}": value for name, value in entries.items()}

    data = rebuilt(oci_archive(sample_images()[:1], with_manifest_json=False), into_folder)
    with pytest.raises(BadInput, match=r"but 'rosie-oci/index.json': an image layout inside"):
        scan(data)


def _one_entry_oci(ref_name: str, manifest_json: bool = False) -> bytes:
    """An OCI archive (skopeo/podman ``oci-archive``) naming its image by ref.name only."""
    image = SampleImage(["rosie:latest"], sample_images()[0].layers, ["/app/hello"])

    def rename(entries):
        index = json.loads(entries["index.json"])
        index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
        entries["index.json"] = json.dumps(index).encode()
        return entries

    return rebuilt(oci_archive([image], with_manifest_json=manifest_json), rename)


@pytest.mark.parametrize(
    ("ref_name", "expected"),
    [
        ("v1", {"docker.io/library/v1:latest"}),  # docker load: "Loaded image: v1:latest"
        ("sk-rosie:v2", {"docker.io/library/sk-rosie:v2"}),
        ("localhost/rosie:latest", {"localhost/rosie:latest"}),
        ("Not A Name", set()),  # no valid name: untagged, as docker load leaves it
    ],
)
def test_ref_name_resolved_as_docker_load_resolves_it(ref_name: str, expected: set[str]) -> None:
    assert names(scan(_one_entry_oci(ref_name))) == expected


def test_a_bare_ref_name_defers_to_manifest_json_repo_tags() -> None:
    # The classic store reads only manifest.json, so its names are the ones both agree on.
    assert names(scan(_one_entry_oci("latest", manifest_json=True))) == {
        "docker.io/library/rosie:latest"
    }


def test_gzip_wrapped_containers_image_archive() -> None:
    # k3s air-gap style: a whole docker-archive gzipped.
    data = gzip.compress(containers_image_archive(sample_images()), mtime=0)
    assert "docker.io/library/other:1" in names(scan(data))


def test_unused_member_names_are_remembered_within_bounds(monkeypatch) -> None:
    from shipit.archive import reader

    monkeypatch.setattr(reader, "_MAX_IGNORED", 10)
    extras: list[tuple[str, bytes | str]] = [(f"extra/{i}", b"") for i in range(20)]
    extras.append(("extra/" + "x" * 2000, b""))
    data = _tar(extras + list(_entries(ggcr_tarball(sample_images()))))
    scanned = reader.scan(io.BytesIO(data), LayerPolicy(None, spool=False))
    assert len(scanned.ignored) == 10
    assert all(len(name) <= reader._MAX_IGNORED_NAME for name in scanned.ignored)


def _entries(data: bytes) -> list[tuple[str, bytes | str]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]
