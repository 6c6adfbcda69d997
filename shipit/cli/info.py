"""``shipit info [TARGET]``: what a Docker engine is and what image archives it can load."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shipit.cli import app
from shipit.cli.complete import complete_engine
from shipit.cli.render import AcceptNewHostKeyOption, SshConfigOption
from shipit.cli.targets import TARGET_FORMS

TARGET_HELP = (
    "The engine to ask [default: $DOCKER_HOST or the current docker context]: " + TARGET_FORMS
)


@app.command()
def info(
    target: Annotated[
        str | None,
        typer.Argument(metavar="TARGET", help=TARGET_HELP, autocompletion=complete_engine),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ssh_config: SshConfigOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
) -> None:
    """Show an engine's version, image store, whether it loads zstd layers and needs
    manifest.json, and (over SSH) how fast the link to it is (2 MB, measured)."""
    from shipit.api import link_mb_s
    from shipit.daemon import probe, resolve_endpoint

    with resolve_endpoint(
        target, ssh_config=ssh_config, accept_new_host_key=accept_new_host_key
    ) as endpoint:
        engine = probe(endpoint)
        link = endpoint.link_speed()
    if as_json:
        facts = engine.to_dict()
        if link is not None:
            facts["link_mb_s"] = link_mb_s(link)
        typer.echo(json.dumps(facts, indent=2))
        return
    zstd = "yes" if engine.loads_zstd else "no (needs Engine 23.0+ or the containerd store)"
    rows = [
        ("engine", engine.name),
        ("version", f"{engine.engine_version} (API {engine.api_version})"),
        ("platform", f"{engine.os}/{engine.arch}, kernel {engine.kernel}"),
        ("image store", f"{engine.image_store} ({engine.storage_driver})"),
        ("zstd layers", zstd),
        ("manifest.json", "needed" if engine.needs_manifest_json else "not needed"),
    ]
    if link is not None:
        rows.append(("link", "this machine" if link == float("inf") else f"{link / 1e6:.0f} MB/s"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
