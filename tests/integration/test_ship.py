"""`shipit IMAGE... --to TARGET` between every pair of rig engines, by socket and over
SSH; what lands runs and has the source's config and diff_ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from engines import (
    PROGRESS_LINE,
    docker_cli,
    identity,
    inspect,
    remove,
    run_image,
    said,
    socket,
)

pytestmark = pytest.mark.integration

ENGINES = ("d20", "d26", "d26c", "d28", "d28c")
PAIRS = [(s, t) for s in ENGINES for t in ENGINES if s != t]
GROUPS = {"rosie": ("rosie:latest", "rosie:test"), "layered": ("layered:latest",)}


def _ship(*args: object) -> subprocess.CompletedProcess:
    from conftest import run_shipit

    return run_shipit(*args, timeout=600)


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("via", ["socket", "ssh"])
@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_ship_between_engines(rig, ssh_config, source, target, via, group):
    images = GROUPS[group]
    before = {i: inspect(rig, source, i) for i in images}
    remove(rig, target, *images)
    to = socket(rig, target) if via == "socket" else rig["engines"][target]["ssh_alias"]
    done = _ship(
        *images, "--from", socket(rig, source), "--to", to, "--json", "--ssh-config", ssh_config
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(report["images"]) == sorted(images)
    assert report["target"]["store"] == rig["engines"][target]["store"]
    if via == "ssh":  # the codec follows the link shipit measured (loopback: fast)
        link = report["link_mb_s"]
        assert isinstance(link, float) and link > 0
        wire = report.get("wire_compression")
        if rig["engines"][target]["store"] == "containerd":
            assert (report["compression"], wire) == ("zstd:3", None)
        elif rig["engines"][target]["zstd"]:  # classic: plain layers in a compressed upload
            assert (report["compression"], wire) == ("none", "zstd:6" if link < 20 else "zstd:3")
        else:  # Engine 20.10 reads no zstd (the rig's host undoes it), gunzips slowly
            expected = None if link >= 60 else "zstd:6" if link < 20 else "zstd:3"
            assert (report["compression"], wire) == ("none", expected)
        if wire:  # bytes_sent counts the upload as compressed, not the plain tar in it
            assert 0 < report["bytes_sent"] < report["bytes_before_wire"] * 0.9, report
        else:
            assert "bytes_before_wire" not in report
    else:
        assert report["link_mb_s"] == "local"
    for image in images:
        landed = inspect(rig, target, image)
        assert landed is not None
        assert identity(landed) == identity(before[image])
        assert "ok" in run_image(rig, target, image) or "Hello" in run_image(rig, target, image)


def test_an_engine_that_reads_no_zstd_gets_a_zstd_upload_its_host_undoes(rig, ssh_config):
    """Engine 20.10 reads gzip only; over SSH the host's own zstd undoes a zstd upload in
    front of the engine, so the wire carries zstd. Every layer is sent (--full)."""
    before = inspect(rig, "d26", "layered:latest")
    done = _ship(
        "layered:latest",
        "--from",
        socket(rig, "d26"),
        "--to",
        rig["engines"]["d20"]["ssh_alias"],
        "--ssh-config",
        ssh_config,
        "--wire",
        "zstd",
        "--full",
        "--json",
        "-v",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["compression"], report["wire_compression"]) == ("none", "zstd:3")
    assert report["layers_sent"] == report["layers"] > 1
    assert 0 < report["bytes_sent"] < 0.9 * report["bytes_before_wire"], report
    assert identity(inspect(rig, "d20", "layered:latest")) == identity(before)
    assert "layered ok" in run_image(rig, "d20", "layered:latest")


def test_ship_into_same_engine_by_ssh(rig, ssh_config):
    # A round trip into the engine that already has the image: it stays the same image.
    before = inspect(rig, "d26", "rosie:latest")
    done = _ship(
        "rosie:latest", "--from", socket(rig, "d26"), "--to", "rig-d26", "--ssh-config", ssh_config
    )
    assert done.returncode == 0, done.stderr
    assert inspect(rig, "d26", "rosie:latest")["Id"] == before["Id"]


def test_remote_source_into_local_engine(rig, ssh_config):
    remove(rig, "d26c", "layered:latest")
    done = _ship(
        "layered:latest",
        "--from",
        "rig-d20",
        "--to",
        socket(rig, "d26c"),
        "--ssh-config",
        ssh_config,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert "layered ok" in run_image(rig, "d26c", "layered:latest")


def test_unknown_image_is_one_clear_line(rig):
    done = _ship("no-such-image:1", "--from", socket(rig, "d26"), "--to", socket(rig, "d26c"))
    assert done.returncode == 5
    assert len(said(done.stderr)) == 1 and done.stderr == said(done.stderr)[0] + "\n"
    assert "no-such-image:1" in done.stderr and "Traceback" not in done.stderr


def test_unreachable_host_is_one_clear_line(rig, tmp_path):
    config = tmp_path / "cfg"
    config.write_text("Host nowhere\n  HostName 127.0.0.1\n  Port 1\n")
    done = _ship(
        "rosie:latest", "--from", socket(rig, "d26"), "--to", "nowhere", "--ssh-config", config
    )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and said(done.stderr)[0].startswith("shipit: error:")


def test_a_log_gets_plain_progress_lines(rig):
    """stderr is not a terminal here: each step is a line, then the summary."""
    remove(rig, "d20", "layered:latest")  # a layer it lacks: the engine says it registers it
    done = _ship(
        "layered:latest", "--from", socket(rig, "d26"), "--to", socket(rig, "d20"), "--full"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    steps = [PROGRESS_LINE.sub("", line) for line in lines if PROGRESS_LINE.match(line)]
    assert steps[0] == f"connecting to {socket(rig, 'd20')}", lines
    assert any(s.startswith("waiting for the source engine (") for s in steps), lines
    assert "shipping" in steps, lines
    # the classic store says which layer it registers, of those sent
    assert any(re.fullmatch(r".*: the engine is registering layer 1/\d+", s) for s in steps), lines
    assert said(done.stderr) == [lines[-1]] and lines[-1].startswith("shipped layered:latest")


def test_library_call(rig):
    from shipit.api import ShipOptions, ship

    Full = ShipOptions(full=True)  # noqa: N806 - every layer, though the target has them

    remove(rig, "d26c", "rosie:test")
    report = ship(["rosie:test"], to=socket(rig, "d26c"), source=socket(rig, "d20"), options=Full)
    assert report.images == ["rosie:test"] and report.target.image_store == "containerd"
    assert report.bytes_sent > 0 and report.layers >= 1 and not report.already_there
    again = ship(["rosie:test"], to=socket(rig, "d26c"), source=socket(rig, "d20"))
    assert again.already_there and again.bytes_sent == 0


BIG = "bigfiles:latest"


@pytest.fixture(scope="module")
def big_image(rig, tmp_path_factory) -> str:
    """An image of ~800 MB (several times the 200 MB budget), built once per rig."""
    if inspect(rig, "d26", BIG) is None:
        ctx = tmp_path_factory.mktemp("big")
        for n in range(4):  # incompressible halves and compressible halves
            with open(ctx / f"blob{n}", "wb") as out:
                for _ in range(100):
                    out.write(os.urandom(1 << 20))
                    out.write(bytes(range(256)) * 4096)
        (ctx / "Dockerfile").write_text(
            "FROM scratch\n" + "".join(f"COPY blob{n} /data/blob{n}\n" for n in range(4))
        )
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        subprocess.run(
            [rig["docker_cli"], "-H", socket(rig, "d26"), "build", "-q", "-t", BIG, str(ctx)],
            check=True,
            env=env,
            capture_output=True,
        )
    return BIG


def test_streaming_keeps_memory_small(rig, ssh_config, big_image):
    remove(rig, "d26c", big_image)
    size = inspect(rig, "d26", big_image)["Size"]
    probe = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(r.returncode)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            sys.executable,
            "-m",
            "shipit",
            big_image,
            "--from",
            socket(rig, "d26"),
            "--to",
            "rig-d26c",
            "--ssh-config",
            str(ssh_config),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1]) / 1024
    assert size > 4 * 200e6 * 0.95
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
    assert inspect(rig, "d26c", big_image) is not None
    docker_cli(rig, "d26c", "rmi", big_image)
