"""``shipit info [TARGET]``: what a Docker engine is and what image archives it can load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from shipit.cli import app
from shipit.cli.targets import CONTAINERD_FORMS

TARGET_HELP = (
    "The engine to ask. Omitted: $DOCKER_CONTEXT, else $DOCKER_HOST, else the current docker "
    "context, else unix:///var/run/docker.sock. A URL: unix://PATH, tcp://HOST:PORT, "
    "http://HOST:PORT, ssh://[USER@]HOST[:PORT]. A docker context name. Any other name is an "
    "SSH destination [USER@]HOST, looked up in the ssh config (HostName, Port, User, "
    "IdentityFile, ProxyJump, ...); the remote runs `docker system dial-stdio`. Or "
    + CONTAINERD_FORMS
)


@app.command()
def info(
    target: Annotated[str | None, typer.Argument(metavar="TARGET", help=TARGET_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ssh_config: Annotated[
        Path | None,
        typer.Option(
            "--ssh-config",
            metavar="PATH",
            help="OpenSSH config to read [default: $SHIPIT_SSH_CONFIG, else ~/.ssh/config].",
        ),
    ] = None,
    accept_new_host_key: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-key",
            help="Trust an SSH host key seen for the first time and record it in known_hosts. "
            "A changed key is refused regardless.",
        ),
    ] = False,
) -> None:
    """Show an engine's version, image store, whether it loads zstd layers and needs
    manifest.json, and (over SSH) how fast the link to it is (2 MB, measured); for a
    containerd node its version, socket, namespace, snapshotter and whether sudo is used."""
    from shipit.api import Connect, link_mb_s, open_target

    connect = Connect(ssh_config=ssh_config, accept_new_host_key=accept_new_host_key)
    with open_target(target, connect) as found:
        facts = found.about()
        rows = found.summary()
        link = found.measure_link()
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
