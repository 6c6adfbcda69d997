"""``shipit IMAGE... --to TARGET [--to TARGET...]``: the headline command."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shipit import api
from shipit.cli import app
from shipit.cli.render import (
    AcceptNewHostKeyOption,
    CompressionOption,
    JsonOption,
    LevelOption,
    PlatformOption,
    QuietOption,
    SshConfigOption,
    codec_option,
    human,
    print_report,
    progress_bar,
    ship_options,
)
from shipit.cli.targets import CONTAINERD_FORMS, TARGET_FORMS, TARGET_HELP
from shipit.compression import Codec
from shipit.errors import ShipitError


@app.command()
def ship(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", help="Images to ship.")],
    to: Annotated[
        list[str],
        typer.Option(
            "--to",
            metavar="TARGET",
            help="Engine to load into; repeat for several (the source is read once). "
            + TARGET_FORMS
            + " Or "
            + CONTAINERD_FORMS,
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="SOURCE", help="Engine to save from. " + TARGET_HELP),
    ] = None,
    compression: CompressionOption = None,
    level: LevelOption = None,
    full: Annotated[
        bool, typer.Option("--full", help="Send every layer, even those the target has.")
    ] = False,
    staged: Annotated[
        bool | None,
        typer.Option(
            "--staged/--no-staged",
            help="Load the layers bottom-up in several loads, so the target registers "
            "them while the rest is still on the wire [default: when the link measures "
            "slower than 20 MB/s].",
            show_default=False,
        ),
    ] = None,
    wire: Annotated[
        str | None,
        typer.Option(
            "--wire",
            metavar="zstd|gzip|none",
            help="Compress each whole upload (zstd needs Engine 23+) and send the layers "
            "inside it plain unless --compression says otherwise (a containerd store keeps "
            "them plain); none: compress layers only [default: for a lone classic-store "
            "target whose layers would be compressed, with the setting they would get].",
            show_default=False,
        ),
    ] = None,
    platform: PlatformOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Skip checking the landed images' config and diff_ids."),
    ] = False,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
) -> None:
    """Stream images from one engine into others, recompressed for each target, sending
    only the layers a target lacks. The compression follows the target and the link,
    measured over SSH: zstd where the engine reads it (gzip for Engine 20.10), zstd 6 /
    gzip 3 below 20 MB/s, none into a classic store on this machine or, for gzip-only
    engines, over links of 60 MB/s and more when it is the only target. A lone target with
    the classic store gets its layers plain inside one upload compressed that way (see
    --wire): the same bytes, but nothing waits for a compressed size. A layer the target
    already holds in the form an earlier run compressed it to is named from a memo
    ($SHIPIT_CACHE_DIR, else ~/.cache/shipit), not compressed again. Also runs without the
    word: `shipit IMAGE... --to TARGET`."""
    codec = codec_option(compression, level, None)
    wire_codec = Codec.parse(wire) if wire else None
    with progress_bar("shipping", None, quiet) as progress:
        options = ship_options(
            ssh_config=ssh_config,
            accept_new_host_key=accept_new_host_key,
            platforms=platform,
            codec=codec,
            verify=not no_verify,
            full=full,
            staged=staged,
            wire=wire_codec,
        )
        outcomes = api.ship_many(images, to, source=source, options=options, progress=progress)
    failures = [o.error for o in outcomes if o.error is not None]
    if len(outcomes) == 1:
        if failures:
            raise failures[0]
        assert outcomes[0].report is not None
        print_report(outcomes[0].report, as_json, "shipped")
        return
    if as_json:
        typer.echo(json.dumps({"targets": [o.to_dict() for o in outcomes]}, indent=2))
    else:
        _table(outcomes)
    if failures:
        codes = {f.exit_code for f in failures}
        raise typer.Exit(codes.pop() if len(codes) == 1 else 1)


def _table(outcomes: list[api.TargetResult]) -> None:
    rows = [("target", "result", "store", "layers sent/skipped", "bytes sent", "seconds")]
    for o in outcomes:
        engine = o.report.target if o.report is not None else None
        if o.report is not None and engine is not None:
            r = o.report
            rows.append(
                (
                    o.target,
                    "ok",
                    f"{engine.store} {engine.version}",
                    f"{r.layers_sent}/{r.layers_skipped}",
                    human(r.bytes_sent),
                    f"{r.seconds:.1f}",
                )
            )
        else:
            rows.append((o.target, "FAILED", "", "", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for o in outcomes:
        if isinstance(o.error, ShipitError):
            typer.echo(f"shipit: error: {o.target}: {o.error}", err=True)
