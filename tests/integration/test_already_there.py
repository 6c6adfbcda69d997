"""A ship of what the target already holds: no save, no load, tags pointed through the
API, and little on the wire. And the seconds a ship reports are the command's wall time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engines import docker_cli, inspect, remove, socket
from test_ship import big_image  # noqa: F401 - a fixture: ~800 MB, built once per rig

SOURCE = "d26"
PAIR = ("rosie:latest", "rosie:test")

#: A ProxyCommand that relays stdin to host:port and back, keeping in COUNT.<pid> how many
#: bytes went upstream (client to server).
COUNTING_PROXY = r"""
import os, select, socket, sys
host, port, out = sys.argv[1], int(sys.argv[2]), f"{sys.argv[3]}.{os.getpid()}"
s = socket.create_connection((host, port))
up = 0
stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
while True:
    ready, _, _ = select.select([stdin, s], [], [])
    if stdin in ready:
        data = os.read(stdin, 65536)
        if not data:
            break
        up += len(data)
        s.sendall(data)
        with open(out + ".tmp", "w") as f:  # the client may kill this process any time
            f.write(str(up))
        os.replace(out + ".tmp", out)
    if s in ready:
        data = s.recv(65536)
        if not data:
            break
        os.write(stdout, data)
"""


def _shipit(*args: object, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shipit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    return done, time.monotonic() - start


def _ship(rig, ssh_config, target: str, *images: str, env: dict[str, str]) -> dict:
    alias = rig["engines"][target]["ssh_alias"]
    done, _ = _shipit(
        *images,
        "--from",
        socket(rig, SOURCE),
        "--to",
        alias,
        "--ssh-config",
        ssh_config,
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _saves_since(rig, since: str) -> list[str]:
    """`save` events of the source engine since ``since`` (its own clock)."""
    until = docker_cli(rig, SOURCE, "info", "--format", "{{.SystemTime}}").strip()
    out = docker_cli(
        rig,
        SOURCE,
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        "type=image",
        "--filter",
        "event=save",
        "--format",
        "{{.Actor.ID}}",
    )
    return out.split()


@pytest.fixture
def cache(tmp_path) -> dict[str, str]:
    """A memo and landings record of this test's own, so its first ship is a real one."""
    return {"SHIPIT_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.parametrize("target", ["d20", "d26", "d26c", "d28", "d28c"])
def test_a_reship_of_what_is_there_saves_and_sends_nothing(rig, ssh_config, cache, target):
    first = _ship(rig, ssh_config, target, *PAIR, env=cache)
    assert not first.get("already_there") or first["bytes_sent"] == 0
    since = docker_cli(rig, SOURCE, "info", "--format", "{{.SystemTime}}").strip()
    again = _ship(rig, ssh_config, target, *PAIR, env=cache)
    assert again["already_there"] is True
    assert again["bytes_sent"] == 0 and again["bytes_read"] == 0
    assert again["layers_sent"] == 0 and again["layers_skipped"] == again["layers"] > 0
    assert _saves_since(rig, since) == []  # the source was never asked for a save
    source_id = inspect(rig, SOURCE, PAIR[0])["Id"]
    for name in PAIR:
        there = inspect(rig, target, name)
        assert there["RootFS"] == inspect(rig, SOURCE, name)["RootFS"]
        if rig["engines"][target]["store"] == "classic":
            assert there["Id"] == source_id


@pytest.mark.parametrize("target", ["d20", "d26c"])
def test_a_reship_that_only_adds_a_tag_points_it_without_a_save(rig, ssh_config, cache, target):
    _ship(rig, ssh_config, target, *PAIR, env=cache)
    docker_cli(rig, target, "rmi", PAIR[1])
    since = docker_cli(rig, SOURCE, "info", "--format", "{{.SystemTime}}").strip()
    again = _ship(rig, ssh_config, target, *PAIR, env=cache)
    assert again["already_there"] is True and again["bytes_sent"] == 0
    assert again["notes"] == [f"tagged {PAIR[1]} there"]
    assert _saves_since(rig, since) == []
    assert inspect(rig, target, PAIR[1])["Id"] == inspect(rig, target, PAIR[0])["Id"]


def test_a_name_that_is_another_image_is_moved_or_shipped(rig, ssh_config, cache):
    """The name exists on the target as another image. When the right image is there
    under another name the name is moved to it; when it is not there, it is shipped."""
    target = "d28"
    source_id = inspect(rig, SOURCE, PAIR[1])["Id"]
    _ship(rig, ssh_config, target, "layered:latest", *PAIR, env=cache)
    try:
        docker_cli(rig, target, "tag", "layered:latest", PAIR[1])  # the wrong image
        moved = _ship(rig, ssh_config, target, PAIR[1], env=cache)
        assert moved["already_there"] is True and moved["notes"] == [f"tagged {PAIR[1]} there"]
        assert inspect(rig, target, PAIR[1])["Id"] == source_id
        docker_cli(rig, target, "rmi", *PAIR)
        docker_cli(rig, target, "tag", "layered:latest", PAIR[1])
        since = docker_cli(rig, SOURCE, "info", "--format", "{{.SystemTime}}").strip()
        shipped = _ship(rig, ssh_config, target, PAIR[1], env=cache)
        assert not shipped.get("already_there")
        assert _saves_since(rig, since) != []  # a real ship: saved, then loaded
        assert inspect(rig, target, PAIR[1])["Id"] == source_id
    finally:
        _ship(rig, ssh_config, target, *PAIR, env=cache)


def _counted_config(ssh_config: Path, alias: str, tmp_path: Path) -> tuple[Path, Path]:
    proxy = tmp_path / "counting_proxy.py"
    proxy.write_text(COUNTING_PROXY)
    count = tmp_path / "upstream.txt"
    text = ssh_config.read_text()
    line = f"  ProxyCommand {sys.executable} {proxy} %h %p {count}\n"
    text, n = re.subn(rf"(?m)^Host {re.escape(alias)}\n", lambda m: m.group(0) + line, text)
    assert n == 1
    counted = tmp_path / "ssh_config_counted"
    counted.write_text(text)
    return counted, count


def _upstream(count: Path) -> int:
    """Bytes upstream over every connection made since the last call."""
    files = [f for f in count.parent.glob(count.name + ".*") if f.suffix != ".tmp"]
    total = sum(int(f.read_text() or 0) for f in files)
    for f in files:
        f.unlink()
    return total


def test_a_no_op_ship_and_info_send_little_upstream(rig, ssh_config, cache, tmp_path):
    """Counted through a ProxyCommand: every byte the client sends over the SSH link."""
    alias = rig["engines"]["d20"]["ssh_alias"]
    _ship(rig, ssh_config, "d20", *PAIR, env=cache)
    counted, count = _counted_config(ssh_config, alias, tmp_path)
    again = _ship(rig, counted, "d20", *PAIR, env=cache)
    assert again["already_there"] is True
    ship_up = _upstream(count)
    done, _ = _shipit("info", alias, "--ssh-config", counted, env=cache)
    assert done.returncode == 0, done.stderr
    info_up = _upstream(count)
    assert 0 < ship_up <= 64_000, ship_up
    assert 0 < info_up <= 64_000, info_up


def test_the_reported_seconds_are_the_wall_time(rig, ssh_config, cache, big_image):  # noqa: F811
    """A cold ship of ~800 MB whose source takes seconds before its first byte: the
    seconds printed and in --json are those the caller waited, within 5 %."""
    remove(rig, "d26c", big_image)
    alias = rig["engines"]["d26c"]["ssh_alias"]
    args = [big_image, "--from", socket(rig, SOURCE), "--to", alias, "--ssh-config", ssh_config]
    try:
        done, wall = _shipit(*args, "--json", env=cache)
        assert done.returncode == 0, done.stderr
        reported = json.loads(done.stdout)["seconds"]
        assert abs(wall - reported) <= 0.05 * wall, (wall, reported)
        remove(rig, "d26c", big_image)
        done, wall = _shipit(*args, env=cache)
        assert done.returncode == 0, done.stderr
        printed = float(re.search(r" in ([0-9.]+) s", done.stderr).group(1))
        assert abs(wall - printed) <= 0.05 * wall + 0.05, (wall, printed)  # printed to 0.1 s
    finally:
        remove(rig, "d26c", big_image)
