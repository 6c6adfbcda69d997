"""``shipit IMAGE... --to TARGET [--to TARGET...]``: the headline command."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shipit import api
from shipit.cli import app
from shipit.cli.complete import complete_engine
from shipit.cli.compose import ComposeOption, ProjectNameOption, images_to_ship, naming_services
from shipit.cli.render import (
    AcceptNewHostKeyOption,
    CompressionOption,
    JsonOption,
    LevelOption,
    PlatformOption,
    QuietOption,
    SshConfigOption,
    SudoOption,
    TrustLayersOption,
    VerboseOption,
    codec_option,
    human,
    print_report,
    progress_bar,
    ship_options,
)
from shipit.cli.targets import SOURCE_HELP
from shipit.compression import Codec
from shipit.errors import ShipitError


@app.command()
def ship(
    to: Annotated[
        list[str],
        typer.Option(
            "--to",
            metavar="TARGET",
            help="Engine to load into; repeat for several (the source is read once).",
            autocompletion=complete_engine,
        ),
    ],
    images: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE",
            help="Images to ship (with --compose: services, default all).",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="SOURCE", help=SOURCE_HELP, autocompletion=complete_engine),
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
            help="Load layer by layer while the rest streams [default: on links under 20 MB/s].",
            show_default=False,
        ),
    ] = None,
    wire: Annotated[
        str | None,
        typer.Option(
            "--wire",
            metavar="zstd|gzip|none",
            help="Compress the whole upload, the layers in it plain [default: for one "
            "classic store].",
            show_default=False,
        ),
    ] = None,
    platform: PlatformOption = None,
    trust_layers: TrustLayersOption = False,
    no_space_check: Annotated[
        bool,
        typer.Option("--no-space-check", help="Ship even if the target's disk looks full."),
    ] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Do not check what landed against the source."),
    ] = False,
    compose: ComposeOption = None,
    project_name: ProjectNameOption = None,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    sudo: SudoOption = False,
) -> None:
    """Ship images from one engine straight into others, shaped for each target and
    sending only the layers it lacks. Also runs without the word: shipit IMAGE... --to T.

    TARGET and SOURCE: unix://PATH, tcp://HOST:PORT, ssh://[USER@]HOST[:PORT], a docker
    context, or a host from the ssh config; a TARGET may be ctr://HOST (a containerd
    node). How compression, staging and the delta are chosen: docs/shipping.md."""
    codec = codec_option(compression, level, None)
    wire_codec = Codec.parse(wire) if wire else None
    images, project = images_to_ship(images, compose, project_name)
    with progress_bar("shipping", None, quiet) as progress, naming_services(project):
        options = ship_options(
            ssh_config=ssh_config,
            accept_new_host_key=accept_new_host_key,
            sudo=sudo,
            platforms=platform,
            codec=codec,
            verify=not no_verify,
            full=full,
            staged=staged,
            wire=wire_codec,
            trust_layers=trust_layers,
            space_check=not no_space_check,
        )
        outcomes = api.ship_many(images, to, source=source, options=options, progress=progress)
    failures = [o.error for o in outcomes if o.error is not None]
    if len(outcomes) == 1:
        if failures:
            raise failures[0]
        assert outcomes[0].report is not None
        print_report(outcomes[0].report, as_json, "shipped", quiet, verbose)
        return
    if as_json:
        typer.echo(json.dumps({"targets": [o.to_dict() for o in outcomes]}, indent=2))
    else:
        _table(outcomes, quiet)
    if failures:
        codes = {f.exit_code for f in failures}
        raise typer.Exit(codes.pop() if len(codes) == 1 else 1)


def _table(outcomes: list[api.TargetResult], quiet: bool = False) -> None:
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
    for row in rows if not quiet else ():
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for o in outcomes:
        if isinstance(o.error, ShipitError):
            typer.echo(f"shipit: error: {o.target}: {o.error}", err=True)
