#!/usr/bin/env python3
"""shipit against the pipes people type today, on the rig (loopback), in one run.

Builds ``bench:v1`` (≥ 1.2 GB in several layers from this machine's own files: shared
libraries, a Python installation, documentation, binaries, and a small app layer) and
``bench:v2`` (only the app layer differs), then times:

  archive: `docker save | gzip`, `docker save | zstd -T0`, `shipit convert` (zstd 3)
  ship:    `docker save | docker load`, the gzip and zstd pipes over ssh, `shipit --to`

and writes docs/benchmarks.md and docs/benchmarks.json. Run with `make bench` (root, rig up).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RIG = Path(os.environ.get("SHIPIT_RIG_DIR", "/var/tmp/shipit-rig"))
WORK = Path(os.environ.get("SHIPIT_BENCH_DIR", "/var/tmp/shipit-bench"))
SHIPIT = [sys.executable, "-m", "shipit"]

LAYERS = [  # (source on this machine, path in the image)
    ("/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"),
    (sys.base_prefix, "/opt/python"),
    ("/usr/share/doc", "/usr/share/doc"),
    ("/usr/bin", "/usr/bin"),
]


def rig() -> dict:
    return json.loads((RIG / "rig.json").read_text())


def sock(engine: str) -> str:
    return rig()["engines"][engine]["socket"]


def docker(engine: str) -> str:
    return f"{rig()['docker_cli']} -H {sock(engine)}"


def sh(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, **kw)


def build_images(engine: str) -> None:
    """bench:v1 and bench:v2 on ``engine`` (skipped when present)."""
    have = subprocess.run(
        f"{docker(engine)} image inspect bench:v1 bench:v2", shell=True, capture_output=True
    )
    if have.returncode == 0:
        return
    ctx = WORK / "ctx"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    lines = ["FROM scratch"]
    for n, (src, dest) in enumerate(LAYERS):
        sh(f"cp -a {shlex.quote(src)} {ctx}/layer{n}")
        lines.append(f"COPY layer{n} {dest}")
    lines.append("COPY app /app")
    for version in ("v1", "v2"):
        app = ctx / "app"
        app.mkdir(exist_ok=True)
        (app / "app.bin").write_bytes(os.urandom(1 << 20))  # the 1 MB that changes
        (app / "VERSION").write_text(version)
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        sh(f"DOCKER_BUILDKIT=0 {docker(engine)} build -q -t bench:{version} {ctx}")
    shutil.rmtree(ctx)


def timed(label: str, cmd: str, results: dict, *, child_rss: bool = False) -> float:
    """Run a shell command once; record wall time (and the peak RSS of its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    sh(cmd, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"command": cmd, "seconds": round(wall, 2)}
    if child_rss:
        row["cpu_seconds"] = round(
            after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1
        )
    results[label] = row
    print(f"{label:45s} {wall:7.1f} s", flush=True)
    return wall


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one shipit run, measured in a fresh process."""
    probe = (
        "import resource,subprocess,sys,time;t=time.monotonic();"
        "subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL);"
        "print(time.monotonic()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    src, dst = "d26", "d26c"
    build_images(src)
    size = json.loads(
        subprocess.run(
            f"{docker(src)} image inspect bench:v1", shell=True, check=True, capture_output=True
        ).stdout
    )[0]["Size"]
    ssh = f"ssh -F {RIG}/ssh/config rig-{dst}"
    results: dict = {"image_bytes": size}
    plain = WORK / "plain.tar"

    def clear_target() -> None:
        sh(f"{docker(dst)} rmi -f bench:v1 bench:v2 >/dev/null 2>&1 || true")
        sh(f"{docker(dst)} image prune -f >/dev/null")

    print(f"bench:v1 is {size / 1e9:.2f} GB; {src} → {dst}", flush=True)
    timed("docker save > file (floor)", f"{docker(src)} save bench:v1 > {plain}", results)
    sizes = {"docker save": plain.stat().st_size}
    timed("docker save | gzip", f"gzip -6 < {plain} > {WORK}/a.tar.gz", results)
    sizes["docker save | gzip"] = (WORK / "a.tar.gz").stat().st_size
    timed("docker save | zstd -T0", f"zstd -q -T0 -3 < {plain} > {WORK}/a.tar.zst", results)
    sizes["docker save | zstd -T0"] = (WORK / "a.tar.zst").stat().st_size
    wall, rss = peak_rss_mb([*SHIPIT, "convert", str(plain), "-o", f"{WORK}/s.tar", "-q"])
    results["shipit convert (zstd 3)"] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss)}
    print(f"{'shipit convert (zstd 3)':45s} {wall:7.1f} s  peak RSS {rss:.0f} MB", flush=True)
    sizes["shipit convert (zstd 3)"] = (WORK / "s.tar").stat().st_size
    results["archive_sizes"] = sizes
    results["convert_mb_per_s"] = round(plain.stat().st_size / wall / 1e6)
    for p in ("a.tar.gz", "a.tar.zst", "s.tar"):
        (WORK / p).unlink()

    clear_target()
    timed("docker save | docker load", f"{docker(src)} save bench:v1 | {docker(dst)} load", results)
    clear_target()
    timed(
        "docker save | gzip | ssh 'gunzip | docker load'",
        f"{docker(src)} save bench:v1 | gzip | {ssh} 'gunzip | docker load'",
        results,
    )
    clear_target()
    timed(
        "docker save | zstd -T0 | ssh 'zstd -d | docker load'",
        f"{docker(src)} save bench:v1 | zstd -q -T0 | {ssh} 'zstd -q -d | docker load'",
        results,
    )
    clear_target()
    cmd = [
        *SHIPIT,
        "bench:v1",
        "--from",
        sock(src),
        "--to",
        f"rig-{dst}",
        "-q",
        "--ssh-config",
        f"{RIG}/ssh/config",
    ]
    wall, rss = peak_rss_mb(cmd)
    results["shipit bench:v1 --to (ssh)"] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss)}
    print(f"{'shipit bench:v1 --to rig-' + dst:45s} {wall:7.1f} s  peak RSS {rss:.0f} MB")
    plain.unlink()

    machine = f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}"
    results["machine"] = machine
    write_report(results)


def write_report(results: dict) -> None:
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    pipe = results["docker save | docker load"]["seconds"]
    gz = results["docker save | gzip | ssh 'gunzip | docker load'"]["seconds"]
    zs = results["docker save | zstd -T0 | ssh 'zstd -d | docker load'"]["seconds"]
    ship = results["shipit bench:v1 --to (ssh)"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` on {results['machine']}. Image: bench:v1, "
        f"{results['image_bytes'] / 1e9:.2f} GB in 5 layers of this machine's own files. "
        "Engine 26 classic → Engine 26 containerd store, SSH on loopback. One run each.",
        "",
        "## Archive",
        "",
        "| how | seconds | size | vs docker save |",
        "|---|---|---|---|",
    ]
    sizes = results["archive_sizes"]
    base = sizes["docker save"]
    for label, size in sizes.items():
        secs = results.get(label if label != "docker save" else "docker save > file (floor)", {})
        lines.append(
            f"| `{label}` | {secs.get('seconds', '')} | {size / 1e6:.0f} MB | {size / base:.2f} |"
        )
    lines += [
        "",
        f"shipit convert: {results['convert_mb_per_s']} MB/s of input, peak RSS "
        f"{results['shipit convert (zstd 3)']['peak_rss_mb']} MB.",
        "",
        "## Ship",
        "",
        "| how | seconds | shipit's time as a ratio of it |",
        "|---|---|---|",
        f"| `docker save \\| docker load` (no SSH) | {pipe} | {ship['seconds'] / pipe:.2f} |",
        f"| `docker save \\| gzip \\| ssh … 'gunzip \\| docker load'` | {gz} | "
        f"{ship['seconds'] / gz:.2f} |",
        f"| `docker save \\| zstd -T0 \\| ssh … 'zstd -d \\| docker load'` | {zs} | "
        f"{ship['seconds'] / zs:.2f} |",
        f"| `shipit bench:v1 --to rig-d26c` | {ship['seconds']} | 1.00 |",
        "",
        f"shipit peak RSS: {ship['peak_rss_mb']} MB.",
        "",
    ]
    (docs / "benchmarks.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
