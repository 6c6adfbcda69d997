"""Remote users outside the docker group: one whose sudo lets it run docker without a
password ships through `sudo -n docker system dial-stdio`; one with neither gets one line
and exit 4."""

from __future__ import annotations

import json

import pytest
from engines import identity, inspect, remove, run_image, said, socket

pytestmark = pytest.mark.integration


def _shipit(*args: object):
    from conftest import run_shipit

    return run_shipit(*args, timeout=300)


def test_a_user_with_passwordless_sudo_ships_through_it(rig, ssh_config):
    engine = rig["access"]["engine"]
    remove(rig, engine, "rosie:test")
    done = _shipit(
        "rosie:test",
        "--from",
        socket(rig, "d20"),
        "--to",
        rig["access"]["sudo"],
        "--ssh-config",
        ssh_config,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "reached the engine through sudo -n" in report["decisions"]
    assert identity(inspect(rig, engine, "rosie:test")) == identity(
        inspect(rig, "d20", "rosie:test")
    )
    assert "Hello, World!" in run_image(rig, engine, "rosie:test")
    info = _shipit("info", "--json", "--ssh-config", ssh_config, rig["access"]["sudo"])
    assert info.returncode == 0 and json.loads(info.stdout)["sudo"] is True
    forced = _shipit("info", "--sudo", "--json", "--ssh-config", ssh_config, rig["access"]["sudo"])
    assert forced.returncode == 0 and json.loads(forced.stdout)["sudo"] is True


def test_a_user_with_neither_the_socket_nor_sudo_gets_one_line(rig, ssh_config):
    done = _shipit(
        "rosie:test",
        "--from",
        socket(rig, "d20"),
        "--to",
        rig["access"]["none"],
        "--ssh-config",
        ssh_config,
    )
    assert done.returncode == 4, done.stderr
    lines = said(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "may not open the docker socket and sudo -n needs a password" in lines[0]
