"""The Podman target's pure parts: what it asks for (capabilities → layout), how the
archive is shaped for it, which layers it can be spared, and how Podman's words become
one-line errors (stderr as Podman 4.3 writes it, captured on the rig)."""

from __future__ import annotations

import io
import json

import pytest
from imagefactory import oci_archive, read_tar, sample_images, sha

from shipit.archive.reader import BlobRecord
from shipit.compression import Codec
from shipit.errors import EngineError, Unsupported, UsageError
from shipit.pipeline import Result, convert_stream
from shipit.platforms import Platform
from shipit.podman.target import PodmanHoldings, PodmanInfo, failure, parse_podman_address
from shipit.policy import layout_for
from shipit.remote import Completed
from shipit.transform import LayerPolicy

INFO = PodmanInfo(
    name="rig-podman",
    version="4.3.1",
    api_version="4.3.1",
    rootless=False,
    storage_driver="overlay",
    graph_root="/var/lib/containers/storage",
    platform=Platform.parse("linux/amd64"),
    kernel="6.1",
)


def test_addresses():
    assert parse_podman_address("podman://deploy@web1:2222") == ("deploy", "web1", 2222)
    assert parse_podman_address("podman://web1") == (None, "web1", None)
    with pytest.raises(UsageError):
        parse_podman_address("podman://web1/images")


def test_capabilities_of_podman_4():
    caps = INFO.capabilities()
    assert caps.compressions == {"none", "gzip", "zstd"}
    assert caps.upload_compressions == {"zstd"}  # a gzip'd upload is refused by 4.3
    assert not caps.indexes and caps.manifest_json and caps.identity == "config"
    assert "Podman 4.3.1, rootful, overlay" in caps.describe


def test_the_archive_names_each_image_once_in_the_index_and_fully_in_manifest_json():
    layout = layout_for(INFO.capabilities(), ())
    result = Result()
    data = oci_archive(sample_images())
    out = b"".join(
        convert_stream(io.BytesIO(data), LayerPolicy(Codec("none")), result, layout=layout)
    )
    files = read_tar(out)
    index = json.loads(files["index.json"])
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["docker.io/library/rosie:latest", "docker.io/library/other:1"]
    tags = [e["RepoTags"] for e in json.loads(files["manifest.json"])]
    assert tags == [
        ["docker.io/library/rosie:latest", "docker.io/library/rosie:test"],
        ["docker.io/library/other:1"],
    ]
    # Every image keeps every name for the load and the tags after it.
    assert [list(i.names) for i in result.output.images] == [
        ["docker.io/library/rosie:latest", "docker.io/library/rosie:test"],
        ["docker.io/library/other:1"],
    ]


def _record(layer: bytes, codec: str) -> BlobRecord:
    digest = sha(layer) if codec == "none" else "sha256:" + "ab" * 32
    return BlobRecord(
        key=sha(layer),
        source_digest=sha(layer),
        source_size=len(layer),
        source_compression="none",
        digest=digest,
        size=len(layer),
        compression=codec,
        diff_id=sha(layer),
    )


def test_only_a_layer_sent_uncompressed_is_left_out():
    base = sample_images()[0].layers[0]
    held = PodmanHoldings(frozenset({sha(base)}))
    assert not held.wants(_record(base, "none"))  # storage finds it by its diff_id
    assert held.wants(_record(base, "zstd"))  # a compressed digest it may not know
    assert held.pre_skip(sha(base))
    assert held.wants(_record(sample_images()[0].layers[1], "none"))


def _done(status: int, stderr: str) -> Completed:
    return Completed("podman load", status, b"", stderr.encode())


def test_no_podman_is_unsupported():
    err = failure(_done(127, "bash: line 1: podman: command not found\n"), "loading into web1")
    assert isinstance(err, Unsupported) and str(err) == "loading into web1: no podman on the host"


def test_disk_full_is_one_line():
    stderr = (
        "Error: payload does not match any of the supported image formats:\n"
        ' * oci: writing blob: storing blob to file "/var/tmp/storage123/1": '
        "write /var/tmp/storage123/1: no space left on device\n"
        " * docker-archive: loading tar component manifest.json: file does not exist\n"
    )
    err = failure(_done(125, stderr), "loading into web1")
    assert isinstance(err, EngineError)
    assert str(err) == "loading into web1: no space left on device"


def test_a_refused_load_says_why_in_one_line():
    stderr = (
        "Error: payload does not match any of the supported image formats:\n"
        " * oci: initializing source oci:/var/tmp/podman1::"
        " open /var/tmp/podman1/index.json: not a directory\n"
        " * oci-archive: loading index: more than one image in oci, choose an image\n"
        " * docker-archive: determining manifest MIME type for docker-archive:/var/tmp/x:"
        " Some layer tarfiles are missing in the tarball\n"
        " * dir: open /var/tmp/podman1/manifest.json: not a directory\n"
    )
    err = str(failure(_done(125, stderr), "loading into web1"))
    assert "\n" not in err
    assert err.endswith("Some layer tarfiles are missing in the tarball")
    assert err.startswith("loading into web1: load rejected: docker-archive:")


def test_storage_permission_is_named():
    stderr = "Error: mkdir /var/lib/containers/storage/overlay-images: permission denied\n"
    err = str(failure(_done(125, stderr), "loading into web1"))
    assert err.startswith("loading into web1: storage permission denied: mkdir ")
