"""Running and timing one command of the bench, and the rig it runs on.

Shared by bench.py, bench_nodes.py and bench_floor.py, so that every benchmark times its
pipelines the same way: each in its own process group under a time limit, with the bytes
that crossed the shaped link and, for shipit, its peak RSS, CPU time and --json summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
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
GB = 1e9

# Per-run time limits (seconds): 2.1 GB of plain tar needs ~3 min at 100 Mbit/s.
TIMEOUT = {"lo": 420, "slow": 540, "fanout-slow": 900, "setup": 900}

TARGET_STORE = {"d26c": "containerd", "d20": "classic", "d26x": "classic"}
FAN = ("d26c", "d20", EXTRA)
#: Targets whose store keeps layers as sent: the cold phase also times `--wire zstd` there.
PLAIN_OPTION = tuple(t for t, store in TARGET_STORE.items() if store == "containerd")


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
        read_shipit(row, out, usage)
    log_row(row)
    return row


def timed(key: str, title: str, cmd: str, link: str, runs: dict, **kw: Any) -> dict[str, Any]:
    """``measure(cmd)`` under ``title``, kept in ``runs[key]`` (600 s unless told)."""
    log(f"[{key}] {title}")
    row = measure(cmd, link=link, timeout=kw.pop("timeout", 600), **kw)
    row["title"] = title
    runs[key] = row
    return row


def first_byte_command(engine: str, ref: str) -> str:
    """A curl of ``engine``'s ``/images/get`` for ``ref`` that prints the seconds to its
    first byte and the bytes it sent (Engine 25+ on the classic store stages the whole
    export in a temp directory before it answers)."""
    path = sock(engine).removeprefix("unix://")
    q = ref.replace(":", "%3A")
    return (
        f"curl -sS --unix-socket {path} -o /dev/null -w '%{{time_starttransfer}} "
        f"%{{size_download}}' 'http://docker/images/get?names={q}'"
    )


def first_byte(row: dict[str, Any]) -> None:
    """Move the output of ``first_byte_command`` out of ``row["stdout"]`` into
    ``first_byte_seconds`` and ``pipe_bytes``."""
    try:
        first, size = row.pop("stdout", "").split()
        row["first_byte_seconds"], row["pipe_bytes"] = round(float(first), 2), int(size)
    except ValueError:
        return
    log(f"    first byte after {float(first):.1f} s")


def read_shipit(row: dict[str, Any], out: str, usage: Path) -> None:
    """A shipit run's peak RSS and CPU seconds (/usr/bin/time), its --json summary and the
    bytes it says it sent."""
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


def log_row(row: dict[str, Any]) -> None:
    """One line under the run's title: seconds, bytes moved, error, RSS and CPU."""
    secs = row["seconds"]
    extra = f"  {row['error']}" if not row["ok"] else ""
    if "peak_rss_mb" in row:
        extra += f"  RSS {row['peak_rss_mb']:.0f} MB, CPU {row['cpu_seconds']} s"
    moved = row.get("wire_tx_bytes") or row.get("pipe_bytes")
    if moved:
        extra = f"  {moved / 1e6:.0f} MB" + extra
    log(f"    {'-' if secs is None else f'{secs:7.1f} s'}{extra}")


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


# ---------------------------------------------------------------- the machine


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
