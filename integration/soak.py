#!/usr/bin/env python3
"""Soak: consecutive redeploys of an image whose top layer changes every round, into each
store over SSH (`make soak`: 50 rounds; the test suite runs 5).

Each round builds ``soak:latest`` on the rig's d26 as ``layered:latest`` plus one layer of
fresh random bytes (1 MiB), ships it over SSH to the target and records what shipit sent,
its peak RSS, and the target's disk use (the engine's data root and its containerd).
Round 0 puts the base there and is not counted. At the end it looks for what shipit may
leave behind (probe and stage images) and for failures, then removes the soak images
from the source and the target.

    python integration/soak.py [--rounds 50] [--targets d20,d26c,d28c] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RIG = Path(os.environ.get("SHIPIT_RIG_DIR", "/var/tmp/shipit-rig"))
SOURCE = "d26"
BASE = "layered:latest"
IMAGE = "soak:latest"
LEFTOVER_REPOS = ("shipit-probe.invalid/probe", "shipit-stage.invalid/stage")


@dataclass
class Round:
    ok: bool
    seconds: float
    bytes_sent: int | None
    layers_sent: int | None
    peak_rss_mb: float
    disk_bytes: int
    error: str = ""


@dataclass
class Soak:
    target: str
    store: str
    layer_bytes: int
    rounds: list[Round] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    disk_before: int = 0

    @property
    def failures(self) -> int:
        return sum(not r.ok for r in self.rounds)

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.rounds if r.ok]
        sent = [r.bytes_sent for r in ok if r.bytes_sent is not None]
        rss = [r.peak_rss_mb for r in ok]
        grown = (self.rounds[-1].disk_bytes - self.disk_before) if self.rounds else 0
        return {
            "target": self.target,
            "store": self.store,
            "rounds": len(self.rounds),
            "failures": self.failures,
            "leftovers": len(self.leftovers),
            "bytes_sent_min": min(sent, default=None),
            "bytes_sent_max": max(sent, default=None),
            "rss_mb_min": min(rss, default=None),
            "rss_mb_max": max(rss, default=None),
            "disk_growth_per_round": round(grown / max(len(self.rounds), 1)),
            "seconds_max": max((r.seconds for r in ok), default=None),
        }


class Rig:
    """The rig as rig.json describes it, and the commands the soak runs on it."""

    def __init__(self, ssh_config: Path | None = None) -> None:
        self.json = json.loads((RIG / "rig.json").read_text())
        self.ssh_config = ssh_config or Path(self.json["ssh"]["config"])
        self.env = dict(os.environ, DOCKER_CONFIG=str(RIG / "docker-config"))

    def docker(self, engine: str, *args: str, check: bool = True) -> str:
        cli = self.json.get("docker_cli", "docker")
        sock = self.json["engines"][engine]["socket"]
        done = subprocess.run(
            [cli, "-H", sock, *args], capture_output=True, text=True, timeout=300, env=self.env
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} on {engine}: {done.stderr.strip()}")
        return done.stdout

    def disk(self, engine: str) -> int:
        """Bytes under the engine's data root and its containerd's root."""
        done = subprocess.run(
            ["du", "-sbc", str(RIG / engine / "root"), str(RIG / engine / "containerd")],
            capture_output=True,
            text=True,
        )
        return int(done.stdout.splitlines()[-1].split()[0])

    def build(self, context: Path, layer_bytes: int) -> None:
        """soak:latest on the source: the base plus one layer no earlier round had."""
        before = self.docker(SOURCE, "images", "-q", "--no-trunc", IMAGE).split()
        (context / "round.bin").write_bytes(secrets.token_bytes(layer_bytes))
        (context / "Dockerfile").write_text(f"FROM {BASE}\nCOPY round.bin /round.bin\n")
        env = dict(self.env, DOCKER_BUILDKIT="0")
        cli = self.json.get("docker_cli", "docker")
        sock = self.json["engines"][SOURCE]["socket"]
        subprocess.run(
            [cli, "-H", sock, "build", "-q", "-t", IMAGE, str(context)],
            check=True,
            capture_output=True,
            env=env,
            timeout=300,
        )
        # The previous round's image, by ID: not a prune, which would take the dangling
        # images of whatever else is building on the source just now.
        if before:
            self.docker(SOURCE, "rmi", *before, check=False)

    def ship(self, engine: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
        """One shipit run over SSH: its result, wall seconds and peak RSS (MB)."""
        alias = self.json["engines"][engine]["ssh_alias"]
        cmd = [sys.executable, "-m", "shipit", IMAGE, "--to", alias, "--json"]
        cmd += ["--from", self.json["engines"][SOURCE]["socket"]]
        cmd += ["--ssh-config", str(self.ssh_config)]
        start = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=self.env)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.monotonic() - start
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
        return done, seconds, usage.ru_maxrss / 1024

    def leftovers(self, engine: str) -> list[str]:
        listed = self.docker(engine, "images", "--format", "{{.Repository}}:{{.Tag}}")
        return [line for line in listed.split() if line.startswith(LEFTOVER_REPOS)]

    def clean(self, engine: str) -> None:
        self.docker(engine, "rmi", "-f", IMAGE, check=False)
        self.docker(engine, "image", "prune", "-f", check=False)


def soak(rig: Rig, engine: str, rounds: int, layer_bytes: int = 1 << 20) -> Soak:
    store = rig.json["engines"][engine]["store"]
    result = Soak(engine, store, layer_bytes)
    context = Path(tempfile.mkdtemp(prefix="shipit-soak-"))
    try:
        rig.clean(engine)
        for n in range(rounds + 1):
            rig.build(context, layer_bytes)
            done, seconds, rss = rig.ship(engine)
            report = json.loads(done.stdout) if done.returncode == 0 and done.stdout else {}
            row = Round(
                ok=done.returncode == 0,
                seconds=round(seconds, 2),
                bytes_sent=report.get("bytes_sent"),
                layers_sent=report.get("layers_sent"),
                peak_rss_mb=round(rss, 1),
                disk_bytes=rig.disk(engine),
                error=done.stderr.strip().splitlines()[-1] if done.returncode else "",
            )
            if n == 0:
                result.disk_before = row.disk_bytes  # the base is there now
                if not row.ok:
                    raise RuntimeError(f"{engine}: the first ship failed: {row.error}")
            else:
                result.rounds.append(row)
        result.leftovers = rig.leftovers(engine)
    finally:
        shutil.rmtree(context, ignore_errors=True)
        rig.clean(engine)
        rig.docker(SOURCE, "rmi", "-f", IMAGE, check=False)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--targets", default="d20,d26c,d28c", help="rig engines, comma-separated")
    p.add_argument("--json", type=Path, help="also write every round here")
    args = p.parse_args()
    rig = Rig()
    results = []
    for engine in args.targets.split(","):
        print(f"soak: {engine}: {args.rounds} redeploys over SSH", file=sys.stderr, flush=True)
        results.append(soak(rig, engine, args.rounds))
    head = ["target", "store", "rounds", "failures", "leftovers", "bytes/redeploy", "RSS MB"]
    print("| " + " | ".join([*head, "disk growth/round", "slowest s"]) + " |")
    print("|" + "---|" * (len(head) + 2))
    for r in results:
        s = r.summary()
        print(
            f"| {s['target']} | {s['store']} | {s['rounds']} | {s['failures']} "
            f"| {s['leftovers']} | {s['bytes_sent_min']:,}–{s['bytes_sent_max']:,} "
            f"| {s['rss_mb_min']}–{s['rss_mb_max']} | {s['disk_growth_per_round']:,} B "
            f"| {s['seconds_max']} |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | r.summary() for r in results], indent=1))
    return 0 if all(r.failures == 0 and not r.leftovers for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
