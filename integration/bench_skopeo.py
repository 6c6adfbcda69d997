"""The skopeo peer of the floor bench: a skopeo that Engine 26 answers, and a socket of a
remote engine forwarded over SSH, so that `skopeo copy docker-daemon: docker-daemon:`
crosses the same shaped link as shipit and the pipes.

Debian 12's skopeo 1.9 speaks Docker API 1.22, which Engine 25 and later refuse ("client
version 1.22 is too old"). Debian 13's 1.18 negotiates; it needs glibc 2.38, so on Debian 12
it runs from its unpacked debs under Debian 13's own dynamic loader (nothing is installed).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Iterator

import bench_measure as bench

#: Debian 13's skopeo and the libraries it needs beyond Debian 12's (glibc, gpgme, sqlite).
TRIXIE_DEBS = ("skopeo", "libc6", "libgpgme11t64", "libassuan9", "libgpg-error0", "libsqlite3-0")


def _answered(skopeo: str) -> str | None:
    """None when the source engine answers ``skopeo``, else its error line. (A name that
    does not exist: the engine's answer is "no such image" once the API version is good.)"""
    r = bench.sh(
        f"{skopeo} inspect --daemon-host {bench.sock(bench.SOURCE)} "
        "docker-daemon:shipit-no-such-image:never",
        check=False,
        timeout=60,
    )
    return r.stderr.strip().splitlines()[-1] if "too old" in r.stderr else None


def _trixie_skopeo() -> str | None:
    """Debian 13's skopeo unpacked into the bench's work directory and run by Debian 13's
    loader, or None when its debs cannot be had (the rig adds the trixie suite to apt)."""
    root = bench.WORK / "skopeo-trixie"
    debs = root / "debs"
    shutil.rmtree(root, ignore_errors=True)
    debs.mkdir(parents=True)
    got = bench.sh(
        "cd {} && apt-get download -q -o APT::Sandbox::User=root {}".format(
            debs, " ".join(f"{p}/trixie" for p in TRIXIE_DEBS)
        ),
        check=False,
        timeout=300,
    )
    if got.returncode:
        bench.log(f"skopeo: Debian 13's debs not downloaded: {got.stderr.strip()[-200:]}")
        return None
    for deb in debs.glob("*.deb"):
        bench.sh(f"dpkg -x {deb} {root}")
    lib = root / "usr" / "lib" / (sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu")
    loaders = sorted(lib.glob("ld-linux*.so.*"))
    if not loaders:
        return None
    return f"{loaders[0]} --library-path {lib} {root}/usr/bin/skopeo"


def skopeo_command() -> tuple[str, str]:
    """(command line, version line) of a skopeo the source engine answers: the system's
    when it does, else Debian 13's; the system's (and its refusal) when neither runs."""
    system = shutil.which("skopeo") or "skopeo"
    chosen = system
    refused = _answered(system)
    if refused:
        bench.log(f"skopeo: the system's is refused ({refused}); trying Debian 13's")
        newer = _trixie_skopeo()
        if newer and _answered(newer) is None:
            chosen = newer
    version = bench.sh(f"{chosen} --version", check=False).stdout.strip() or "skopeo"
    return chosen, version


@contextlib.contextmanager
def forwarded_socket(alias: str, engine: str) -> Iterator[str]:
    """``engine``'s socket on the far side of ``alias``, forwarded by ``ssh -L`` to a
    local socket for as long as the block runs: its ``unix://`` address."""
    local = bench.WORK / f"forwarded-{engine}.sock"
    local.unlink(missing_ok=True)
    remote = bench.sock(engine).removeprefix("unix://")
    proc = subprocess.Popen(
        ["ssh", "-F", str(bench.SSH_CONFIG), "-N", "-o", "ExitOnForwardFailure=yes"]
        + ["-L", f"{local}:{remote}", alias],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=bench.ENV,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not local.exists():
            exited = proc.poll() is not None
            if exited or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if exited else "timed out"
                raise RuntimeError(f"ssh -L to {alias}'s engine socket failed: {err.strip()}")
            time.sleep(0.05)
        yield f"unix://{local}"
    finally:
        bench.kill_group(proc)
        local.unlink(missing_ok=True)
