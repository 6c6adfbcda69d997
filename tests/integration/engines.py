"""Helpers that talk to the rig's engines the way a user would: the docker CLI, and
testcontainers to run what was shipped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import docker
from testcontainers.core.container import DockerContainer

# No registry is reachable: testcontainers' reaper image cannot be pulled.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

#: What each rig image prints when run, so a test can tell it really runs.
OUTPUT = {
    "rosie:latest": "Hello, World!",
    "rosie:test": "Hello, World!",
    "layered:latest": "layered ok",
    "multi:1": "Hello, World!",
}


#: A plain progress line, which shipit writes when stderr is not a terminal.
PROGRESS_LINE = re.compile(r"shipit: \[\d+\.\d s\] ")


def said(stderr: str) -> list[str]:
    """What shipit said on stderr (errors, the summary, notes), without its progress."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]


def socket(rig: dict[str, Any], engine: str) -> str:
    return rig["engines"][engine]["socket"]


def docker_cli(rig: dict[str, Any], engine: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [rig.get("docker_cli", "docker"), "-H", socket(rig, engine), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} on {engine}: {done.stderr.strip()}")
    return done.stdout


def ctr_command(rig: dict[str, Any], engine: str) -> list[str]:
    """``ctr`` of a containerd-store engine's own containerd, in the engine's namespace
    (rig.sh records one per engine, of the engine's own release)."""
    tool = rig["tools"]["ctr"][engine]
    return [tool["bin"], "--address", tool["address"], "--namespace", tool["namespace"]]


def ctr(rig: dict[str, Any], engine: str, *args: str) -> str:
    """Run ``ctr`` against ``engine``'s containerd; its stdout (fails the test if it fails)."""
    done = subprocess.run(
        [*ctr_command(rig, engine), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def inspect(rig: dict[str, Any], engine: str, ref: str) -> dict[str, Any] | None:
    done = subprocess.run(
        [rig.get("docker_cli", "docker"), "-H", socket(rig, engine), "image", "inspect", ref],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def identity(details: dict[str, Any]) -> tuple[Any, ...]:
    """What must survive a move: the config's contents and the layers' diff_ids."""
    config = details["Config"]
    return (
        config.get("Cmd"),
        config.get("Entrypoint"),
        config.get("Env"),
        config.get("WorkingDir"),
        details["Os"],
        details["Architecture"],
        details["RootFS"]["Layers"],
    )


def remove(rig: dict[str, Any], engine: str, *refs: str) -> None:
    for ref in refs:
        docker_cli(rig, engine, "rmi", "-f", ref, check=False)
    # Dangling leftovers of earlier runs would let a broken load look like a good one.
    docker_cli(rig, engine, "image", "prune", "-f", check=False)


def run_image(rig: dict[str, Any], engine: str, image: str, expected: str | None = None) -> str:
    """Run ``image`` on ``engine`` with testcontainers and wait for its known output
    (``expected``, or what the rig image of that name prints)."""
    expected = expected or OUTPUT[image]
    # testcontainers builds its client with docker.from_env: point it at the engine through
    # the environment it reads, and let the API version be negotiated (20.10 tops at 1.41).
    env = {"DOCKER_HOST": socket(rig, engine)}
    container = DockerContainer(image, docker_client_kw={"environment": env, "version": "auto"})
    container.with_kwargs(network_mode="none")
    with container:
        # The rig's images print and exit: wait for the exit, then read everything.
        status = container.get_wrapped_container().wait(timeout=60)
        out, err = container.get_logs()
    text = out.decode() + err.decode()
    assert status["StatusCode"] == 0, f"{image} on {engine} exited {status}: {text}"
    assert expected in text, f"{image} on {engine} printed {text!r}"
    return text


def client(rig: dict[str, Any], engine: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=socket(rig, engine), version="1.41")


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid → (parent pid, owner uid, command line), read from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            uid = os.stat(f"/proc/{entry}").st_uid
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry)] = (ppid, uid, cmdline)
    return table


def session_pids(rig: dict[str, Any], user: str, command: str = "") -> list[int]:
    """Processes of ``user`` under this rig's sshd (not another rig's sharing the user)."""
    import pwd

    sshd = int((Path(rig["rig_dir"]) / "ssh" / "sshd.pid").read_text())
    uid = pwd.getpwnam(user).pw_uid
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], list(children.get(sshd, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        _, owner, cmdline = table[pid]
        if owner == uid and command in cmdline:
            found.append(pid)
    return found


def kill_sessions(rig: dict[str, Any], user: str) -> None:
    """Cut ``user``'s SSH sessions on this rig, as a dropped link would."""
    for pid in session_pids(rig, user):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
