"""A 1 MB archive whose layer inflates to 40 GiB fails in shipit, in seconds, with exit 2
and nothing on the target; an engine handed it would inflate it for minutes first."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest
import zstandard
from conftest import ENGINES
from engines import inspect, said, socket
from imagefactory import _tar, sha

pytestmark = pytest.mark.integration

GIB = 1 << 30


def _bomb_layer(gib: int) -> bytes:
    """A zstd layer: a tar holding one file of ``gib`` GiB of zeros. zstd frames may be
    concatenated, so one compressed GiB of zeros repeated makes the whole in a second."""
    header = tarfile.TarInfo("zeros")
    header.size = gib * GIB
    cctx = zstandard.ZstdCompressor(level=1)
    head = cctx.compress(header.tobuf(format=tarfile.GNU_FORMAT))
    stream = cctx.stream_writer(out := io.BytesIO(), closefd=False)
    zeros = bytes(1 << 24)
    for _ in range(GIB // len(zeros)):
        stream.write(zeros)
    stream.flush(zstandard.FLUSH_FRAME)
    tail = cctx.compress(bytes(1024))  # the tar's end blocks
    return head + out.getvalue() * gib + tail


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    layer = _bomb_layer(40)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/zeros"]},
            # Not the layer's diff_id either: the engine would find out only at the end.
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "5" * 64]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                    "digest": sha(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
                "annotations": {
                    "io.containerd.image.name": "docker.io/library/bomb:1",
                    "org.opencontainers.image.ref.name": "1",
                },
            }
        ],
    }
    legacy = [
        {
            "Config": "blobs/sha256/" + sha(config)[7:],
            "RepoTags": ["bomb:1"],
            "Layers": ["blobs/sha256/" + sha(layer)[7:]],
        }
    ]
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar"
    path.write_bytes(
        _tar(
            [
                ("blobs/sha256/" + sha(config)[7:], config),
                ("blobs/sha256/" + sha(layer)[7:], layer),
                ("blobs/sha256/" + sha(manifest)[7:], manifest),
                ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                ("index.json", json.dumps(index).encode()),
                ("manifest.json", json.dumps(legacy).encode()),
            ]
        )
    )
    assert path.stat().st_size < 2 << 20
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_a_decompression_bomb_fails_in_shipit_with_nothing_landed(rig, bomb, engine):
    from conftest import run_shipit

    started = time.monotonic()
    done = run_shipit("load", bomb, "--to", socket(rig, engine), timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert len(said(done.stderr)) == 1 and "Traceback" not in done.stderr
    assert "inflates more than 1000:1" in done.stderr
    assert inspect(rig, engine, "bomb:1") is None
    print(f"bomb into {engine}: exit {done.returncode} after {took:.1f} s")
