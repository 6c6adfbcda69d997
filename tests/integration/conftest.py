"""The rig: five real Docker engines and an sshd (integration/rig.sh writes rig.json).

No rig → the integration tests skip, unless $CI or $SHIPIT_REQUIRE_RIG is set: then they
fail, so CI can never pass by silently skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ENGINES = ("d20", "d26", "d26c", "d28", "d28c")


def rig_dir() -> Path:
    return Path(os.environ.get("SHIPIT_RIG_DIR", "/var/tmp/shipit-rig"))


def _rig_problem(rig: dict[str, Any] | None, path: Path) -> str | None:
    if rig is None:
        return f"no rig: {path} is missing (bash integration/rig.sh up)"
    for name in ENGINES:
        sock = rig["engines"][name]["socket"].removeprefix("unix://")
        if not Path(sock).exists():
            return f"rig engine {name} is down: no {sock}"
    try:
        socket.create_connection((rig["ssh"]["host"], rig["ssh"]["port"]), timeout=5).close()
    except OSError as exc:
        return f"rig sshd {rig['ssh']['host']}:{rig['ssh']['port']} is down: {exc}"
    return None


@pytest.fixture(scope="session")
def rig() -> dict[str, Any]:
    """rig.json as a dict; skips (or fails under CI) when the rig is not up."""
    path = rig_dir() / "rig.json"
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        loaded = None
    problem = _rig_problem(loaded, path)
    if problem:
        if os.environ.get("CI") or os.environ.get("SHIPIT_REQUIRE_RIG"):
            pytest.fail(problem + " — and $CI/$SHIPIT_REQUIRE_RIG says the rig is required")
        pytest.skip(problem)
    assert loaded is not None
    return loaded


def write_ssh_config(rig: dict[str, Any], dest: Path, known_hosts: Path, **replace: str) -> Path:
    """The rig's ssh config with its own known_hosts file (and options replaced)."""
    text = Path(rig["ssh"]["config"]).read_text()
    text = re.sub(r"(?m)^(\s*UserKnownHostsFile\s+).*$", rf"\g<1>{known_hosts}", text)
    for option, value in replace.items():
        text = re.sub(rf"(?m)^(\s*{option}\s+).*$", rf"\g<1>{value}", text)
    dest.write_text(text)
    return dest


@pytest.fixture
def empty_known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "known_hosts"  # absent: nothing is known yet


@pytest.fixture
def ssh_config_untrusted(rig, tmp_path, empty_known_hosts) -> Path:
    """A copy of the rig's ssh config whose known_hosts is empty."""
    return write_ssh_config(rig, tmp_path / "ssh_config", empty_known_hosts)


@pytest.fixture
def ssh_config(rig, tmp_path) -> Path:
    """A copy of the rig's ssh config with its own copy of the rig's known_hosts."""
    known = tmp_path / "known_hosts"
    shutil.copy(rig["ssh"]["known_hosts"], known)
    return write_ssh_config(rig, tmp_path / "ssh_config", known)


def run_shipit(*args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m shipit ARGS`` as a user would run it (own process, real exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "shipit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture(name="run_shipit")
def _run_shipit_fixture():
    return run_shipit


@pytest.fixture
def make_ssh_config(rig, tmp_path):
    """``make_ssh_config(known_hosts, **options)``: a rig config copy with options replaced."""

    def make(known_hosts: Path, name: str = "ssh_config", **replace: str) -> Path:
        return write_ssh_config(rig, tmp_path / name, known_hosts, **replace)

    return make
