"""The archive engine on tiny in-memory images, in every layout docker save writes."""

from __future__ import annotations

import io

import pytest
from imagefactory import (
    containers_image_archive,
    ggcr_tarball,
    legacy_archive,
    oci_archive,
    sample_images,
    sha,
    validate,
)

from shipit.compression import Codec
from shipit.pipeline import Result, convert_stream, scan_only
from shipit.transform import LayerPolicy

LAYOUTS = {
    "legacy-20.10": lambda: legacy_archive(sample_images()),
    "podman-4.3": lambda: containers_image_archive(sample_images()),
    "oci-25-classic": lambda: oci_archive(sample_images()),
    "containerd-gzip": lambda: oci_archive(sample_images(), "gzip", docker_types=True),
    "containerd-nested": lambda: oci_archive(
        sample_images(), "gzip", docker_types=True, nested=True
    ),
    "oci-zstd-no-manifest-json": lambda: oci_archive(
        sample_images(), "zstd", with_manifest_json=False
    ),
    "skopeo-podman-docker-archive": lambda: containers_image_archive(sample_images()),
    "crane-tarball": lambda: ggcr_tarball(sample_images()),
}


def convert(data: bytes, codec: Codec | None) -> tuple[bytes, Result]:
    result = Result()
    out = b"".join(convert_stream(io.BytesIO(data), LayerPolicy(codec), result))
    return out, result


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_convert_every_layout(layout: str, codec: str) -> None:
    out, result = convert(LAYOUTS[layout](), Codec(codec))
    checked = validate(out)
    assert checked.layer_compressions == {codec}
    assert set(checked.tags) == {
        "docker.io/library/rosie:latest",
        "docker.io/library/rosie:test",
        "docker.io/library/other:1",
    }
    # Tags of one image share one top-level descriptor.
    assert (
        checked.tags["docker.io/library/rosie:latest"]
        == checked.tags["docker.io/library/rosie:test"]
    )
    # Configs are never touched: the classic image ID stays the same.
    for image in sample_images():
        for tag in image.tags:
            assert checked.configs["docker.io/library/" + tag] == image.config
    # The shared base layer is written once.
    layers = [n for n, c in checked.files.items() if n.startswith("blobs/") and c[:1] != b"{"]
    assert len(layers) == 3


def test_same_input_same_output() -> None:
    data = LAYOUTS["legacy-20.10"]()
    first, _ = convert(data, Codec("zstd", threads=1))
    second, _ = convert(data, Codec("zstd", threads=2))
    assert first == second


def test_already_zstd_passes_through_untouched() -> None:
    data = oci_archive(sample_images(), "zstd")
    out, result = convert(data, Codec("zstd", level=19))
    assert result.blobs and all(not record.rewritten for record in result.blobs)
    # Nothing changed, so every manifest keeps its exact bytes and digest.
    before = {n: c for n, c in validate(data).files.items() if n.startswith("blobs/")}
    after = {n: c for n, c in validate(out).files.items() if n.startswith("blobs/")}
    assert before == after


def test_keep_recompresses_only_what_the_target_cannot_read() -> None:
    data = oci_archive(sample_images(), "zstd")
    out, _ = convert_readable(data, frozenset({"none", "gzip"}))
    assert validate(out).layer_compressions == {"gzip"}


def convert_readable(data: bytes, readable: frozenset[str]) -> tuple[bytes, Result]:
    result = Result()
    policy = LayerPolicy(None, readable=readable)
    return b"".join(convert_stream(io.BytesIO(data), policy, result)), result


@pytest.mark.parametrize("outer", ["gzip", "zstd"])
def test_reads_compressed_archives(outer: str) -> None:
    import gzip

    import zstandard

    data = LAYOUTS["oci-25-classic"]()
    wrapped = gzip.compress(data) if outer == "gzip" else zstandard.ZstdCompressor().compress(data)
    out, _ = convert(wrapped, Codec("zstd"))
    assert validate(out).layer_compressions == {"zstd"}


@pytest.mark.parametrize("wire", ["gzip", "zstd"])
def test_a_compressed_upload_is_shipit_s_own_archive_compressed_whole(wire: str) -> None:
    """What ``--wire`` sends: the archive, compressed as one stream, never an empty chunk
    (it would end a chunked HTTP body), counted as sent; shipit reads it back whole."""
    from shipit.compression import compressed_chunks, decompressor, detect

    archive, _ = convert(LAYOUTS["oci-25-classic"](), Codec("none"))
    pieces = [archive[i : i + 4096] for i in range(0, len(archive), 4096)]
    sizes: list[int] = []
    chunks = list(compressed_chunks(pieces, Codec(wire), sizes.append))
    assert chunks and all(chunks) and sizes == [len(c) for c in chunks]
    upload = b"".join(chunks)
    assert detect(upload) == wire and len(upload) < len(archive)
    assert decompressor(wire, io.BytesIO(upload)).read() == archive
    out, _ = convert(upload, Codec("none"))
    assert validate(out).layer_compressions == {"none"}


@pytest.mark.parametrize("name, level", [("none", None), ("gzip", 1), ("zstd", 3), ("zstd", 6)])
def test_an_upload_ends_its_frame_where_told_and_reads_back_whole(
    name: str, level: int | None
) -> None:
    """A stage's upload ends its zstd frame after its layers (FRAME_END); the documents
    that follow are a second frame, and the whole upload still reads back as the archive,
    through shipit's reader and through the zstd CLI (the host's, in front of an engine
    that reads no zstd). Elsewhere the marker is dropped, never sent as an empty chunk."""
    import shutil
    import subprocess

    from shipit.compression import FRAME_END, compressed_chunks, decompressor

    archive, _ = convert(LAYOUTS["oci-25-classic"](), Codec("none"))
    half = len(archive) // 2
    pieces = [archive[:half], FRAME_END, archive[half:]]
    codec = Codec.parse(name, level)
    chunks = list(compressed_chunks(pieces, codec))
    assert chunks and all(chunks)
    upload = b"".join(chunks)
    if codec.name == "none":
        assert upload == archive
        return
    assert decompressor(codec.name, io.BytesIO(upload)).read() == archive
    if codec.name == "zstd":
        import zstandard

        frame = zstandard.ZstdDecompressor().decompressobj()  # reads one frame only
        assert frame.decompress(upload) == archive[:half] and frame.unused_data
        if shutil.which("zstd"):
            done = subprocess.run(["zstd", "-dcq"], input=upload, capture_output=True, check=True)
            assert done.stdout == archive


def test_one_image_listed_twice_gets_one_manifest_json_entry() -> None:
    """A containerd store saves an image it holds as gzip and as plain layers twice; as
    zstd both are the same image, written as one manifest.json entry with both tags (as
    ``docker save`` does), so converting shipit's output again is byte-identical."""
    import json

    from imagefactory import TestImage, _tar, read_tar

    image = sample_images()[0]
    parts = [
        read_tar(oci_archive([TestImage([tag], image.layers, image.cmd)], kind))
        for tag, kind in (("rosie:latest", "gzip"), ("rosie:test", "none"))
    ]
    merged = {**parts[0], **parts[1]}
    for top in ("index.json", "manifest.json"):
        docs = [json.loads(part[top]) for part in parts]
        if top == "index.json":
            merged[top] = json.dumps(
                {**docs[0], "manifests": docs[0]["manifests"] + docs[1]["manifests"]}
            ).encode()
        else:
            merged[top] = json.dumps(docs[0] + docs[1]).encode()
    out, _ = convert(_tar(list(merged.items())), Codec("zstd"))
    entries = json.loads(read_tar(out)["manifest.json"])
    assert [e["RepoTags"] for e in entries] == [["rosie:latest", "rosie:test"]]
    assert convert(out, Codec("zstd"))[0] == out


def test_own_output_reads_back_and_full_verify_passes() -> None:
    out, _ = convert(LAYOUTS["legacy-20.10"](), Codec("zstd"))
    result = scan_only(io.BytesIO(out), LayerPolicy(None, full=True))
    assert all(record.diff_id for record in result.blobs)
    assert {n for image in result.images for n in image.names} >= {"docker.io/library/rosie:test"}


def test_diff_ids_recorded() -> None:
    images = sample_images()
    _, result = convert(legacy_archive(images), Codec("gzip"))
    assert {r.diff_id for r in result.blobs} == {d for i in images for d in i.diff_ids}
    assert sha(images[0].layers[0]) in {r.diff_id for r in result.blobs}
