"""Multi-platform images on the real engines: each target gets the platform it runs (or
the one --platform names), a platform the image lacks is refused before anything lands,
and a containerd-store save with absent platforms and attestations loads everywhere."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import ENGINES
from engines import inspect, remove, run_image, said, socket
from imagefactory import TestImage, multi_platform_archive

pytestmark = pytest.mark.integration

IMAGE = "multi:1"


def _busybox_layer() -> bytes:
    buf = io.BytesIO()
    data = Path("/bin/busybox").read_bytes()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _images() -> list[TestImage]:
    layer = _busybox_layer()
    hello = ["/busybox", "echo", "Hello, World!"]
    return [
        TestImage([IMAGE], [layer], hello),
        # Another config (so another image) for arm64: never run here, only landed.
        TestImage([IMAGE], [layer], ["/busybox", "echo", "arm64"], "arm64", "v8"),
    ]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("platforms")
    complete = folder / "complete.tar"
    complete.write_bytes(multi_platform_archive([IMAGE], _images()))
    # What Docker 29 writes from the containerd store when only the host's platform was
    # pulled: the index names arm64 too, and an attestation per platform.
    partial = folder / "partial.tar"
    partial.write_bytes(
        multi_platform_archive(
            [IMAGE],
            _images()[:1],
            absent=[{"architecture": "arm64", "os": "linux", "variant": "v8"}],
            attest=True,
        )
    )
    return {"complete": complete, "partial": partial}


def _shipit(*args: object):
    from conftest import run_shipit

    return run_shipit(*args, timeout=300)


@pytest.mark.parametrize("engine", ENGINES)
def test_load_lands_the_platform_the_engine_runs(rig, archives, engine):
    remove(rig, engine, IMAGE)
    done = _shipit("load", archives["complete"], "--to", socket(rig, engine), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platforms"] == ["linux/amd64"]
    landed = inspect(rig, engine, IMAGE)
    assert landed is not None and landed["Architecture"] == "amd64"
    assert "Hello, World!" in run_image(rig, engine, IMAGE)


@pytest.mark.parametrize("engine", ENGINES)
def test_platform_option_lands_arm64_on_every_engine(rig, archives, engine):
    remove(rig, engine, IMAGE)
    done = _shipit(
        "load", archives["complete"], "--to", socket(rig, engine), "--platform", "linux/arm64/v8"
    )
    assert done.returncode == 0, done.stderr
    landed = inspect(rig, engine, IMAGE)
    assert landed is not None
    assert (landed["Architecture"], landed.get("Variant")) == ("arm64", "v8")
    assert landed["Config"]["Cmd"] == ["/busybox", "echo", "arm64"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_platform_the_image_lacks_is_one_line_and_nothing_lands(rig, archives, engine):
    remove(rig, engine, IMAGE)
    done = _shipit(
        "load", archives["partial"], "--to", socket(rig, engine), "--platform", "linux/arm64"
    )
    assert done.returncode == 2, done.stderr
    assert len(said(done.stderr)) == 1 and "Traceback" not in done.stderr
    assert "multi:1 has no linux/arm64 manifest; it has linux/amd64" in done.stderr
    assert "named but not in the archive: linux/arm64/v8" in done.stderr
    assert inspect(rig, engine, IMAGE) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_containerd_save_with_absent_platforms_and_attestations_loads(rig, archives, engine):
    remove(rig, engine, IMAGE)
    done = _shipit("load", archives["partial"], "--to", socket(rig, engine), "--json")
    assert done.returncode == 0, done.stderr
    assert inspect(rig, engine, IMAGE)["Architecture"] == "amd64"
    assert "Hello, World!" in run_image(rig, engine, IMAGE)


def test_ship_between_engines_follows_platform(rig, ssh_config, archives):
    """An index on the containerd store feeds each target its platform, over SSH too."""
    remove(rig, "d26c", IMAGE)
    both = ("--platform", "linux/amd64", "--platform", "linux/arm64/v8")
    done = _shipit("load", archives["complete"], "--to", socket(rig, "d26c"), *both)
    assert done.returncode == 0, done.stderr
    for engine, extra, arch in (
        ("d20", ("--platform", "linux/arm64/v8"), "arm64"),
        ("d26", (), "amd64"),
    ):
        remove(rig, engine, IMAGE)
        to = rig["engines"][engine]["ssh_alias"]
        done = _shipit(
            "ship",
            IMAGE,
            "--from",
            socket(rig, "d26c"),
            "--to",
            to,
            "--ssh-config",
            ssh_config,
            *extra,
        )
        assert done.returncode == 0, done.stderr
        assert inspect(rig, engine, IMAGE)["Architecture"] == arch
    # A classic store keeps one platform per image: asking for two is refused up front.
    done = _shipit("ship", IMAGE, "--from", socket(rig, "d26c"), "--to", socket(rig, "d26"), *both)
    assert done.returncode == 2 and "keeps one platform per image" in done.stderr, done.stderr
