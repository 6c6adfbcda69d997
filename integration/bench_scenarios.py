"""The scenarios of a run (floors, archive, cold, redeploy, fanout): which commands are
timed, into which target and from which starting state."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

from bench_measure import (
    FAN,
    PLAIN_OPTION,
    SHIPIT,
    SOURCE,
    SSH_CONFIG,
    TARGET_STORE,
    TIMEOUT,
    WORK,
    alias,
    docker,
    first_byte,
    first_byte_command,
    log,
    measure,
    sock,
)
from bench_targets import clear, landed, wait_engines


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
        # How much of a save happens before its first byte.
        row = self.record(
            "floor/save-first-byte/v1",
            f"GET /images/get bench:v1 (source {SOURCE}): time to the first byte",
            first_byte_command(SOURCE, "bench:v1"),
            "local",
        )
        first_byte(row)
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
