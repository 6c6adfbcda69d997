"""``shipit info [TARGET]``: what a Docker engine is and what image archives it can load."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shipit.cli import app
from shipit.cli.complete import complete_engine
from shipit.cli.render import AcceptNewHostKeyOption, SshConfigOption, SudoOption
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
    measure_link: Annotated[
        bool,
        typer.Option(
            "--measure-link",
            help="Also measure the link to the target (over SSH: about 0.1 s, up to 2 MB).",
        ),
    ] = False,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    sudo: SudoOption = False,
) -> None:
    """Show an engine's version, image store, whether it loads zstd layers and needs
    manifest.json; with --measure-link, how fast the link to it is."""
    from shipit.api import Connect, link_mb_s, open_target

    connect = Connect(
        ssh_config=ssh_config,
        accept_new_host_key=accept_new_host_key,
        sudo=True if sudo else None,
    )
    with open_target(target, connect) as found:
        facts = found.about()
        rows = found.summary()
        link = found.measure_link() if measure_link else None
    if as_json:
        if link is not None:
            facts["link_mb_s"] = link_mb_s(link)
        typer.echo(json.dumps(facts, indent=2))
        return
    if link is not None:
        rows.append(("link", "this machine" if link == float("inf") else f"{link / 1e6:.0f} MB/s"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
