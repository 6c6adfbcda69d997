"""Archives `docker save`d by each rig engine: convert, verify, and load into every
engine (with `shipit load`, and with plain `docker load` where the engine can read it);
the loaded images run and keep their config and diff_ids."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from engines import docker_cli, identity, inspect, remove, run_image, socket
from imagefactory import validate

pytestmark = pytest.mark.integration

ENGINES = ("d20", "d26", "d26c", "d28", "d28c")
IMAGES = ("rosie:latest", "rosie:test", "layered:latest")


@pytest.fixture(scope="module")
def saved(rig, tmp_path_factory) -> dict[str, Path]:
    """One plain `docker save` archive per engine, plus the source's view of each image."""
    folder = tmp_path_factory.mktemp("saved")
    out = {}
    for engine in ENGINES:
        path = folder / f"{engine}.tar"
        docker_cli(rig, engine, "save", "-o", str(path), *IMAGES)
        out[engine] = path
    return out


@pytest.fixture(scope="module")
def originals(rig) -> dict[str, dict]:
    return {(e, i): inspect(rig, e, i) for e in ENGINES for i in IMAGES}


def shipit(*args: object) -> subprocess.CompletedProcess:
    from conftest import run_shipit

    return run_shipit(*args, timeout=300)


@pytest.mark.parametrize("source", ENGINES)
def test_convert_and_verify(saved, tmp_path, source):
    out = tmp_path / "z.tar"
    done = shipit("convert", saved[source], "-o", out, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["images"]) == set(IMAGES)
    checked = validate(out.read_bytes())
    assert checked.layer_compressions == {"zstd"}
    assert shipit("verify", out).returncode == 0
    # Re-converting shipit's own output with the same settings is byte-identical.
    again = tmp_path / "again.tar"
    assert shipit("convert", out, "-o", again).returncode == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("target", ENGINES)
@pytest.mark.parametrize("source", ENGINES)
def test_shipit_load_into_every_engine(rig, saved, originals, tmp_path, source, target):
    archive = tmp_path / "z.tar"
    assert shipit("convert", saved[source], "-o", archive, "-q").returncode == 0
    remove(rig, target, *IMAGES)
    done = shipit("load", archive, "--to", socket(rig, target), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["target"]["store"] == rig["engines"][target]["store"]
    if not rig["engines"][target]["zstd"]:
        assert report["layers_recompressed"] > 0  # zstd → gzip for Engine 20.10
    _check_landed(rig, originals, source, target)


@pytest.mark.parametrize("target", ENGINES)
@pytest.mark.parametrize("source", ENGINES)
def test_plain_docker_load_reads_shipit_archives(rig, saved, originals, tmp_path, source, target):
    archive = tmp_path / "a.tar"
    codec = "zstd" if rig["engines"][target]["zstd"] else "gzip"
    assert shipit("convert", saved[source], "-o", archive, "-c", codec, "-q").returncode == 0
    remove(rig, target, *IMAGES)
    docker_cli(rig, target, "load", "-i", str(archive))
    _check_landed(rig, originals, source, target)


def test_zstd_archive_into_engine_20_is_refused_by_docker_but_not_by_shipit(rig, saved, tmp_path):
    archive = tmp_path / "z.tar"
    assert shipit("convert", saved["d26"], "-o", archive, "-q").returncode == 0
    remove(rig, "d20", *IMAGES)  # else the engine skips layers whose chains it has
    done = subprocess.run(
        [rig["docker_cli"], "-H", socket(rig, "d20"), "load", "-i", str(archive)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0  # what a hand-made zstd archive does to Engine 20.10
    forced = shipit("load", archive, "--to", socket(rig, "d20"), "-c", "zstd")
    assert forced.returncode == 6 and "cannot load zstd" in forced.stderr
    # Left to choose, shipit turns the zstd layers into gzip for Engine 20.10.
    assert shipit("load", archive, "--to", socket(rig, "d20")).returncode == 0
    assert "Hello, World!" in run_image(rig, "d20", "rosie:latest")


def _check_landed(rig, originals, source, target) -> None:
    for image in IMAGES:
        landed = inspect(rig, target, image)
        assert landed is not None, f"{image} missing on {target}"
        assert identity(landed) == identity(originals[(source, image)])
        if (
            rig["engines"][target]["store"] == "classic"
            and rig["engines"][source]["store"] == "classic"
        ):
            assert landed["Id"] == originals[(source, image)]["Id"]  # config untouched
    assert inspect(rig, target, "rosie:latest")["Id"] == inspect(rig, target, "rosie:test")["Id"]
    assert "Hello, World!" in run_image(rig, target, "rosie:test")
    # The file deleted in an upper layer stays deleted (the image checks it itself).
    assert "layered ok" in run_image(rig, target, "layered:latest")
