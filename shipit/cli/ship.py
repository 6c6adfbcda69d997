"""``shipit IMAGE... --to TARGET``: the headline command."""

from __future__ import annotations

from typing import Annotated

import typer

from shipit import api
from shipit.cli import app
from shipit.cli.render import (
    AcceptNewHostKeyOption,
    CompressionOption,
    JsonOption,
    LevelOption,
    QuietOption,
    SshConfigOption,
    codec_option,
    connect_options,
    print_report,
    progress_bar,
)
from shipit.cli.targets import TARGET_FORMS, TARGET_HELP


@app.command()
def ship(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", help="Images to ship.")],
    to: Annotated[
        str, typer.Option("--to", metavar="TARGET", help="Engine to load into. " + TARGET_FORMS)
    ],
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="SOURCE", help="Engine to save from. " + TARGET_HELP),
    ] = None,
    compression: CompressionOption = None,
    level: LevelOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Skip checking the landed images' config and diff_ids."),
    ] = False,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
) -> None:
    """Stream images from one engine into another, recompressed for the target (zstd
    where it reads zstd, gzip where not, none into a local classic store). Also runs
    without the word: `shipit IMAGE... --to TARGET`."""
    codec = codec_option(compression, level, None)
    with progress_bar("shipping", None, quiet) as progress:
        report = api.ship(
            images,
            to,
            source=source,
            codec=codec,
            connect=connect_options(ssh_config, accept_new_host_key),
            progress=progress,
            verify=not no_verify,
        )
    print_report(report, as_json, "shipped")
