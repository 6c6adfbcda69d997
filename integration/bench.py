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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_evaluate import evaluate
from bench_images import build_images, layer_sources
from bench_measure import (
    CURRENT,
    ENV,
    EXTRA,
    FAN,
    GB,
    LINK_MBIT,
    NETNS_SH,
    ROOT,
    SOURCE,
    WORK,
    docker,
    inspect,
    kill_group,
    log,
    machine,
    sh,
)
from bench_report import write_report
from bench_scenarios import Bench
from bench_targets import clear, known_file, learn_source, start_extra_engine, stop_extra_engine


class Interrupted(Exception):
    pass


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


def preflight() -> None:
    """Root, the rig and the tools the pipes use, before anything is touched."""
    if os.geteuid() != 0:
        raise SystemExit("bench: must run as root (network namespace, tc, the rig)")
    if subprocess.run(["bash", str(ROOT / "integration/rig.sh"), "status"], env=ENV).returncode:
        raise SystemExit("bench: the rig is not up (make rig-up)")
    for tool in ("zstd", "gzip", "tc", "ip", "/usr/bin/time", "/usr/sbin/sshd", "dd"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is missing")


def link_check() -> float:
    """Seconds for 50 MiB through the shaped link; too fast means it is not shaped."""
    c = sh(f"bash {NETNS_SH} check")
    check = float(c.stdout.strip())
    log(f"shaped link: 50 MiB in {check:.2f} s (ideal 4.2 s at {LINK_MBIT} Mbit/s)")
    if check < 3.5:
        raise SystemExit("bench: the shaped link is not shaped")
    return check


def run_phases(bench: Bench, args: argparse.Namespace) -> None:
    if "floors" in args.phases:
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


def result(
    args: argparse.Namespace,
    runs: dict[str, dict[str, Any]],
    v1: dict[str, Any],
    check: float | None,
    started: float,
    load0: str,
) -> dict[str, Any]:
    """benchmarks.json: the run, the machine, the image and every measurement."""
    tar = runs.get("floor/save-file", {}).get("pipe_bytes")
    hist = sh(f"{docker(SOURCE)} history --no-trunc --format '{{{{.Size}}}}' bench:v1")
    return {
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
        "runs": runs,
    }


def main() -> int:
    args = parse_args()
    if args.render:
        res = json.loads(args.render.read_text())
        res["targets"] = evaluate(res["runs"])
        write_report(args.out, res)
        return 0
    preflight()
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
            check = link_check() if "slow" in args.links else None
            touched.update(args.targets)
            if need_extra:
                touched.update(FAN)
            if "floors" in args.phases:
                touched.update(args.load_floors)
            run_phases(bench, args)
            res = result(args, bench.runs, v1, check, started, load0)
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
