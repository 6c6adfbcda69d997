"""``docker shipit ...``: shipit as a Docker CLI plugin, and ``shipit install-plugin``.

The docker CLI finds ``docker-shipit`` in ``$DOCKER_CONFIG/cli-plugins`` (else
``~/.docker/cli-plugins``) and runs it twice over:

- ``docker-shipit docker-cli-plugin-metadata``: print the plugin's metadata as JSON;
- ``docker-shipit [DOCKER OPTIONS] shipit ARGS...``: the command itself. The docker CLI
  passes its own command line on as it was typed, global options first (``--context X``,
  ``-H URL``, ``--config DIR``, ...), then the plugin's name; it resolves neither the
  context nor the host for the plugin. The environment comes as it is (``DOCKER_HOST``,
  ``DOCKER_CONTEXT``, ``DOCKER_CONFIG``) plus ``DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND``
  (the docker binary) and, from Docker 24 on, ``DOCKER_CLI_PLUGIN_SOCKET``: a socket the
  CLI closes to ask the plugin to stop when it was signalled without a terminal.

The docker options become the environment shipit reads when no engine is named, so
``docker --context X shipit app --to web1`` ships from context X, exactly as ``docker
--context X`` would talk to X, and ``docker -H URL shipit load f`` loads into URL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from shipit import __version__
from shipit.cli import app, exit_after, fail, run
from shipit.errors import ShipitError, Unsupported, UsageError

PLUGIN_NAME = "shipit"
METADATA_COMMAND = "docker-cli-plugin-metadata"
ORIGINAL_CLI = "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND"
SOCKET_ENV = "DOCKER_CLI_PLUGIN_SOCKET"
METADATA = {
    "SchemaVersion": "0.1.0",
    "Vendor": "shipit",
    "Version": __version__,
    "ShortDescription": "Move images between Docker engines without a registry",
}

# The docker CLI's global options (cli/flags/options.go): the ones that take a value.
_VALUE_OPTIONS = {
    "--config": "config",
    "-c": "context",
    "--context": "context",
    "-H": "host",
    "--host": "host",
    "-l": "log-level",
    "--log-level": "log-level",
    "--tlscacert": "tls",
    "--tlscert": "tls",
    "--tlskey": "tls",
}
_FLAG_OPTIONS = {"-D": "debug", "--debug": "debug", "--tls": "tls", "--tlsverify": "tls"}


def _split_option(arg: str) -> tuple[str, str | None]:
    """``--context=X`` → (--context, X); ``-cX`` → (-c, X); ``--tls`` → (--tls, None)."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        return name, value if eq else None
    if len(arg) > 2:
        value = arg[2:]
        return arg[:2], value[1:] if value.startswith("=") else value
    return arg, None


def docker_args(argv: list[str], env: MutableMapping[str, str]) -> list[str]:
    """shipit's arguments from a plugin command line; docker's own options go into ``env``
    (``--context`` → DOCKER_CONTEXT, ``-H`` → DOCKER_HOST, ``--config`` → DOCKER_CONFIG)."""
    from_docker = ORIGINAL_CLI in env
    context = host = None
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        name, value = _split_option(argv[i])
        if name in _FLAG_OPTIONS:
            if _FLAG_OPTIONS[name] == "tls" and (value or "true").lower() not in ("0", "false"):
                raise Unsupported(f"docker {name}: shipit does not speak TLS to engines yet")
            i += 1
            continue
        if name not in _VALUE_OPTIONS:
            raise UsageError(f"docker option {name} is not one shipit knows")
        if value is None:
            if i + 1 >= len(argv):
                raise UsageError(f"docker option {name} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        kind = _VALUE_OPTIONS[name]
        if kind == "tls":
            raise Unsupported(f"docker {name}: shipit does not speak TLS to engines yet")
        if kind == "config":
            env["DOCKER_CONFIG"] = value
        elif kind == "context":
            context = value
        elif kind == "host":
            if host is not None:
                raise UsageError("docker -H: name one host only")
            host = value
    if context is not None and host is not None:
        raise UsageError("docker: either specify --host or --context, not both")
    rest = argv[i:]
    if rest[:1] == [PLUGIN_NAME]:
        rest = rest[1:]
    elif i or from_docker:
        raise UsageError(
            f"expected the plugin name {PLUGIN_NAME!r} after docker's options, "
            f"got {rest[0] if rest else 'nothing'!r}"
        )
    # else: run by hand as docker-shipit, like shipit itself.
    if host is not None:
        env["DOCKER_HOST"] = host
        env.pop("DOCKER_CONTEXT", None)  # -H wins over $DOCKER_CONTEXT in the docker CLI
    if context is not None:
        env["DOCKER_CONTEXT"] = context
    return rest


def watch_cli_socket(env: MutableMapping[str, str], stop: Callable[[], None]) -> bool:
    """Connect to the docker CLI's plugin socket and call ``stop`` when the CLI closes it
    (its way to pass on a SIGINT/SIGTERM when there is no terminal). False: no socket."""
    address = env.get(SOCKET_ENV)
    if not address:
        return False
    path = "\0" + address[1:] if address.startswith("@") else address
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return False

    def wait() -> None:
        with conn:
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
        stop()

    threading.Thread(target=wait, name="docker-cli-socket", daemon=True).start()
    return True


def main() -> None:
    """Entry point of ``docker-shipit``."""
    argv = sys.argv[1:]
    if argv[:1] == [METADATA_COMMAND]:
        typer.echo(json.dumps(METADATA))
        return
    if argv[:1] in (["__complete"], ["__completeNoDesc"]):  # docker-shipit __complete shipit ...
        _cobra_complete(argv[2:] if argv[1:2] == [PLUGIN_NAME] else argv[1:])
        return
    try:
        args = docker_args(argv, os.environ)
    except ShipitError as exc:
        fail(str(exc), exc.exit_code)
    watch_cli_socket(os.environ, lambda: os.kill(os.getpid(), signal.SIGTERM))
    run(args, prog_name="docker shipit")


def console() -> NoReturn:
    """The ``docker-shipit`` program."""
    exit_after(main)


def _cobra_complete(words: list[str]) -> None:
    """Answer the docker CLI's (cobra's) completion request: candidates, then a directive."""
    from shipit.cli.complete import engines

    incomplete = words[-1] if words else ""
    previous = words[-2] if len(words) >= 2 else ""
    if previous in ("--to", "--from"):
        for name, kind in engines(incomplete):
            typer.echo(f"{name}\t{kind}")
    typer.echo(":4")  # ShellCompDirectiveNoFileComp


# shipit install-plugin -----------------------------------------------------------------


def plugin_dir(env: MutableMapping[str, str] | None = None) -> Path:
    from shipit.daemon.address import docker_config_dir

    return docker_config_dir(os.environ if env is None else env) / "cli-plugins"


def entry_point() -> Path:
    """The installed ``docker-shipit`` script (next to this Python, else on $PATH)."""
    import shutil

    beside = Path(sys.executable).parent / "docker-shipit"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("docker-shipit")
    if found:
        return Path(found).absolute()
    raise UsageError("no docker-shipit entry point found: install shipit with pip (pip install .)")


def install(uninstall: bool = False) -> str:
    """Link (or unlink) the plugin; returns what was done, for the user."""
    link = plugin_dir() / "docker-shipit"
    if uninstall:
        if not link.is_symlink():
            if link.exists():
                raise UsageError(f"{link} is not a link shipit made; remove it yourself")
            return f"not installed: no {link}"
        link.unlink()
        return f"removed {link}"
    target = entry_point()
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return f"already installed: {link} -> {target}"
        link.unlink()  # a link to another (older) shipit
    elif link.exists():
        raise UsageError(f"{link} exists and is not a link; remove it first")
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    except OSError as exc:
        raise UsageError(f"cannot link {link}: {exc.strerror or exc}") from None
    return f"installed {link} -> {target}; run: docker shipit IMAGE --to TARGET"


@app.command("install-plugin")
def install_plugin(
    uninstall: Annotated[bool, typer.Option("--uninstall", help="Remove the link.")] = False,
) -> None:
    """Make `docker shipit` work: link docker-shipit into $DOCKER_CONFIG/cli-plugins
    (else ~/.docker/cli-plugins)."""
    typer.echo(install(uninstall))
