#!/usr/bin/env python3
"""shipit against the pipes people type today, on the rig, in one run (`make bench`).

Builds (once) ``bench:v1``, at least 1.2 GB in several layers of this machine's own
files (shared libraries, a Python installation, text, binaries) plus a 1 MiB app layer,
and ``bench:v2`` (only the app layer differs), on the rig's d26 engine. Then, with d26
as the source (by socket), it measures:

  floors    `docker save` to /dev/null (v1, v2) and to a file; `docker load -i` of that
            file into each store: d26c (containerd), d20 (20.10 classic) and d26x (the
            bench's own 26.1 classic engine, the same binaries as d26)
  archive   `docker save | gzip`, `docker save | zstd -T0`, `shipit save` (zstd, gzip)
  cold      per link and target (d26c, d20): `docker save | docker load` (loopback; over
            the shaped link with --slow-plain), the gzip and zstd pipes over ssh,
            `shipit bench:v1 --to`, each into an engine without the image (rmi + prune;
            on containerd also its blobs and snapshots)
  redeploy  v2 onto a target that has v1 (put there by shipit): the zstd pipe (and on
            the shaped link the gzip pipe), `shipit bench:v2 --to`
  fanout    `shipit bench:v1 --to A --to B --to C` (d26c, d20, d26x) against the
            three single gzip pipes in sequence and against each single shipit run

A full run took 46 min on the shared 2-core machine while others' tests ran. --quick
(~15 min): d26c only, no fan-out; --only PHASE (repeatable), --links, --targets narrow
it; --render JSON rewrites the report from a benchmarks.json. Each run has a time limit
(TIMEOUT); a run that fails (e.g. an engine restarted under it by someone else's tests)
is retried once.

Links: "lo" is the rig's sshd on 127.0.0.1; "slow" is a copy of it in network namespace
shipit-bench behind a veth pair shaped to 100 Mbit/s each way (integration/netns.sh).
Writes docs/benchmarks.md and docs/benchmarks.json (or --out DIR). Needs root and the
rig (`make rig-up`). Everything it creates (namespace, veth, sshds, the d26x engine,
archives in /var/tmp/shipit-bench, bench images on the targets) is removed on exit,
including Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RIG = Path(os.environ.get("SHIPIT_RIG_DIR", "/var/tmp/shipit-rig"))
WORK = Path(os.environ.get("SHIPIT_BENCH_DIR", "/var/tmp/shipit-bench"))
NETNS_SH = ROOT / "integration" / "netns.sh"
VETH = os.environ.get("SHIPIT_BENCH_VETH", "shipit-b0")
LINK_MBIT = 100
SSH_CONFIG = WORK / "ssh" / "config"
SHIPIT = [sys.executable, "-m", "shipit"]
SOURCE = "d26"
EXTRA = "d26x"  # the bench's own Engine 26.1 classic: a third fan-out target
MIN_IMAGE = 1_200_000_000
GB = 1e9

# Per-run time limits (seconds): 2.1 GB of plain tar needs ~3 min at 100 Mbit/s.
TIMEOUT = {"lo": 420, "slow": 540, "fanout-slow": 900, "setup": 900}

TARGET_STORE = {"d26c": "containerd", "d20": "classic", "d26x": "classic"}
FAN = ("d26c", "d20", EXTRA)
#: Targets whose store keeps layers as sent: the cold phase also times `--wire zstd` there.
PLAIN_OPTION = tuple(t for t, store in TARGET_STORE.items() if store == "containerd")


class Interrupted(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- engines and commands


def rig() -> dict[str, Any]:
    return json.loads((RIG / "rig.json").read_text())


def sock(engine: str) -> str:
    if engine == EXTRA:
        return f"unix://{WORK}/{EXTRA}/docker.sock"
    return rig()["engines"][engine]["socket"]


def docker(engine: str) -> str:
    return f"{rig()['docker_cli']} -H {sock(engine)}"


def alias(link: str, engine: str) -> str:
    if engine == EXTRA:
        return f"{'lo' if link == 'lo' else 'slow'}-{EXTRA}"
    return f"{'rig' if link == 'lo' else 'slow'}-{engine}"


ENV = dict(os.environ, DOCKER_CONFIG=str(RIG / "docker-config"), LC_ALL="C")


def sh(cmd: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def inspect(engine: str, ref: str) -> dict[str, Any] | None:
    r = sh(f"{docker(engine)} image inspect {ref}", check=False)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


# ---------------------------------------------------------------- running one measurement

CURRENT: list[subprocess.Popen] = []


def kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wire() -> tuple[int, int]:
    """Bytes sent into and received from the shaped link (host side of the veth)."""
    stats = Path(f"/sys/class/net/{VETH}/statistics")
    try:
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())
    except OSError:
        return 0, 0


def measure(cmd: str, *, link: str, timeout: float, shipit: bool = False) -> dict[str, Any]:
    """Run one shell pipeline in its own process group; wall time, bytes, shipit's usage.

    ``{COUNT}`` in ``cmd`` becomes a `dd` that counts the bytes passing that point of the
    pipe. A shipit command runs under /usr/bin/time (peak RSS, CPU seconds) with --json.
    """
    count = WORK / "count.txt"
    usage = WORK / "usage.txt"
    for f in (count, usage):
        f.unlink(missing_ok=True)
    full = cmd.replace("{COUNT}", f"dd bs=1M 2>{count}")
    if shipit:
        full = f"/usr/bin/time -o {usage} -f '%e %M %U %S' {full}"
    row: dict[str, Any] = {"command": cmd.replace("{COUNT} | ", ""), "link": link}
    row["loadavg_before"] = float(Path("/proc/loadavg").read_text().split()[0])
    tx0, rx0 = wire()
    start = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", full],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    CURRENT.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
        row["seconds"] = round(time.monotonic() - start, 2)
        row["ok"] = proc.returncode == 0
        if not row["ok"]:
            row["error"] = f"exit {proc.returncode}: " + " | ".join(err.strip().splitlines()[-3:])
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = "", ""
        row.update(ok=False, seconds=None, error=f"timed out after {timeout:.0f} s")
    finally:
        CURRENT.remove(proc)
        if proc.poll() is None:
            kill_group(proc)
    if link == "slow":
        tx1, rx1 = wire()
        row["wire_tx_bytes"], row["wire_rx_bytes"] = tx1 - tx0, rx1 - rx0
    if count.exists():
        m = re.search(r"^(\d+) bytes", count.read_text(), re.M)
        if m:
            row["pipe_bytes"] = int(m.group(1))
    if not shipit and out.strip():
        row["stdout"] = out.strip()[-2000:]
    if shipit:
        if usage.exists():
            fields = usage.read_text().split()[-4:]
            with contextlib.suppress(ValueError, IndexError):
                row["peak_rss_mb"] = round(int(fields[1]) / 1024, 1)
                row["cpu_seconds"] = round(float(fields[2]) + float(fields[3]), 1)
        row["summary"] = parse_json(out)
        s = row["summary"]
        if isinstance(s, dict) and isinstance(s.get("bytes_sent"), int):
            row["pipe_bytes"] = s["bytes_sent"]
        elif isinstance(s, dict) and isinstance(s.get("targets"), list):  # fan-out
            sent = [(t.get("report") or {}).get("bytes_sent") for t in s["targets"]]
            if sent and all(isinstance(b, int) for b in sent):
                row["pipe_bytes"] = sum(sent)
    secs = row["seconds"]
    extra = f"  {row['error']}" if not row["ok"] else ""
    if "peak_rss_mb" in row:
        extra += f"  RSS {row['peak_rss_mb']:.0f} MB, CPU {row['cpu_seconds']} s"
    moved = row.get("wire_tx_bytes") or row.get("pipe_bytes")
    if moved:
        extra = f"  {moved / 1e6:.0f} MB" + extra
    log(f"    {'-' if secs is None else f'{secs:7.1f} s'}{extra}")
    return row


def parse_json(text: str) -> Any:
    """shipit's --json output: one document, or several (one per target) in a row."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    docs, dec, i = [], json.JSONDecoder(), 0
    while i < len(text):
        try:
            doc, i = dec.raw_decode(text, i)
        except ValueError:
            return {"unparsed": text[-2000:]}
        docs.append(doc)
        while i < len(text) and text[i].isspace():
            i += 1
    return docs


# ---------------------------------------------------------------- the images


def layer_sources() -> list[tuple[str, list[str], str]]:
    """(what, paths on this machine, path in the image) for each base layer."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    libs = f"/usr/lib/{multiarch}"
    prefix = sys.base_prefix
    if prefix in ("/usr", "/usr/local", "/"):  # the system's Python: its stdlib + packages
        py = [p for p in (sysconfig.get_paths()["stdlib"], "/usr/lib/python3") if Path(p).is_dir()]
    else:  # a separately installed Python (pyenv, /opt/...): all of it
        py = [prefix]
    out = [
        ("shared libraries", [libs], libs),
        ("a Python installation", py, "/opt/python"),
        ("text (documentation)", ["/usr/share/doc"], "/usr/share/doc"),
        ("binaries", ["/usr/bin"], "/usr/bin"),
    ]
    total = sum(du(p) for _, paths, _ in out for p in paths)
    for extra in ("/usr/share", "/usr/lib"):  # a smaller machine: more of its files
        if total >= MIN_IMAGE * 1.05:
            break
        out.append((f"more files ({extra})", [extra], f"/extra{extra}"))
        total += du(extra)
    return out


def du(path: str) -> int:
    r = subprocess.run(["du", "-sb", path], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout else 0


def images_ok(engine: str) -> str | None:
    """Why bench:v1/v2 on ``engine`` are not usable as they are (None: they are)."""
    v1, v2 = inspect(engine, "bench:v1"), inspect(engine, "bench:v2")
    if not v1 or not v2:
        return "missing"
    l1, l2 = v1["RootFS"]["Layers"], v2["RootFS"]["Layers"]
    if v1["Size"] < MIN_IMAGE:
        return f"bench:v1 is {v1['Size'] / GB:.2f} GB (< {MIN_IMAGE / GB:.1f})"
    if len(l1) < 4 or len(l1) != len(l2) or l1[:-1] != l2[:-1] or l1[-1] == l2[-1]:
        return "bench:v2 does not differ from bench:v1 in exactly the last (app) layer"
    return None


def build_images(engine: str) -> None:
    """bench:v1 and bench:v2 on ``engine``, unless both are there and well-formed."""
    why = images_ok(engine)
    if why is None:
        return
    log(f"building bench:v1 and bench:v2 on {engine} ({why})")
    sh(f"{docker(engine)} rmi -f bench:v1 bench:v2", check=False)
    ctx = WORK / "ctx"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    try:
        lines = ["FROM scratch"]
        for n, (what, paths, dest) in enumerate(layer_sources()):
            layer = ctx / f"layer{n}"
            layer.mkdir()
            for p in paths:
                dst = layer / Path(p).name if len(paths) > 1 else layer
                if len(paths) == 1:
                    layer.rmdir()
                # Hard links: no copy of 2 GB on the same filesystem; a copy elsewhere.
                q = shlex.quote
                sh(f"cp -al {q(p)} {q(str(dst))} 2>/dev/null || cp -a {q(p)} {q(str(dst))}")
            lines.append(f"COPY layer{n} {dest}")
            log(f"  layer {n}: {what}: {' '.join(paths)} ({du(str(layer)) / 1e6:.0f} MB)")
        lines.append("COPY app /app")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        (ctx / ".dockerignore").write_text("")
        app = ctx / "app"
        app.mkdir()
        for version in ("v1", "v2"):
            # 1 MiB of incompressible bytes, the same for a version on every rebuild.
            seed = f"shipit-bench-{version}".encode()
            (app / "app.bin").write_bytes(hashlib.shake_256(seed).digest(1 << 20))
            (app / "VERSION").write_text(version + "\n")
            sh(
                f"DOCKER_BUILDKIT=0 {docker(engine)} build -q -t bench:{version} {ctx}",
                timeout=TIMEOUT["setup"],
            )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    why = images_ok(engine)
    if why:
        raise SystemExit(f"bench: the built images are not usable: {why}")


# ---------------------------------------------------------------- targets


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


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.runs: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, str] = {}
        self.src = docker(SOURCE)
        self.ssh = f"ssh -F {SSH_CONFIG}"
        self.shipit = " ".join(shlex.quote(a) for a in SHIPIT)
        self.tar = WORK / "v1.tar"

    def record(
        self,
        key: str,
        title: str,
        cmd: str,
        link: str,
        *,
        prep: Callable[[], Any] | None = None,
        lands: tuple[tuple[str, ...], str] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """Measure ``cmd`` after ``prep()``; check that ``lands`` = (targets, ref) landed.

        The rig is shared: another engineer's tests may restart an engine under a run. A
        run that fails (not one that times out) is retried once, after the engines answer.
        """
        log(f"[{key}] {title}")
        timeout = kw.pop("timeout", TIMEOUT["lo" if link == "lo" else "slow"])
        first_error = None
        for attempt in (1, 2):
            try:
                state = prep() if prep else None
            except (RuntimeError, subprocess.SubprocessError) as exc:
                row = {"command": cmd, "link": link, "ok": False, "seconds": None}
                row["error"] = f"setup failed: {exc}"
                log(f"    {row['error']}")
                if attempt == 2:
                    break
                first_error = row["error"]
                wait_engines()
                continue
            row = measure(cmd, link=link, timeout=timeout, **kw)
            if state:
                row["target_state"] = state
            if lands:
                targets, ref = lands
                row["landed"] = {t: landed(t, ref) for t in targets}
                if row["ok"] and not all(row["landed"].values()):
                    row["ok"] = False
                    row["error"] = f"exit 0 but {ref} is not on every target: {row['landed']}"
            if row["ok"] or row["seconds"] is None or attempt == 2:
                break  # done, timed out (not retried: bounded time), or retried already
            first_error = row.get("error")
            log(f"    failed ({first_error}); retrying once when the engines answer")
            wait_engines()
        if first_error:
            row["retried_after"] = first_error
        row["title"] = title
        self.runs[key] = row
        return row

    def shipit_cmd(self, *args: str) -> str:
        return f"{self.shipit} {' '.join(args)} --ssh-config {SSH_CONFIG} -q --json"

    # floors ---------------------------------------------------------------------------
    def floors(self) -> None:
        for v in ("v1", "v2"):
            self.record(
                f"floor/save-null/{v}",
                f"docker save bench:{v} > /dev/null (source {SOURCE})",
                f"{self.src} save bench:{v} > /dev/null",
                "local",
            )
        # How much of a save happens before its first byte: Engine 25+ (classic) stages
        # the whole export in a temp directory before it answers.
        path = sock(SOURCE).removeprefix("unix://")
        row = self.record(
            "floor/save-first-byte/v1",
            f"GET /images/get bench:v1 (source {SOURCE}): time to the first byte",
            f"curl -sS --unix-socket {path} -o /dev/null -w '%{{time_starttransfer}} "
            f"%{{size_download}}' 'http://docker/images/get?names=bench%3Av1'",
            "local",
        )
        with contextlib.suppress(ValueError, IndexError):
            first, size = row.pop("stdout", "").split()
            row["first_byte_seconds"] = round(float(first), 2)
            row["pipe_bytes"] = int(size)
            log(f"    first byte after {float(first):.1f} s")
        self.record(
            "floor/save-file",
            f"docker save bench:v1 > file (source {SOURCE})",
            f"{self.src} save bench:v1 > {self.tar}",
            "local",
        )
        self.runs["floor/save-file"]["pipe_bytes"] = self.tar.stat().st_size
        for t in self.args.load_floors:
            self.record(
                f"floor/load/{t}",
                f"docker load -i file into {t} ({TARGET_STORE[t]} store)",
                f"{docker(t)} load -i {self.tar}",
                "local",
                prep=lambda t=t: clear(t),
                lands=((t,), "bench:v1"),
            )
            clear(t)
        self.tar.unlink(missing_ok=True)

    # archive --------------------------------------------------------------------------
    def archive(self) -> None:
        outs = {
            "gzip": (f"{self.src} save bench:v1 | gzip > {WORK}/a.tar.gz", "a.tar.gz", False),
            "zstd": (
                f"{self.src} save bench:v1 | zstd -q -T0 > {WORK}/a.tar.zst",
                "a.tar.zst",
                False,
            ),
            "shipit": (
                self.shipit_cmd("save", "bench:v1", "--from", sock(SOURCE), "-o", f"{WORK}/s.tar"),
                "s.tar",
                True,
            ),
            "shipit-gzip": (
                self.shipit_cmd(
                    "save", "bench:v1", "--from", sock(SOURCE), "-c", "gzip", "-o", f"{WORK}/g.tar"
                ),
                "g.tar",
                True,
            ),
        }
        titles = {
            "gzip": "docker save | gzip > file",
            "zstd": "docker save | zstd -T0 > file",
            "shipit": "shipit save -o file (zstd 3)",
            "shipit-gzip": "shipit save -c gzip -o file (gzip 1, isa-l)",
        }
        for name in self.args.archives:
            cmd, f, is_shipit = outs[name]
            row = self.record(f"archive/{name}", titles[name], cmd, "local", shipit=is_shipit)
            path = WORK / f
            if path.exists():
                row["archive_bytes"] = path.stat().st_size
                path.unlink()

    # cold -----------------------------------------------------------------------------
    def pipe(self, how: str, link: str, t: str, ref: str) -> tuple[str, str]:
        remote = f"{self.ssh} {alias(link, t)}"
        save = f"{self.src} save {ref}"
        if how == "plain":
            if link == "lo":
                return "docker save | docker load", f"{save} | {{COUNT}} | {docker(t)} load"
            return "docker save | ssh 'docker load'", f"{save} | {{COUNT}} | {remote} 'docker load'"
        if how == "gzip":
            return (
                "docker save | gzip | ssh 'gunzip | docker load'",
                f"{save} | gzip | {{COUNT}} | {remote} 'gunzip | docker load'",
            )
        return (
            "docker save | zstd -T0 | ssh 'zstd -d | docker load'",
            f"{save} | zstd -q -T0 | {{COUNT}} | {remote} 'zstd -q -d | docker load'",
        )

    def ship(
        self,
        key: str,
        link: str,
        targets: tuple[str, ...],
        ref: str,
        prep: Callable[[], Any],
        *options: str,
    ) -> dict[str, Any]:
        to = [a for t in targets for a in ("--to", alias(link, t))]
        title = " ".join(["shipit", ref, *options, *to])
        cmd = self.shipit_cmd(ref, "--from", sock(SOURCE), *options, *to)
        kw: dict[str, Any] = {}
        if len(targets) > 1 and link == "slow":
            kw["timeout"] = TIMEOUT["fanout-slow"]
        return self.record(
            key, title, cmd, link, shipit=True, prep=prep, lands=(targets, ref), **kw
        )

    def cold(self, link: str, t: str) -> None:
        hows = ["plain", "gzip", "zstd"]
        if link == "slow" and t not in self.args.slow_plain:
            hows.remove("plain")
        for how in hows:
            title, cmd = self.pipe(how, link, t, "bench:v1")
            self.record(
                f"cold/{link}/{t}/{how}",
                f"{title} → {t}",
                cmd,
                link,
                prep=lambda: clear(t),
                lands=((t,), "bench:v1"),
            )
        self.ship(f"cold/{link}/{t}/shipit", link, (t,), "bench:v1", prep=lambda: clear(t))
        if t in PLAIN_OPTION:  # the option that trades the store's disk for a faster cold ship
            self.ship(
                f"cold/{link}/{t}/shipit-wire",
                link,
                (t,),
                "bench:v1",
                lambda: clear(t),
                "--wire",
                "zstd",
            )

    # redeploy -------------------------------------------------------------------------
    def with_v1(self, link: str, t: str) -> dict[str, Any]:
        """The redeploy's starting point: bench:v1 as shipit puts it there, no bench:v2."""
        if not landed(t, "bench:v1"):
            log(f"    (shipping bench:v1 to {t} first, untimed)")
            clear(t)
            r = measure(
                self.shipit_cmd("bench:v1", "--from", sock(SOURCE), "--to", alias(link, t)),
                link=link,
                timeout=TIMEOUT["slow"],
                shipit=True,
            )
            if not r["ok"]:
                raise RuntimeError(f"cannot put bench:v1 on {t}: {r.get('error')}")
        return clear(t, "bench:v2")

    def redeploy(self, link: str, t: str) -> None:
        # On loopback the gzip pipe's redeploy is its cold run again (it sends and loads
        # everything) and costs two minutes: it runs on the shaped link only.
        for how in ("gzip", "zstd") if link == "slow" else ("zstd",):
            title, cmd = self.pipe(how, link, t, "bench:v2")
            self.record(
                f"redeploy/{link}/{t}/{how}",
                f"{title} → {t} (has v1)",
                cmd,
                link,
                prep=lambda: self.with_v1(link, t),
                lands=((t,), "bench:v2"),
            )
        self.ship(
            f"redeploy/{link}/{t}/shipit",
            link,
            (t,),
            "bench:v2",
            prep=lambda: self.with_v1(link, t),
        )

    # fan-out --------------------------------------------------------------------------
    def fanout(self, link: str) -> None:
        row = self.ship(
            f"fanout/{link}/shipit", link, FAN, "bench:v1", prep=lambda: [clear(t) for t in FAN]
        )
        got = [t for t, ok in row.get("landed", {}).items() if ok]
        err = row.get("error") or ""
        # A build whose --to takes one value keeps the last one silently (exit 0, one
        # target served) or refuses the option (usage error, exit 2).
        if (err.startswith("exit 0 but") and got == [FAN[-1]]) or err.startswith("exit 2:"):
            row["available"] = False
            row["why_not"] = (
                "this build does not take --to more than once "
                f"(landed on: {', '.join(got) or 'none'}; {err})"
            )
            log(f"    fan-out not available: {row['why_not']}")
        else:
            row["available"] = True
        # Baselines from this run: the single gzip pipe and single shipit into each target.
        for t in FAN:
            if f"cold/{link}/{t}/gzip" not in self.runs:
                title, cmd = self.pipe("gzip", link, t, "bench:v1")
                self.record(
                    f"cold/{link}/{t}/gzip",
                    f"{title} → {t}",
                    cmd,
                    link,
                    prep=lambda t=t: clear(t),
                    lands=((t,), "bench:v1"),
                )
            if row["available"] and f"cold/{link}/{t}/shipit" not in self.runs:
                self.ship(
                    f"cold/{link}/{t}/shipit", link, (t,), "bench:v1", prep=lambda t=t: clear(t)
                )


# ---------------------------------------------------------------- the report


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    engines = {e: rig()["engines"][e]["server_version"] for e in ("d20", "d26", "d26c")}

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "memory_gb": round(mem / 2**30, 1),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
        if hasattr(platform, "freedesktop_os_release")
        else "",
        "python": platform.python_version(),
        "engines": engines,
        "shipit_commit": git("rev-parse", "--short", "HEAD").strip(),
        "shipit_tree_dirty": bool(git("status", "--porcelain", "--", "shipit").strip()),
    }


def is_shipit_run(key: str) -> bool:
    """A run of shipit itself (``…/shipit``, ``…/shipit-wire``), not a baseline pipe."""
    return key.rsplit("/", 1)[-1].startswith("shipit")


def secs(row: dict[str, Any] | None) -> float | None:
    if row and row.get("ok") and row.get("seconds") and row.get("available", True):
        return row["seconds"]
    return None


def mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:,.0f} MB"


def fmt_s(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    if row.get("available") is False:
        return "not available"
    if not row.get("ok"):
        return "timed out" if str(row.get("error", "")).startswith("timed out") else "failed"
    return f"{row['seconds']:.1f}"


def esc(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def ratio(base: float | None, ship: float | None) -> float | None:
    return round(base / ship, 2) if base and ship else None


def fr(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}×"


def evaluate(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each held / not held, from this run's numbers."""
    out: list[dict[str, Any]] = []

    def add(
        name: str, value: float | None, op: str, limit: float, how: str, bound: float | None = None
    ) -> None:
        held = None if value is None else (value >= limit if op == "≥" else value <= limit)
        out.append(
            {
                "target": name,
                "value": value,
                "op": op,
                "limit": limit,
                "how": how,
                "held": held,
                "bound": None if bound is None else round(bound, 2),
            }
        )

    first = runs.get("floor/save-first-byte/v1", {}).get("first_byte_seconds")

    def at_floor(key: str) -> float | None:
        """The fastest a run could be: the source's first byte, then its bytes at link rate."""
        wire = link_floor(runs.get(key) or {})
        return first + wire if first and wire else None

    for t in ("d26c", "d20"):
        ship = secs(runs.get(f"cold/slow/{t}/shipit"))
        for how, lim in (("gzip", 2.5), ("zstd", 1.1)):
            pipe = secs(runs.get(f"cold/slow/{t}/{how}"))
            add(
                f"100 Mbit/s cold → {t}: faster than the {how} pipe",
                ratio(pipe, ship),
                "≥",
                lim,
                f"{how} pipe s ÷ shipit s",
                ratio(pipe, at_floor(f"cold/slow/{t}/shipit")),
            )
    for t in PLAIN_OPTION:
        pipe, key = secs(runs.get(f"cold/slow/{t}/zstd")), f"cold/slow/{t}/shipit-wire"
        if key in runs:
            add(
                f"(option) 100 Mbit/s cold → {t} with `--wire zstd` (plain layers kept): "
                "faster than the zstd pipe",
                ratio(pipe, secs(runs.get(key))),
                "≥",
                1.1,
                "zstd pipe s ÷ shipit --wire zstd s",
                ratio(pipe, at_floor(key)),
            )
    for t in ("d26c", "d20"):
        plain, ship = secs(runs.get(f"cold/lo/{t}/plain")), secs(runs.get(f"cold/lo/{t}/shipit"))
        add(
            f"loopback cold → {t}: vs docker save | docker load",
            round(ship / plain, 2) if plain and ship else None,
            "≤",
            1.15,
            "shipit s ÷ plain pipe s",
        )
    save = secs(runs.get("floor/save-null/v2"))
    for link in ("lo", "slow"):
        for t in ("d26c", "d20"):
            ship = secs(runs.get(f"redeploy/{link}/{t}/shipit"))
            add(
                f"redeploy ({link}) → {t}: vs source's docker save > /dev/null",
                round(ship / save, 2) if save and ship else None,
                "≤",
                1.3,
                "shipit v2 s ÷ docker save bench:v2 > /dev/null s",
            )
    for t in ("d26c", "d20"):
        gzip = secs(runs.get(f"redeploy/slow/{t}/gzip"))
        add(
            f"redeploy (100 Mbit/s) → {t}: faster than the gzip pipe",
            ratio(gzip, secs(runs.get(f"redeploy/slow/{t}/shipit"))),
            "≥",
            10,
            "gzip pipe s ÷ shipit s",
            ratio(gzip, save),  # shipit cannot beat the source's own save of v2
        )
    for link in ("lo", "slow"):
        fan = secs(runs.get(f"fanout/{link}/shipit"))
        singles = [secs(runs.get(f"cold/{link}/{t}/shipit")) for t in FAN]
        one = max(singles) if all(singles) else None
        floor = at_floor(f"fanout/{link}/shipit") if link == "slow" else None
        add(
            f"fan-out to three ({link}) vs one target",
            round(fan / one, 2) if fan and one else None,
            "≤",
            1.5,
            "fan-out s ÷ slowest single-target shipit s",
            floor / one if floor and one else None,
        )
    rss = [r["peak_rss_mb"] for r in runs.values() if "peak_rss_mb" in r]
    add("shipit peak RSS (MB, any run)", max(rss) if rss else None, "≤", 256, "max over runs")
    return out


def link_floor(row: dict[str, Any]) -> float | None:
    b = row.get("wire_tx_bytes")
    return b * 8 / (LINK_MBIT * 1e6) if b else None


def floors_cell(runs: dict[str, dict[str, Any]], key: str) -> str:
    """The floors under a shipit run: the source's save (and its first byte), the
    target's load of the plain archive from a file, the link time of the bytes sent."""
    row = runs[key]
    phase, link, t = key.split("/")[:3]
    ref = "v2" if phase == "redeploy" else "v1"
    parts = []
    if s := secs(runs.get(f"floor/save-null/{ref}")):
        first = runs.get("floor/save-first-byte/v1", {}).get("first_byte_seconds")
        parts.append(f"save {s:.1f}" + (f" (1st byte {first:.1f})" if first else ""))
    if phase != "redeploy" and (s := secs(runs.get(f"floor/load/{t}"))):
        parts.append(f"load {s:.1f}")
    if link == "slow" and (s := link_floor(row)):
        parts.append(f"link {s:.1f}")
    return " · ".join(parts)


def _reports(summary: Any) -> list[dict[str, Any]]:
    """The per-target reports in one shipit ``--json`` summary (one, or a fan-out's)."""
    if not isinstance(summary, dict):
        return []
    if "targets" in summary:
        return [t["report"] for t in summary["targets"] if isinstance(t.get("report"), dict)]
    return [summary]


def choices(runs: dict[str, dict[str, Any]]) -> list[str]:
    """What shipit decided per target: the link it measured, the codec, staged loads."""
    rows = []
    for key, row in runs.items():
        if not is_shipit_run(key) or key.startswith("archive/"):
            continue
        for rep in _reports(row.get("summary")):
            target = (rep.get("target") or {}).get("name", "")
            link = rep.get("link_mb_s")
            rows.append(
                f"| {key} | {target} | {'' if link is None else link} | "
                f"{rep.get('compression', '')} | {rep.get('wire_compression') or ''} | "
                f"{rep.get('stages', 'not reported')} | "
                f"{mb(rep.get('bytes_sent'))} |"
            )
    if not rows:
        return []
    return [
        "## What shipit chose",
        "",
        "Per target, from shipit's `--json` summary: the link it measured over SSH (MB/s; "
        "2 MB of SSH IGNORE packets), the layer compression that followed from it and the "
        "engine, the compression of the whole upload around plain layers (classic stores, "
        "one target, or `--wire`), and how many stage loads went before the image's own "
        "(staged loads are on below 20 MB/s).",
        "",
        "| run | target | link MB/s | layers | upload | stages | bytes sent |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def timeline(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Each shipit ship split into: before the source's first byte, streaming, after."""
    first = runs.get("floor/save-first-byte/v1", {}).get("first_byte_seconds")
    rows = []
    for key, row in runs.items():
        summary = row.get("summary")
        if not is_shipit_run(key) or not secs(row) or not isinstance(summary, dict):
            continue
        if "targets" in summary:
            streams = [(t.get("report") or {}).get("seconds") for t in summary["targets"]]
            stream = max((x for x in streams if x), default=None)
        else:
            stream = summary.get("seconds")
        if not stream or key.startswith("archive/"):
            continue
        wall = row["seconds"]
        if any(rep.get("stages") for rep in _reports(summary)):
            key += " (staged)"
        before = first if first else None
        after = wall - stream - (before or 0)
        # The first byte comes from another moment of a noisy machine: ≤ 0 means "none".
        rest = f"{after:.1f}" if after > 0.5 else "≈ 0"
        rows.append(
            f"| {key} | {wall:.1f} | {'' if before is None else f'{before:.1f}'} | "
            f"{stream:.1f} | {rest} |"
        )
    if not rows:
        return []
    return [
        "## Where shipit's time goes",
        "",
        "Wall time of each shipit run split into: the source engine preparing its save "
        "before the first byte (from the floor measurement, not this run), streaming "
        "(shipit's own `seconds`: first byte from the source to the last byte into the "
        "target), and what is left: the target finishing its load after the last byte "
        "(containerd store: unpacking every layer), connecting, the delta probes and the "
        "check of what landed. In a staged run the stage loads overlap the stream, and "
        "streaming lasts until the engine has taken the image's own load.",
        "",
        "| run | wall s | source's first byte s | streaming s | after the stream s |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def write_report(out: Path, res: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(res, indent=2) + "\n")
    runs, m, img = res["runs"], res["machine"], res["image"]
    L: list[str] = ["# Benchmarks", ""]
    L += [
        f"Generated by `{res['command']}` on {res['generated']} "
        f"({'quick run' if res['quick'] else 'full run'}, {res['wall_minutes']} min). "
        "One run of each command: the machine is shared, so treat single numbers as ±10–20 %.",
        "",
        f"- Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GiB RAM, kernel "
        f"{m['kernel']}, {m['os']}; load average {res['loadavg'][0]} at start, "
        f"{res['loadavg'][1]} at the end.",
        f"- Engines (rig): d20 = {m['engines']['d20']} classic, d26 = {m['engines']['d26']} "
        f"classic (the source, by socket), d26c = {m['engines']['d26c']} containerd store, "
        "d26x = the bench's own 26.1 classic engine (same binaries as d26; third fan-out "
        "target and the 26-classic load floor).",
        f"- shipit at commit {m['shipit_commit']}"
        + (" (shipit/ has uncommitted changes)" if m["shipit_tree_dirty"] else "")
        + f", Python {m['python']}.",
        f"- Image `bench:v1`: {img['bytes'] / GB:.2f} GB in {len(img['layers'])} layers of this "
        f"machine's files ({'; '.join(img['layers'])}); `bench:v2` differs only in the 1 MiB "
        f"app layer. `docker save` tar: {mb(img.get('tar_bytes'))}.",
        "- Links: **lo** = the rig's sshd on 127.0.0.1; **slow** = a copy of that sshd in "
        "network namespace `shipit-bench`, reached over a veth pair (10.200.0.1/30 ↔ "
        f"10.200.0.2/30) shaped with `tbf rate {LINK_MBIT}mbit` each way, no added latency "
        f"(50 MiB through it took {res.get('link_check_seconds', '?')} s; 4.2 s is the "
        "ideal). Bytes on the wire: the veth's tx_bytes (payload + SSH + TCP/IP) on the "
        "shaped link; on loopback the byte count of the pipe or shipit's `bytes_sent`.",
        "- Cold = target without the image (`docker rmi`, `docker image prune -f`, and on "
        "the containerd store every blob of the image gone from the content store). "
        "Redeploy = v2 onto a target that has v1 as shipit put it there.",
        "- Speed-up = baseline seconds ÷ shipit seconds (> 1: shipit is faster).",
        "",
    ]

    # Targets
    L += [
        "## Targets",
        "",
        "*At the floor*: the same ratio if shipit took only what it cannot avoid — the "
        "source's first byte plus its bytes at the link's rate (100 Mbit/s), or the source's "
        "own `docker save` of v2 for a redeploy. Where that misses the limit too, the "
        "target cannot be held on this machine whatever shipit does.",
        "",
        "| target | measured | limit | held | at the floor |",
        "|---|---|---|---|---|",
    ]
    for g in res["targets"]:
        v = "—" if g["value"] is None else f"{g['value']}"
        held = {True: "**held**", False: "**not held**", None: "not measured"}[g["held"]]
        bound = g.get("bound")
        L.append(
            f"| {esc(g['target'])} ({g['how']}) | {v} | {g['op']} {g['limit']} | {held} | "
            f"{'' if bound is None else bound} |"
        )
    L.append("")

    # Floors
    L += [
        "## Floors: what the engines cost alone",
        "",
        "| what | seconds | MB/s of tar |",
        "|---|---|---|",
    ]
    tar = img.get("tar_bytes") or img["bytes"]
    for key, row in runs.items():
        if key.startswith("floor/"):
            s = secs(row)
            if "first_byte_seconds" in row:
                L.append(
                    f"| `{esc(row['title'])}` | {row['first_byte_seconds']:.1f} "
                    f"(of {fmt_s(row)} for the whole save) | |"
                )
                continue
            L.append(
                f"| `{esc(row['title'])}` | {fmt_s(row)} | {tar / s / 1e6:.0f} |"
                if s
                else f"| `{esc(row['title'])}` | {fmt_s(row)} | |"
            )
    L.append("")

    # Archive
    if any(k.startswith("archive/") for k in runs):
        L += [
            "## Archive (`shipit save` vs compressing `docker save`)",
            "",
            "| how | seconds | size | size ÷ tar | shipit save speed-up | peak RSS | CPU s |",
            "|---|---|---|---|---|---|---|",
        ]
        ship = secs(runs.get("archive/shipit"))
        for key, row in runs.items():
            if not key.startswith("archive/"):
                continue
            size = row.get("archive_bytes")
            rel = f"{size / tar:.3f}" if size else ""
            sp = "" if "shipit" in key else fr(ratio(secs(row), ship))
            L.append(
                f"| `{esc(row['title'])}` | {fmt_s(row)} | {mb(size)} | {rel} | {sp} | "
                f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} |"
            )
        L.append("")

    # Ship tables
    def ship_table(phase: str, heading: str, blurb: str) -> None:
        keys = [k for k in runs if k.startswith(phase + "/")]
        if not keys:
            return
        L.extend([f"## {heading}", "", blurb, ""])
        L.append(
            "| link | target | how | seconds | bytes on the wire | shipit speed-up "
            "| peak RSS MB | CPU s | floors s (see above) |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            _, link, t, _how = k.split("/")
            groups.setdefault((link, t), []).append(k)
        for (link, t), ks in groups.items():
            ship = secs(runs.get(f"{phase}/{link}/{t}/shipit"))
            for k in ks:
                row = runs[k]
                b = row.get("wire_tx_bytes") if link == "slow" else row.get("pipe_bytes")
                how = row["title"].rsplit(" → ", 1)[0]
                is_ship = is_shipit_run(k)
                L.append(
                    f"| {link} | {t} | `{esc(how)}` | {fmt_s(row)} | {mb(b)} | "
                    f"{'' if is_ship else fr(ratio(secs(row), ship))} | "
                    f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} | "
                    f"{floors_cell(runs, k) if is_ship else ''} |"
                )
        L.append("")

    ship_table(
        "cold",
        "Cold ship: bench:v1 into an empty target",
        "Source d26 by socket. Pipes run `docker load` over `ssh` (loopback `plain` loads "
        "straight into the target's socket). Bytes: see above.",
    )
    ship_table(
        "redeploy",
        "Redeploy: bench:v2 onto a target holding bench:v1",
        "The pipes send the whole image again; shipit sends what its build sends (see "
        "its summary below).",
    )
    red = {k: v for k, v in runs.items() if k.startswith("redeploy/") and k.endswith("/shipit")}
    if red:
        L += [
            "shipit's `--json` summary for the redeploys:",
            "",
            "| link | target | bytes_sent | layers_sent | layers_skipped | bytes_saved |",
            "|---|---|---|---|---|---|",
        ]
        for k, row in red.items():
            s = row.get("summary") if isinstance(row.get("summary"), dict) else {}
            _, link, t, _ = k.split("/")
            L.append(
                f"| {link} | {t} | {mb(s.get('bytes_sent'))} | {s.get('layers_sent', '')} | "
                f"{s.get('layers_skipped', 'not reported')} | "
                f"{mb(s['bytes_saved']) if 'bytes_saved' in s else 'not reported'} |"
            )
        L.append("")

    fan = [k for k in runs if k.startswith("fanout/")]
    if fan:
        L += [
            "## Fan-out: bench:v1 to d26c, d20 and d26x",
            "",
            "| link | how | seconds | bytes on the wire | peak RSS MB | CPU s |",
            "|---|---|---|---|---|---|",
        ]
        after: list[str] = []  # sentences under the table, not inside it
        for k in fan:
            row = runs[k]
            link = k.split("/")[1]
            b = row.get("wire_tx_bytes") if link == "slow" else row.get("pipe_bytes")
            L.append(
                f"| {link} | `{esc(row['title'])}` | {fmt_s(row)} | {mb(b)} | "
                f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} |"
            )
            gz = [secs(runs.get(f"cold/{link}/{t}/gzip")) for t in FAN]
            sg = [secs(runs.get(f"cold/{link}/{t}/shipit")) for t in FAN]
            fs = secs(row)
            L.append(
                f"| {link} | three gzip pipes in sequence (sum of the single runs) | "
                f"{sum(gz):.1f} | | | |"
                if all(gz)
                else f"| {link} | three gzip pipes in sequence | not measured | | | |"
            )
            if all(sg):
                L.append(
                    f"| {link} | single-target shipit, slowest of d26c/d20/d26x | {max(sg):.1f} "
                    "| | | |"
                )
            if row.get("available") is False:
                after.append(f"- {link}: not available — {row['why_not']}.")
            elif fs and all(gz):
                after.append(
                    f"- {link}: fan-out speed-up vs three gzip pipes {sum(gz) / fs:.2f}×"
                    + (f"; fan-out ÷ slowest single {fs / max(sg):.2f}." if all(sg) else ".")
                )
        L += ["", *after]
        if "fanout/slow/shipit" in runs:
            L.append(
                "- On the shaped link the three targets share one 100 Mbit/s link (one "
                "namespace), so a fan-out must carry three images' bytes through it."
            )
        L.append("")
    L += choices(runs)
    L += timeline(runs)
    if res.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    (out / "benchmarks.md").write_text("\n".join(L))


# ---------------------------------------------------------------- main


def on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def lock() -> Iterator[None]:
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"bench: another run holds {WORK}/.lock") from None
        yield


def cleanup(targets: set[str]) -> None:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop this
    try:
        for p in list(CURRENT):
            kill_group(p)
        log("cleaning up: shaped link, sshds, d26x, archives, bench images on the targets")
        subprocess.run(["bash", str(NETNS_SH), "down"], check=False, env=ENV)
        for t in targets - {EXTRA}:
            with contextlib.suppress(Exception):
                clear(t)
        stop_extra_engine()
        for p in WORK.iterdir():
            if p.name not in (".lock", known_file().name):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    finally:
        signal.signal(signal.SIGINT, old)


def parse_args() -> argparse.Namespace:
    phases = ("floors", "archive", "cold", "redeploy", "fanout")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="fewer scenarios (~15 min): d26c only, no fan-out"
    )
    p.add_argument(
        "--only", action="append", choices=phases, help="run only this phase (repeatable)"
    )
    p.add_argument("--links", default="lo,slow", help="comma list of lo,slow")
    p.add_argument("--targets", default=None, help="comma list of d26c,d20 (cold/redeploy)")
    p.add_argument(
        "--slow-plain",
        action="store_true",
        help="also time `docker save | ssh docker load` over the shaped link (~3 min)",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rewrite benchmarks.md (in --out) from a benchmarks.json; runs nothing",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where the report goes")
    a = p.parse_args()
    a.phases = a.only or list(phases)
    a.links = [x for x in a.links.split(",") if x]
    a.targets = a.targets.split(",") if a.targets else (["d26c"] if a.quick else ["d26c", "d20"])
    a.load_floors = ["d26c"] if a.quick else ["d26c", "d20", EXTRA]
    a.archives = ["zstd", "shipit"] if a.quick else ["gzip", "zstd", "shipit", "shipit-gzip"]
    a.slow_plain = ["d26c"] if a.slow_plain else []
    a.fan_links = [] if a.quick else a.links
    return a


def main() -> int:
    args = parse_args()
    if args.render:
        res = json.loads(args.render.read_text())
        res["targets"] = evaluate(res["runs"])
        write_report(args.out, res)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench: must run as root (network namespace, tc, the rig)")
    if subprocess.run(["bash", str(ROOT / "integration/rig.sh"), "status"], env=ENV).returncode:
        raise SystemExit("bench: the rig is not up (make rig-up)")
    for tool in ("zstd", "gzip", "tc", "ip", "/usr/bin/time", "/usr/sbin/sshd", "dd"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is missing")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    load0 = Path("/proc/loadavg").read_text().split()[0]
    touched: set[str] = set()
    with lock():
        try:
            build_images(SOURCE)
            learn_source()
            bench = Bench(args)
            v1 = inspect(SOURCE, "bench:v1") or {}
            log(f"bench:v1 is {v1['Size'] / GB:.2f} GB in {len(v1['RootFS']['Layers'])} layers")
            need_extra = ("fanout" in args.phases and bool(args.fan_links)) or (
                "floors" in args.phases and EXTRA in args.load_floors
            )
            if need_extra:
                log(f"starting {EXTRA} (Engine 26.1 classic) for fan-out and the load floor")
                start_extra_engine()
            subprocess.run(["bash", str(NETNS_SH), "up"], check=True, env=ENV)
            check = None
            if "slow" in args.links:
                c = sh(f"bash {NETNS_SH} check")
                check = float(c.stdout.strip())
                log(f"shaped link: 50 MiB in {check:.2f} s (ideal 4.2 s at {LINK_MBIT} Mbit/s)")
                if check < 3.5:
                    raise SystemExit("bench: the shaped link is not shaped")
            touched.update(args.targets)
            if need_extra:
                touched.update(FAN)
            if "floors" in args.phases:
                touched.update(args.load_floors)
                bench.floors()
            if "archive" in args.phases:
                bench.archive()
            for link in args.links:
                for t in args.targets:
                    if "cold" in args.phases:
                        bench.cold(link, t)
                    if "redeploy" in args.phases:
                        bench.redeploy(link, t)
                if "fanout" in args.phases and link in args.fan_links:
                    bench.fanout(link)
            tar = bench.runs.get("floor/save-file", {}).get("pipe_bytes")
            hist = sh(f"{docker(SOURCE)} history --no-trunc --format '{{{{.Size}}}}' bench:v1")
            res = {
                "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "command": "make bench"
                if not sys.argv[1:]
                else "python integration/bench.py " + " ".join(sys.argv[1:]),
                "quick": args.quick or bool(args.only),
                "wall_minutes": round((time.monotonic() - started) / 60, 1),
                "loadavg": [float(load0), float(Path("/proc/loadavg").read_text().split()[0])],
                "machine": machine(),
                "image": {
                    "bytes": v1["Size"],
                    "tar_bytes": tar,
                    "layers": [
                        f"{what} {sz}"
                        for (what, _, _), sz in zip(
                            [*layer_sources(), ("app", [], "/app")],
                            reversed(hist.stdout.split()),
                            strict=False,
                        )
                    ],
                },
                "link_check_seconds": check,
                "runs": bench.runs,
            }
            res["targets"] = evaluate(bench.runs)
            write_report(args.out, res)
            log(f"wrote {args.out}/benchmarks.md and benchmarks.json")
            for g in res["targets"]:
                log(f"  {g['target']}: {g['value']} {g['op']} {g['limit']} → {g['held']}")
            return 0
        except (KeyboardInterrupt, Interrupted) as exc:
            log(f"bench: interrupted ({str(exc) or 'SIGINT'})")
            return 130
        finally:
            cleanup(touched)


if __name__ == "__main__":
    sys.exit(main())
