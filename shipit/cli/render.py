"""Terminal rendering: progress bars from library events, sizes, the shared options."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from shipit.api import Connect, Report, ShipOptions
from shipit.compression import Codec
from shipit.progress import Event
from shipit.progress import Progress as Events

SshConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--ssh-config",
        metavar="PATH",
        help="OpenSSH config [default: $SHIPIT_SSH_CONFIG, else ~/.ssh/config].",
    ),
]
AcceptNewHostKeyOption = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key",
        help="Trust and record an unknown SSH host key (a changed one is always refused).",
    ),
]
CompressionOption = Annotated[
    str | None,
    typer.Option(
        "--compression",
        "-c",
        metavar="zstd|gzip|none",
        help="Layer compression [default: what the target reads and the link suits].",
    ),
]
LevelOption = Annotated[
    int | None,
    typer.Option(
        "--level", "-l", help="Compression level (zstd 1-22, default 3; gzip 1-9, default 1)."
    ),
]
TrustLayersOption = Annotated[
    bool,
    typer.Option(
        "--trust-layers",
        help="Send layers as they are without decompressing them to check their diff_ids.",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing on success (but --json).")
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Say what was chosen for each target, and why.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON summary for scripts.")]


PlatformOption = Annotated[
    list[str] | None,
    typer.Option(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="Platform to ship, e.g. linux/arm64 [default: the target's; archives: all].",
        show_default=False,
    ),
]


SudoOption = Annotated[
    bool,
    typer.Option(
        "--sudo",
        help="Over SSH, reach the engine through sudo -n [default: when the docker socket "
        "is denied].",
    ),
]


def connect_options(
    ssh_config: Path | None, accept_new_host_key: bool, sudo: bool = False
) -> Connect:
    return Connect(
        ssh_config=ssh_config, accept_new_host_key=accept_new_host_key, sudo=True if sudo else None
    )


def ship_options(
    *,
    ssh_config: Path | None = None,
    accept_new_host_key: bool = False,
    sudo: bool = False,
    platforms: list[str] | None = None,
    **values: Any,
) -> ShipOptions:
    """The ship options a command's flags add up to."""
    from shipit.platforms import parse_platforms

    return ShipOptions(
        connect=connect_options(ssh_config, accept_new_host_key, sudo),
        platforms=parse_platforms(platforms or []),
        **values,
    )


def codec_option(name: str | None, level: int | None, default: str | None) -> Codec | None:
    if name is None and level is not None and default is None:
        raise typer.BadParameter("--level needs --compression", param_hint="--level")
    chosen = name or default
    return Codec.parse(chosen, level) if chosen else None


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@contextmanager
def progress_bar(label: str, total: int | None, quiet: bool) -> Iterator[Events | None]:
    """A live bar on stderr when it is a terminal: bytes read against the real total,
    layers done, bytes sent, and what is happening now (waiting for the source, a target
    registering what it got). Plain lines when stderr is not a terminal (a CI log), and
    nothing with ``-q``."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        with plain_progress(label, total) as events:
            yield events
        return
    # Here, not at the top: a ship asks for its save sooner without rich loaded first.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tally = _Tally()
    task = bar.add_task(label, total=total, detail="")

    def on_event(event: Event) -> None:
        tally.take(event)
        if event.kind == "stage":
            bar.update(task, description=event.text)
        # The save carries tar headers and documents beside the layers' size: the total
        # is never less than what was read.
        known = max(events.total, tally.read) if events.total else None
        bar.update(task, completed=tally.read, total=known, detail=tally.per_target())

    events = Events(on_event, total)
    with bar:
        yield events


@dataclass
class _Tally:
    """What the events told so far: the bytes read from the source and, for each target,
    the layers done and the bytes sent."""

    read: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)

    def take(self, event: Event) -> None:
        if event.kind == "read":
            self.read += event.n
        elif event.kind == "sent":
            self.sent[event.target] = self.sent.get(event.target, 0) + event.n
        elif event.kind == "blob":
            self.layers[event.target] = self.layers.get(event.target, 0) + 1

    def per_target(self) -> str:
        """ "2 layers done, 1.2 MB sent"; with several targets, that for each by name."""
        names = list(dict.fromkeys([*self.layers, *self.sent])) or [""]

        def one(name: str) -> str:
            done, sent = self.layers.get(name, 0), self.sent.get(name, 0)
            return f"{_count(done, 'layer')} done, {human(sent)} sent"

        if len(names) == 1:
            return one(names[0])
        return "; ".join(f"{name}: {one(name)}" for name in names)


@dataclass
class _Step:
    text: str
    since: float  # when it began
    said: float  # when a line last told of it


#: Seconds between the plain progress lines of one long step.
PLAIN_EVERY = 10.0


@contextmanager
def plain_progress(label: str, total: int | None) -> Iterator[Events]:
    """Progress as lines for a log, each with the seconds since the command began
    ("shipit: [3.2 s] shipping"): each step as it starts, then every PLAIN_EVERY seconds
    how far it has got."""
    import threading
    import time

    tally = _Tally()
    step = _Step(label, time.monotonic(), time.monotonic())
    stop = threading.Event()

    began = time.monotonic() - (command_seconds() or 0.0)

    def say(text: str) -> None:
        typer.echo(f"shipit: [{time.monotonic() - began:.1f} s] {text}", err=True)

    def how_far() -> str:
        known = max(events.total or 0, tally.read)
        read = human(tally.read) + (f" of {human(known)}" if known else "")
        return f"{read} read, {tally.per_target()}"

    def on_event(event: Event) -> None:
        tally.take(event)
        if event.kind == "stage" and event.text != step.text:
            step.text, step.since = event.text, time.monotonic()
            step.said = step.since
            say(event.text)

    def ticker() -> None:
        while not stop.wait(1.0):
            with events.lock:
                now = time.monotonic()
                if now - step.said < PLAIN_EVERY:
                    continue
                step.said = now
                took = f"{now - step.since:.0f} s"
                busy = tally.read or any(tally.sent.values())
                say(f"{step.text}: {how_far()} ({took})" if busy else f"{step.text} ({took})")

    events = Events(on_event, total)
    thread = threading.Thread(target=ticker, name="shipit-progress", daemon=True)
    thread.start()
    try:
        yield events
    finally:
        stop.set()
        thread.join()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def command_seconds() -> float | None:
    """How long this process has run: the command's own wall time, interpreter start and
    imports included (what a user timing it sees); None where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def print_report(
    report: Report, as_json: bool, verb: str, quiet: bool = False, verbose: bool = False
) -> None:
    """The JSON summary (``--json``, even with ``-q``), else one line unless ``quiet``."""
    wall = command_seconds()
    if wall is not None:
        report.seconds = max(report.seconds, wall)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    if quiet:
        return
    data: dict[str, Any] = report.to_dict()
    target = report.target if report.target and report.target.kind != "archive" else None
    where = f" into {target.name} ({target.store} store, Engine {target.version})" if target else ""
    if target and target.kind == "podman":
        where = f" into {target.name} (Podman {target.version}, {target.store})"
    if report.output:
        where = f" to {report.output}"
    speed = report.bytes_read / report.seconds / 1e6 if report.seconds else 0
    if report.already_there:
        typer.echo(
            f"{', '.join(data['images'])} already{where.replace(' into ', ' in ', 1)}: "
            f"nothing saved or sent, in {report.seconds:.1f} s",
            err=True,
        )
    else:
        typer.echo(
            f"{verb} {', '.join(data['images'])}{where}: {_count(data['layers'], 'layer')}"
            f"{f' ({report.layers_skipped} already there)' if report.layers_skipped else ''}, "
            f"{human(report.bytes_read)} read, {human(report.bytes_sent)} written "
            f"({report.ratio:.2f}x, {_compression(report)}) in {report.seconds:.1f} s "
            f"({speed:.0f} MB/s)",
            err=True,
        )
    for note in report.notes:
        typer.echo(f"shipit: note: {note}", err=True)
    if verbose:
        for decision in report.decisions:
            typer.echo(f"shipit: {decision}", err=True)


def _compression(report: Report) -> str:
    if report.wire_compression:
        return f"{report.compression} layers in a {report.wire_compression} upload"
    return report.compression
