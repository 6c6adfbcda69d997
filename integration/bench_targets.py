"""The targets between runs: a cold run needs an engine without any trace of the bench
images (on containerd also their blobs and snapshots), and the fan-out a third engine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_measure import ENV, EXTRA, SOURCE, TARGET_STORE, WORK, docker, inspect, rig, sh


def ctr(engine: str) -> str:
    c = rig()["tools"]["ctr"][engine]
    return f"{c['bin']} -a {c['address']} -n {c['namespace']}"


# Every digest the bench images have had on a containerd target (manifests, configs and
# layers as each loader wrote them) and the chain IDs of their snapshots. A `docker load`
# that is interrupted (a timeout, an engine restarted by someone else) leaves its blobs
# and snapshots behind under a lease that lives 24 h: `docker rmi` and prune do not remove
# them, and a later "cold" load would find them. clear() removes exactly these.
KNOWN_BLOBS: set[str] = set()
CHAINS: dict[str, list[str]] = {}  # ref -> chain IDs, base first


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(
            d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()
        )
    return out


def known_file() -> Path:
    # Kept between runs (like .lock): a blob a killed run left behind is still recognised.
    return WORK / ".known-blobs"


def save_known() -> None:
    with contextlib.suppress(OSError):
        known_file().write_text("\n".join(sorted(KNOWN_BLOBS)) + "\n")


def learn_source() -> None:
    """Diff IDs (= uncompressed blob digests), configs and chain IDs of bench:v1/v2, and
    the digests earlier runs saw on containerd targets."""
    with contextlib.suppress(OSError):
        KNOWN_BLOBS.update(x for x in known_file().read_text().split() if x)
    for ref in ("bench:v1", "bench:v2"):
        info = inspect(SOURCE, ref) or {}
        diff_ids = info.get("RootFS", {}).get("Layers", [])
        KNOWN_BLOBS.update(diff_ids)
        if info.get("Id"):
            KNOWN_BLOBS.add(info["Id"])
        CHAINS[ref] = chain_ids(diff_ids)


def bench_blobs(engine: str, refs: list[str] | None = None) -> set[str]:
    """Digests the bench images (or just ``refs``) reference in a containerd store."""
    r = sh(f"{ctr(engine)} images ls", check=False)
    digests: set[str] = set()
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) < 3 or not f[0].startswith("docker.io/library/bench:"):
            continue
        if refs is not None and f[0].removeprefix("docker.io/library/") not in refs:
            continue
        digests.add(f[2])
        m = sh(f"{ctr(engine)} content get {f[2]}", check=False)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(m.stdout)
            for sub in doc.get("manifests", []):  # an index: its manifests
                digests.add(sub["digest"])
                sub_doc = json.loads(sh(f"{ctr(engine)} content get {sub['digest']}").stdout)
                digests.add(sub_doc["config"]["digest"])
                digests.update(layer["digest"] for layer in sub_doc.get("layers", []))
            if "config" in doc:
                digests.add(doc["config"]["digest"])
                digests.update(layer["digest"] for layer in doc.get("layers", []))
    return digests


def content(engine: str) -> dict[str, str]:
    """digest -> labels of every blob in a containerd store."""
    out = {}
    for line in sh(f"{ctr(engine)} content ls", check=False).stdout.splitlines()[1:]:
        f = line.split("\t")
        if f and f[0].startswith("sha256:"):
            out[f[0]] = f[-1]
    return out


def snapshots(engine: str) -> set[str]:
    r = sh(f"{ctr(engine)} snapshots --snapshotter overlayfs ls", check=False)
    return {line.split()[0] for line in r.stdout.splitlines()[1:] if line.split()}


def clear(engine: str, refs: str = "bench:v1 bench:v2") -> dict[str, Any]:
    """Remove bench images from a target; on containerd also every blob and snapshot of
    theirs (see KNOWN_BLOBS) that no remaining bench image uses."""
    store = TARGET_STORE[engine]
    if store == "containerd":
        KNOWN_BLOBS.update(bench_blobs(engine))
        save_known()
    sh(f"{docker(engine)} rmi -f {refs}", check=False)
    sh(f"{docker(engine)} image prune -f", check=False)
    out: dict[str, Any] = {}
    for ref in refs.split():
        if inspect(engine, ref):
            raise RuntimeError(f"{ref} is still on {engine} after rmi")
    if store == "containerd":
        kept_refs = [r for r in ("bench:v1", "bench:v2") if r not in refs.split()]
        kept_refs = [r for r in kept_refs if landed(engine, r)]
        keep = bench_blobs(engine, kept_refs) if kept_refs else set()
        keep_chains = {c for r in kept_refs for c in CHAINS.get(r, [])}

        def leftovers() -> tuple[list[str], list[str]]:
            blobs = [
                d
                for d, labels in content(engine).items()
                if d not in keep and (d in KNOWN_BLOBS or any(k in labels for k in KNOWN_BLOBS))
            ]
            chains = {c for r in CHAINS.values() for c in r} - keep_chains
            return blobs, [c for c in snapshots(engine) if c in chains]

        deadline = time.monotonic() + 10  # the engine's own garbage collection, first
        while any(left := leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        blobs, snaps = left
        if snaps:  # children before parents
            order = [c for r in CHAINS.values() for c in reversed(r) if c in snaps]
            for c in dict.fromkeys(order):
                sh(f"{ctr(engine)} snapshots --snapshotter overlayfs rm {c}", check=False)
        if blobs:
            sh(f"{ctr(engine)} content rm {' '.join(blobs)}", check=False)
        if snaps or blobs:
            out["leftovers_removed"] = {"blobs": len(blobs), "snapshots": len(snaps)}
        blobs, snaps = leftovers()
        if blobs or snaps:
            raise RuntimeError(
                f"{engine}: {len(blobs)} blobs, {len(snaps)} snapshots of bench images remain"
            )
    df = sh(f"{docker(engine)} system df --format '{{{{.Type}}}}={{{{.Size}}}}'", check=False)
    out["system_df"] = dict(x.split("=", 1) for x in df.stdout.split("\n") if "=" in x)
    return out


def landed(engine: str, ref: str) -> bool:
    return inspect(engine, ref) is not None


def wait_engines(seconds: float = 180) -> None:
    """Until the source and every target answer (an engine restarted by someone else)."""
    engines = [SOURCE, "d26c", "d20"] + ([EXTRA] if (WORK / EXTRA).exists() else [])
    deadline = time.monotonic() + seconds
    for e in engines:
        while sh(f"{docker(e)} version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"engine {e} does not answer")
            time.sleep(2)
    time.sleep(3)


# ---------------------------------------------------------------- the bench's own engine


def d26_usr() -> Path:
    """Where d26's binaries are: unpacked from another suite, or the system's /usr."""
    return Path(rig()["engines"][SOURCE]["usr"])


def pid_of(pidfile: Path, needle: str) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if needle in cmdline else None


def stop_pid(pidfile: Path, needle: str, timeout: float) -> None:
    pid = pid_of(pidfile, needle)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_of(pidfile, needle) == pid and Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
                break
            time.sleep(0.2)
    pidfile.unlink(missing_ok=True)


def stop_extra_engine() -> None:
    d = WORK / EXTRA
    if not d.exists():
        return
    stop_pid(d / "dockerd.pid", str(d / "daemon.json"), 60)
    stop_pid(d / "containerd" / "containerd.pid", str(d / "containerd" / "config.toml"), 30)
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(f"{d}/")
    ]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    shutil.rmtree(d, ignore_errors=True)


def start_extra_engine() -> None:
    """d26x: Engine 26.1 (d26's binaries), classic store, own containerd."""
    stop_extra_engine()
    d = WORK / EXTRA
    (d / "containerd").mkdir(parents=True)
    for p in (WORK, d):
        p.chmod(0o755)  # the rig-d26 user reaches the socket through here
    (d / "containerd" / "config.toml").write_text(
        f'version = 2\nroot = "{d}/containerd/root"\nstate = "{d}/containerd/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{d}/containerd/containerd.sock"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/containerd/opt"\n'
    )
    (d / "daemon.json").write_text("{}\n")
    u = d26_usr()
    env = dict(ENV, PATH=f"{u}/sbin:{u}/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    with open(d / "containerd" / "containerd.log", "ab") as out:
        p = subprocess.Popen(
            [f"{u}/bin/containerd", "--config", f"{d}/containerd/config.toml"],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    (d / "containerd" / "containerd.pid").write_text(f"{p.pid}\n")
    wait_for(lambda: (d / "containerd" / "containerd.sock").is_socket(), "containerd", p)
    with open(d / "dockerd.log", "ab") as out:
        p = subprocess.Popen(
            [
                f"{u}/sbin/dockerd",
                *("--config-file", f"{d}/daemon.json", "--data-root", f"{d}/root"),
                *("--exec-root", f"{d}/exec", "-H", f"unix://{d}/docker.sock"),
                *("--pidfile", f"{d}/docker.pid", "--group", "shipit-rig"),
                *("--containerd", f"{d}/containerd/containerd.sock"),
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
            ],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    (d / "dockerd.pid").write_text(f"{p.pid}\n")
    wait_for(lambda: sh(f"{docker(EXTRA)} version", check=False).returncode == 0, "dockerd", p)


def wait_for(ready: Any, what: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{EXTRA}: {what} did not start (see {WORK / EXTRA})")
        time.sleep(0.2)
