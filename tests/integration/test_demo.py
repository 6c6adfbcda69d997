"""`make demo` (integration/demo.sh) ships and runs its image, and leaves the fixtures the
other tests rely on as rig.sh built them: on every engine rosie:latest and rosie:test are
one image, and the demo's own tag is gone again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ENGINES
from engines import inspect

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_demo_leaves_the_test_images_alone(rig):
    before = {e: inspect(rig, e, "rosie:latest")["Id"] for e in ENGINES}
    done = subprocess.run(
        ["bash", str(REPO / "integration" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SHIPIT_RIG_DIR": rig["rig_dir"]},
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shipped rosie:demo into rig-d26c" in done.stderr  # the summary, on stderr
    assert done.stdout.rstrip().endswith("Hello, World!")
    for engine in ENGINES:
        latest, test = inspect(rig, engine, "rosie:latest"), inspect(rig, engine, "rosie:test")
        assert latest["Id"] == test["Id"] == before[engine], engine
        assert inspect(rig, engine, "rosie:demo") is None, engine
