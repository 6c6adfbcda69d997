"""Cold ship and redeploy into a Podman host over SSH: shipit against what users type
today, `docker save | ssh host podman load` and `podman image scp`.

Needs the rig (integration/rig.sh up; integration/podman.sh up) and app:v1/app:v2 on d26
(tests/integration/test_delta.py builds them). Prints one Markdown table.

    python integration/bench_podman.py [--host rig-podman]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

RIG = Path(os.environ.get("SHIPIT_RIG_DIR", "/var/tmp/shipit-rig"))
PM = RIG / "podman"
BENCH = PM / "bench"  # a HOME of its own: podman's connection list and known_hosts
LOCAL = ("--root", str(BENCH / "root"), "--runroot", str(BENCH / "run"))


def sh(command: str, **kw) -> float:
    start = time.monotonic()
    kw.setdefault("stderr", subprocess.DEVNULL)  # podman's progress lines
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, **kw)
    return time.monotonic() - start


def remote(host: str, command: str) -> None:
    sh(f"ssh -F {PM}/ssh/config {host} {command} </dev/null", stdout=subprocess.DEVNULL)


def clear(host: str) -> None:
    remote(host, "podman rmi -f app:v1 app:v2 >/dev/null 2>&1; podman image prune -f")


def shipit(image: str, host: str) -> tuple[float, int]:
    d26 = f"unix://{RIG}/d26/docker.sock"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "ship", image, "--from", d26, "--to", host]
        + ["--ssh-config", f"{PM}/ssh/config", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.monotonic() - start, json.loads(done.stdout)["bytes_sent"]


def docker_pipe(image: str, host: str) -> float:
    d26 = f"unix://{RIG}/d26/docker.sock"
    return sh(
        f"docker -H {d26} save {image} | ssh -F {PM}/ssh/config {host} podman load",
        stdout=subprocess.DEVNULL,
    )


def scp_setup(host: str) -> str:
    """Load app:v1/v2 into a local Podman (own storage) and name the host a connection."""
    home = BENCH / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "known_hosts").write_text((PM / "ssh" / "known_hosts").read_text())
    env = {**os.environ, "HOME": str(home)}
    d26 = f"unix://{RIG}/d26/docker.sock"
    for image in ("app:v1", "app:v2"):
        sh(
            f"docker -H {d26} save {image} | podman {' '.join(LOCAL)} load",
            stdout=subprocess.DEVNULL,
        )
    name = f"bench-{host}"
    port = json.loads((PM / "podman.json").read_text())["ssh"]["port"]
    subprocess.run(["podman", "system", "connection", "rm", name], env=env, capture_output=True)
    sh(
        f"podman system connection add {name} --identity {PM}/ssh/id_ed25519 "
        f"ssh://{host}@127.0.0.1:{port}",
        env=env,
    )
    return name


def scp(image: str, connection: str) -> float:
    # Podman 4.3's scp authenticates with an ssh-agent only (see main).
    env = {**os.environ, "HOME": str(BENCH / "home")}
    return sh(
        f"podman {' '.join(LOCAL)} image scp {image} {connection}::",
        env=env,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="rig-podman")
    host = parser.parse_args().host
    rows = []
    clear(host)
    cold, sent = shipit("app:v1", host)
    warm, warm_sent = shipit("app:v2", host)
    rows.append(("shipit", cold, sent, warm, warm_sent))
    clear(host)
    cold = docker_pipe("app:v1", host)
    warm = docker_pipe("app:v2", host)
    size = int(
        subprocess.run(
            f"docker -H unix://{RIG}/d26/docker.sock save app:v2 | wc -c",
            shell=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    rows.append(("docker save | ssh podman load", cold, size, warm, size))
    clear(host)
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    for key, value in re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", agent.stdout):
        os.environ[key] = value
    subprocess.run(["ssh-add", "-q", str(PM / "ssh" / "id_ed25519")], check=True)
    try:
        connection = scp_setup(host)
        cold = scp("app:v1", connection)
        warm = scp("app:v2", connection)
        rows.append(("podman image scp", cold, size, warm, size))
    except subprocess.CalledProcessError as exc:
        print(f"podman image scp failed: {exc}", file=sys.stderr)
    finally:
        os.kill(int(os.environ["SSH_AGENT_PID"]), signal.SIGTERM)
    clear(host)
    print(f"Into {host} over SSH on loopback (app:v1 cold, then app:v2 onto it)\n")
    print("| method | cold s | cold MB sent | redeploy s | redeploy MB sent |")
    print("|---|---|---|---|---|")
    for name, c, cs, w, ws in rows:
        print(f"| {name} | {c:.1f} | {cs / 1e6:.1f} | {w:.1f} | {ws / 1e6:.3f} |")


if __name__ == "__main__":
    main()
