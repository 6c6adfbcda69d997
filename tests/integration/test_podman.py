"""Podman hosts over SSH (integration/podman.sh): rootful and rootless, as targets (from a
Docker engine of the rig) and as a source (into one that runs what came).

`podman run` cannot start containers in this sandbox (setting rlimits is refused), so a
landing is proven by `podman image inspect` (config digest, diff_ids, the names given)
and by `podman create` + `podman export`: the exported file tree must equal the one
`docker export` gives of the source image.
"""

from __future__ import annotations

import io
import json
import os
import socket as sockets
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import rig_dir, run_shipit
from engines import docker_cli, inspect, remove, run_image, said, socket
from imagefactory import multi_platform_archive
from test_delta import BASE_MB, _build_app
from test_platforms import IMAGE as MULTI
from test_platforms import _images as multi_images

pytestmark = pytest.mark.integration

HOSTS = ("rootful", "rootless")
#: What an engine adds to a container's file system (the images here have none of it).
RUNTIME = {".dockerenv", "dev", "etc", "proc", "sys", "run"}


@pytest.fixture(scope="session")
def podman_rig() -> dict[str, Any]:
    """podman.json; skips (fails under $CI) when the Podman hosts are not up."""
    path = rig_dir() / "podman" / "podman.json"
    problem = None
    try:
        loaded = json.loads(path.read_text())
        sockets.create_connection((loaded["ssh"]["host"], loaded["ssh"]["port"]), timeout=5).close()
    except FileNotFoundError:
        problem = f"no Podman hosts: {path} is missing (bash integration/podman.sh up)"
    except OSError as exc:
        problem = f"the Podman hosts' sshd is down: {exc}"
    if problem:
        if os.environ.get("CI") or os.environ.get("SHIPIT_REQUIRE_RIG"):
            pytest.fail(problem + " — and $CI/$SHIPIT_REQUIRE_RIG says the rig is required")
        pytest.skip(problem)
    return loaded


def _alias(podman_rig, host: str) -> str:
    return podman_rig["hosts"][host]["ssh_alias"]


def _podman(podman_rig, host: str, *args: str, check: bool = True) -> bytes:
    done = subprocess.run(
        ["ssh", "-F", podman_rig["ssh"]["config"], _alias(podman_rig, host), "podman", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} on {host}: {done.stderr.decode()}")
    return done.stdout


def _pinspect(podman_rig, host: str, ref: str) -> dict[str, Any] | None:
    out = _podman(podman_rig, host, "image", "inspect", "--format", "json", ref, check=False)
    return json.loads(out)[0] if out.strip() else None


def _clear(podman_rig, host: str, *refs: str) -> None:
    for ref in refs:
        _podman(podman_rig, host, "rmi", "-f", ref, check=False)
    _podman(podman_rig, host, "image", "prune", "-f", check=False)


def _ship(*args: object, ok: bool = True) -> Any:
    done = run_shipit(*args, "--json", timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    return done


def _files(tar_bytes: bytes) -> dict[str, tuple[str, bytes]]:
    """name → (kind, content or link target) of an exported file system."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar:
            name = member.name.strip("/").removeprefix("./")
            if not name or name.split("/")[0] in RUNTIME:
                continue  # the runtime's own mount points and files
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                out[name] = ("file", handle.read())
            elif member.issym():
                out[name] = ("link", member.linkname.encode())
            elif member.isdir():
                out[name] = ("dir", b"")
    return out


def _podman_export(podman_rig, host: str, ref: str) -> dict[str, tuple[str, bytes]]:
    name = f"shipit-check-{os.getpid()}"
    _podman(podman_rig, host, "rm", "-f", name, check=False)
    _podman(podman_rig, host, "create", "--name", name, ref)
    try:
        return _files(_podman(podman_rig, host, "export", name))
    finally:
        _podman(podman_rig, host, "rm", "-f", name, check=False)


def _docker_export(rig, engine: str, ref: str) -> dict[str, tuple[str, bytes]]:
    cid = docker_cli(rig, engine, "create", ref).strip()
    try:
        done = subprocess.run(
            [rig["docker_cli"], "-H", socket(rig, engine), "export", cid],
            capture_output=True,
            check=True,
            timeout=300,
        )
        return _files(done.stdout)
    finally:
        docker_cli(rig, engine, "rm", "-f", cid, check=False)


def _to(podman_rig, host: str) -> tuple[str, ...]:
    return ("--to", _alias(podman_rig, host), "--ssh-config", podman_rig["ssh"]["config"])


def _assert_landed(podman_rig, host: str, rig, engine: str, ref: str) -> dict[str, Any]:
    """Podman has ``ref`` by its full name with the source's config and diff_ids."""
    want = inspect(rig, engine, ref)
    assert want is not None
    full = ref if "/" in ref else f"docker.io/library/{ref}"
    got = _pinspect(podman_rig, host, full)
    assert got is not None, f"{full} not on {host}"
    assert full in got["RepoTags"]
    assert not any(t.startswith("localhost/") for t in got["RepoTags"]), got["RepoTags"]
    assert got["RootFS"]["Layers"] == want["RootFS"]["Layers"]
    if want["Id"].startswith("sha256:") and engine != "d26c":  # classic: ID = config digest
        assert "sha256:" + got["Id"] == want["Id"]
    assert got["Config"].get("Cmd") == want["Config"].get("Cmd")
    return got


@pytest.mark.parametrize("host", HOSTS)
def test_rosie_pair_lands_under_the_names_given(rig, podman_rig, host):
    _clear(podman_rig, host, "rosie:latest", "rosie:test")
    report = _ship(
        "rosie:latest", "rosie:test", "--from", socket(rig, "d26"), *_to(podman_rig, host)
    )
    assert report["target"]["kind"] == "podman"
    for ref in ("rosie:latest", "rosie:test"):
        _assert_landed(podman_rig, host, rig, "d26", ref)
    # What `podman run rosie:latest` would find: the short name resolves to the image sent.
    short = _pinspect(podman_rig, host, "rosie:latest")
    assert short is not None and short["RepoTags"][0].startswith("docker.io/library/rosie:")


@pytest.mark.parametrize("host", HOSTS)
def test_layers_and_a_whiteout_land_whole(rig, podman_rig, host):
    _clear(podman_rig, host, "layered:latest")
    _ship("layered:latest", "--from", socket(rig, "d20"), *_to(podman_rig, host))
    _assert_landed(podman_rig, host, rig, "d20", "layered:latest")
    landed = _podman_export(podman_rig, host, "docker.io/library/layered:latest")
    assert "data/gone.txt" not in landed and landed["data/kept.txt"][0] == "file"
    assert landed == _docker_export(rig, "d20", "layered:latest")


@pytest.mark.parametrize("host", HOSTS)
def test_a_multi_platform_index_lands_the_hosts_platform(rig, podman_rig, host, tmp_path):
    archive = tmp_path / "multi.tar"
    archive.write_bytes(multi_platform_archive([MULTI], multi_images()))
    remove(rig, "d26c", MULTI)
    both = ("--platform", "linux/amd64", "--platform", "linux/arm64/v8")
    done = run_shipit("load", archive, "--to", socket(rig, "d26c"), *both)
    assert done.returncode == 0, done.stderr
    _clear(podman_rig, host, MULTI)
    report = _ship(MULTI, "--from", socket(rig, "d26c"), *_to(podman_rig, host))
    assert report["platforms"] == ["linux/amd64"]
    got = _assert_landed(podman_rig, host, rig, "d26c", MULTI)
    assert got["Architecture"] == "amd64"
    assert got["Config"]["Cmd"] == ["/busybox", "echo", "Hello, World!"]
    # Podman keeps one platform per image: asking for two is refused before a byte goes.
    done = _ship(MULTI, "--from", socket(rig, "d26c"), *_to(podman_rig, host), *both, ok=False)
    assert done.returncode == 2 and "keeps one platform per image" in done.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_podman_as_a_source_ships_into_docker_and_it_runs(rig, podman_rig, host):
    _ship("rosie:latest", "--from", socket(rig, "d26"), *_to(podman_rig, host))
    remove(rig, "d20", "rosie:latest")
    source = f"podman://{_alias(podman_rig, host)}"
    report = _ship(
        "rosie:latest",
        "--from",
        source,
        "--to",
        socket(rig, "d20"),
        "--ssh-config",
        podman_rig["ssh"]["config"],
    )
    assert report["target"]["kind"] == "docker"
    assert (
        inspect(rig, "d20", "rosie:latest")["RootFS"]["Layers"]
        == (inspect(rig, "d26", "rosie:latest")["RootFS"]["Layers"])
    )
    run_image(rig, "d20", "rosie:latest")


@pytest.mark.parametrize("host", HOSTS)
def test_redeploy_sends_only_the_changed_layer(rig, podman_rig, host, tmp_path):
    _build_app(rig, "d26", Path(rig["rig_dir"]) / "build" / "app")
    _clear(podman_rig, host, "app:v1", "app:v2")
    common = ("--from", socket(rig, "d26"), *_to(podman_rig, host))
    first = _ship("app:v1", *common)
    # The base went (busybox may be there already: rosie has the same layer).
    assert first["layers_sent"] >= 2 and first["bytes_sent"] > BASE_MB * 1e6 / 4, first
    second = _ship("app:v2", *common)
    assert second["layers_skipped"] == 2, second  # busybox and the base stayed put
    assert second["bytes_sent"] <= 0.02 * first["bytes_sent"], second
    again = _ship("app:v2", *common)
    assert again["layers_sent"] == 0, again
    _assert_landed(podman_rig, host, rig, "d26", "app:v2")
    landed = _podman_export(podman_rig, host, "docker.io/library/app:v2")
    assert landed["app.txt"][1].startswith(b"app v2\n")
    _clear(podman_rig, host, "app:v1", "app:v2")  # vfs keeps a full copy per layer


def test_fan_out_mixes_podman_and_docker_targets(rig, podman_rig):
    for host in HOSTS:
        _clear(podman_rig, host, "layered:latest")
    remove(rig, "d20", "layered:latest")
    done = run_shipit(
        "ship",
        "layered:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        _alias(podman_rig, "rootful"),
        "--to",
        f"podman://{_alias(podman_rig, 'rootless')}",
        "--to",
        socket(rig, "d20"),
        "--ssh-config",
        podman_rig["ssh"]["config"],
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for host in HOSTS:
        _assert_landed(podman_rig, host, rig, "d26", "layered:latest")
    run_image(rig, "d20", "layered:latest")


def test_info_reports_podman_hosts(podman_rig):
    for host, rootless in (("rootful", False), ("rootless", True)):
        done = run_shipit(
            "info", _alias(podman_rig, host), "--ssh-config", podman_rig["ssh"]["config"], "--json"
        )
        assert done.returncode == 0, done.stderr
        about = json.loads(done.stdout)
        assert about["kind"] == "podman" and about["rootless"] is rootless
        assert about["version"] == podman_rig["hosts"][host]["version"]
        assert about["storage_driver"] == podman_rig["hosts"][host]["storage_driver"]
        assert about["loads_zstd"] is True


def test_a_host_without_podman_is_one_line(rig, podman_rig):
    for address in ("rig-podman-none", "podman://rig-podman-none"):
        done = run_shipit(
            "ship",
            "rosie:latest",
            "--from",
            socket(rig, "d26"),
            "--to",
            address,
            "--ssh-config",
            podman_rig["ssh"]["config"],
        )
        assert done.returncode == 6, done.stderr
        lines = said(done.stderr)
        assert len(lines) == 1 and "podman" in lines[0], done.stderr
