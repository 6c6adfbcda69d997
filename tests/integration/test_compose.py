"""`shipit --compose compose.yaml --to TARGET`: every service's image in one ship, built
services under the names compose gives them, shared layers sent once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from engines import docker_cli, identity, inspect, remove, said, socket

pytestmark = pytest.mark.integration

SOURCE, TARGET = "d26", "d26c"
# "Shop.App" is how the project directory is called; compose names the project "shopapp".
BUILT = ("shopapp-web:latest", "shopapp-worker:latest")
BASE = "compose-test-base:v1"
CACHE = "compose-test-cache:v1"

COMPOSE = """\
services:
  web:
    build: ./web
  worker:
    build:
      context: ./worker
  cache:
    image: compose-test-cache:${TAG:-v1}
"""


def _build(rig, directory: Path, tag: str, dockerfile: str, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    # The classic builder, as the rig builds its images (no network on these engines).
    docker_cli(rig, SOURCE, "build", "--network", "none", "-t", tag, str(directory))


@pytest.fixture
def project(rig, tmp_path, monkeypatch) -> Path:
    """A compose project: two services built on one base, one naming an image."""
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    monkeypatch.delenv("TAG", raising=False)
    for var in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "Shop.App"
    base = os.urandom(256 * 1024)  # fresh bytes: no engine holds this layer yet
    _build(
        rig, tmp_path / "base", BASE, "FROM scratch\nCOPY base.bin /base.bin\n", {"base.bin": base}
    )
    for service in ("web", "worker"):
        _build(
            rig,
            root / service,
            f"shopapp-{service}",
            f"FROM {BASE}\nCOPY {service}.txt /{service}.txt\n",
            {f"{service}.txt": f"{service} {os.urandom(8).hex()}\n".encode()},
        )
    docker_cli(rig, SOURCE, "tag", BASE, CACHE)
    (root / "compose.yaml").write_text(COMPOSE)
    yield root / "compose.yaml"
    for engine in (SOURCE, TARGET):
        remove(rig, engine, *BUILT, BASE, CACHE)


def test_compose_project_lands_in_one_ship_with_shared_layers_once(
    rig, project, run_shipit, ssh_config
):
    remove(rig, TARGET, *BUILT, CACHE, BASE)
    done = run_shipit(
        "--compose",
        project,
        "--from",
        socket(rig, SOURCE),
        "--to",
        rig["engines"][TARGET]["ssh_alias"],
        "--ssh-config",
        ssh_config,
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["images"]) == sorted([*BUILT, CACHE])
    # base + one layer per built service; the base, in all three images, is sent once.
    assert (report["layers"], report["layers_sent"], report["layers_skipped"]) == (3, 3, 0)
    for image in (*BUILT, CACHE):
        landed = inspect(rig, TARGET, image)
        assert landed is not None, image
        assert identity(landed) == identity(inspect(rig, SOURCE, image))
    # A redeploy of the project sends nothing.
    again = run_shipit(
        "-f",
        project,
        "--from",
        socket(rig, SOURCE),
        "--to",
        rig["engines"][TARGET]["ssh_alias"],
        "--ssh-config",
        ssh_config,
        "--json",
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["layers_sent"] == 0


def test_a_service_whose_image_is_missing_is_named(rig, project, run_shipit, monkeypatch):
    monkeypatch.setenv("TAG", "v2")  # ${TAG:-v1}: the cache service now names an absent tag
    done = run_shipit(
        "--compose", project, "--from", socket(rig, SOURCE), "--to", socket(rig, TARGET)
    )
    assert done.returncode == 5, done.stderr
    lines = said(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "shipit: error: compose service cache (image compose-test-cache:v2): "
    )
    assert lines[0].endswith("no such image: compose-test-cache:v2")


def test_services_can_be_named(rig, project, run_shipit):
    remove(rig, TARGET, *BUILT, CACHE)
    done = run_shipit(
        "--compose",
        project,
        "web",
        "--from",
        socket(rig, SOURCE),
        "--to",
        socket(rig, TARGET),
        "--json",
        "-q",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == ["shopapp-web:latest"]
    assert inspect(rig, TARGET, "shopapp-web:latest") is not None
    assert inspect(rig, TARGET, "shopapp-worker:latest") is None


def test_quiet_ship_prints_nothing(rig, run_shipit):
    done = run_shipit(
        "-q", "rosie:latest", "--from", socket(rig, "d20"), "--to", socket(rig, "d26")
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    loud = run_shipit("rosie:latest", "--from", socket(rig, "d20"), "--to", socket(rig, "d26"))
    # landed by the quiet run just before: the one line says nothing was sent
    assert loud.returncode == 0 and said(loud.stderr)[0].startswith("rosie:latest already in ")
