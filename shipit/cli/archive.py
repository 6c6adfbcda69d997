"""Archive commands: save, convert, inspect, verify, load."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shipit import api
from shipit.cli import app
from shipit.cli.complete import complete_engine
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
from shipit.cli.targets import SOURCE_HELP, TARGET_HELP

OutputOption = Annotated[
    str, typer.Option("--output", "-o", metavar="FILE", help="Archive to write ('-' for stdout).")
]


@app.command()
def save(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", help="Images to save.")],
    output: OutputOption,
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="SOURCE", help=SOURCE_HELP, autocompletion=complete_engine),
    ] = None,
    compression: CompressionOption = None,
    level: LevelOption = None,
    platform: PlatformOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    sudo: SudoOption = False,
) -> None:
    """Save images (every tag, shared layers once) to a compressed archive that
    `docker load` accepts directly (zstd by default: Engine 23+ or the containerd store;
    use --compression gzip for older engines)."""
    codec = codec_option(compression, level, "zstd")
    assert codec is not None
    with progress_bar("saving", None, quiet or output == "-") as progress:
        report = api.save(
            images,
            output,
            codec,
            source=source,
            options=ship_options(
                ssh_config=ssh_config,
                accept_new_host_key=accept_new_host_key,
                sudo=sudo,
                platforms=platform,
            ),
            progress=progress,
        )
    print_report(report, as_json, "saved", quiet)


@app.command()
def convert(
    source: Annotated[str, typer.Argument(metavar="IN", help="Archive to read ('-' for stdin).")],
    output: OutputOption,
    compression: CompressionOption = None,
    level: LevelOption = None,
    platform: PlatformOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Rewrite any docker-save archive (any layout, plain or gzip/zstd-wrapped) as an
    OCI archive with manifest.json and recompressed layers (zstd by default)."""
    codec = codec_option(compression, level, "zstd")
    assert codec is not None
    with progress_bar("converting", api.input_size(source), quiet or output == "-") as progress:
        options = ship_options(platforms=platform)
        report = api.convert(source, output, codec, options=options, progress=progress)
    print_report(report, as_json, "converted", quiet)


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(metavar="FILE", help="Archive to read ('-' for stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Show an archive's tree: names → manifest → config and layers, with sizes,
    compression, and what deduplication saved. Every blob digest is checked on the way."""
    tree = api.inspect(path).to_dict()
    if as_json:
        typer.echo(json.dumps(tree, indent=2))
        return
    for image in tree["images"]:
        typer.echo(", ".join(image["names"]) or "(untagged)")
        for manifest in image["manifests"]:
            what = "attestation" if manifest["attestation"] else "manifest"
            platform = f"  {manifest['platform']}" if manifest["platform"] else ""
            if not manifest["present"]:
                typer.echo(f"  {what} {manifest['digest']}{platform}  (not in the archive)")
                continue
            if manifest["digest"]:
                typer.echo(f"  {what} {manifest['digest']}{platform}")
            config = manifest["config"]
            typer.echo(f"    config {config['digest']}  {human(config['size'])}")
            for layer in manifest["layers"]:
                size = human(layer["size"]) if layer["size"] is not None else "not in archive"
                kind = layer["compression"] or "-"
                noun = "statement" if manifest["attestation"] else "layer"
                typer.echo(f"    {noun:<6} {layer['digest'][:19]}  {size:>10}  {kind}")
    typer.echo(
        f"{tree['blobs']} blobs, {human(tree['archive_bytes'])} archive; layers referenced "
        f"{human(tree['layer_bytes_referenced'])}, stored {human(tree['layer_bytes_stored'])} "
        f"(deduplication saved {human(tree['dedup_saved_bytes'])})"
    )


@app.command()
def verify(
    path: Annotated[str, typer.Argument(metavar="FILE", help="Archive to check ('-' for stdin).")],
    quiet: QuietOption = False,
) -> None:
    """Check every blob's digest and size and every layer's diff_id; exit 0 only if all hold."""
    with progress_bar("verifying", api.input_size(path), quiet) as progress:
        inspection = api.verify(path, progress=progress)
    tree = inspection.to_dict()
    names = ", ".join(n for image in tree["images"] for n in image["names"])
    if quiet:
        return
    typer.echo(f"ok: {names}: {tree['blobs']} blobs, every digest, size and diff_id holds")


@app.command()
def load(
    path: Annotated[str, typer.Argument(metavar="FILE", help="Archive to load ('-' for stdin).")],
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="TARGET", help=TARGET_HELP, autocompletion=complete_engine),
    ] = None,
    compression: CompressionOption = None,
    level: LevelOption = None,
    platform: PlatformOption = None,
    trust_layers: TrustLayersOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    sudo: SudoOption = False,
) -> None:
    """Load any archive into an engine, shaped for it: layers it cannot read are
    recompressed (zstd → gzip for Engine < 23) and manifest.json is written for the
    classic store. The loaded images are checked against the archive."""
    codec = codec_option(compression, level, None)
    with progress_bar("loading", api.input_size(path), quiet) as progress:
        report = api.load(
            path,
            target=to,
            options=ship_options(
                ssh_config=ssh_config,
                accept_new_host_key=accept_new_host_key,
                sudo=sudo,
                platforms=platform,
                codec=codec,
                trust_layers=trust_layers,
            ),
            progress=progress,
        )
    print_report(report, as_json, "loaded", quiet, verbose)
