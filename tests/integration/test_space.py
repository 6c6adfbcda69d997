"""A target whose disk cannot hold the images is refused before anything is sent: an
engine of the rig's Docker 26 binaries whose data root is a small tmpfs."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from engines import inspect, said, socket

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_engine(rig, tmp_path_factory):
    """dockerd with its data root on an 8 MB tmpfs (its own managed containerd)."""
    bin_dir = rig["engines"]["d26"]["usr"]  # d26's binaries: unpacked, or the system's
    folder = tmp_path_factory.mktemp("small")
    root = folder / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
    sock = folder / "docker.sock"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}/sbin:{bin_dir}/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    daemon = subprocess.Popen(
        [
            f"{bin_dir}/sbin/dockerd",
            "--data-root",
            str(root),
            "--exec-root",
            str(folder / "exec"),
            "--pidfile",
            str(folder / "docker.pid"),
            "-H",
            f"unix://{sock}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ],
        stdout=open(folder / "dockerd.log", "wb"),  # noqa: SIM115 - lives with the daemon
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        for _ in range(300):
            done = subprocess.run(
                [rig["docker_cli"], "-H", f"unix://{sock}", "version"], capture_output=True
            )
            if done.returncode == 0:
                break
            assert daemon.poll() is None, (folder / "dockerd.log").read_text()[-2000:]
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        daemon.terminate()
        daemon.wait(60)
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_target_without_space_is_refused_before_sending(rig, small_engine):
    from conftest import run_shipit

    image = "layered:latest"
    size = inspect(rig, "d26", image)["Size"]
    assert size > 8 << 20
    done = run_shipit("ship", image, "--from", socket(rig, "d26"), "--to", small_engine, "--json")
    assert done.returncode == 5, done.stderr
    lines = said(done.stderr)
    assert len(lines) == 1 and "MB free" in lines[0] and "--no-space-check" in lines[0], lines
    out = subprocess.run(
        [rig["docker_cli"], "-H", small_engine, "image", "ls", "-q"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == ""
