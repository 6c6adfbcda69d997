"""`make demo` (integration/demo.sh) ships and runs its image, and leaves the fixtures the
other tests rely on as it found them: rosie:latest and rosie:test on every engine are the
images they were (rig.sh up makes them one image again if a test changed that), and the
demo's own tag is gone again."""

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
    def fixtures() -> dict[str, tuple[str, str]]:
        return {
            e: (inspect(rig, e, "rosie:latest")["Id"], inspect(rig, e, "rosie:test")["Id"])
            for e in ENGINES
        }

    before = fixtures()
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
    assert "rosie:demo already in rig-d26c" in done.stderr  # the second ship: nothing sent
    assert done.stdout.rstrip().endswith("Hello, World!")
    assert fixtures() == before
    for engine in ENGINES:
        assert inspect(rig, engine, "rosie:demo") is None, engine
