"""Several shipit processes at once into one engine (CI jobs deploying to the same
server): overlapping images, the same image twice, staged and not, cold and redeploy.
Every run succeeds, every tag lands as the right image, and no throwaway image of a run
(probe, stage) outlives it or breaks another's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engines import docker_cli, identity, inspect, remove, socket

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("SHIPIT_CONCURRENT_ROUNDS", "20"))
SOURCE = "d26"
JOBS = [("layered:latest",), ("layered:latest",), ("rosie:latest", "rosie:test")]


def _start(rig, ssh_config, images, target: str, staged: bool) -> subprocess.Popen:
    to = rig["engines"][target]["ssh_alias"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipit",
            *images,
            "--from",
            socket(rig, SOURCE),
            "--to",
            to,
            "--ssh-config",
            str(ssh_config),
            "-q",
            "--staged" if staged else "--no-staged",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def _throwaways(rig, engine: str) -> list[str]:
    out = docker_cli(rig, engine, "images", "--format", "{{.Repository}}:{{.Tag}}")
    return [line for line in out.splitlines() if ".invalid/" in line]


@pytest.mark.parametrize("target", ["d20", "d26c"])
def test_concurrent_ships_into_one_engine(rig, ssh_config, target):
    images = {i for job in JOBS for i in job}
    expected = {i: identity(inspect(rig, SOURCE, i)) for i in images}
    for round_ in range(ROUNDS):
        if round_ % 2 == 0:
            remove(rig, target, *images)  # cold every other round, redeploy in between
        procs = [
            _start(rig, ssh_config, job, target, staged=(n + round_) % 2 == 0)
            for n, job in enumerate(JOBS)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"round {round_}: {proc.args}: {err}"
            assert out == "" and err == ""  # -q: nothing on success
        for image in images:
            landed = inspect(rig, target, image)
            assert landed is not None, f"round {round_}: {image} missing on {target}"
            assert identity(landed) == expected[image], f"round {round_}: {image}"
        assert _throwaways(rig, target) == [], f"round {round_}"
