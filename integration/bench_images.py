"""The bench images: bench:v1 (this machine's own files, at least 1.2 GB in several
layers) and bench:v2 (only the 1 MiB app layer differs), built once on the source."""

from __future__ import annotations

import hashlib
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from bench_measure import GB, TIMEOUT, WORK, docker, inspect, log, sh

MIN_IMAGE = 1_200_000_000


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
