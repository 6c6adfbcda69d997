"""Command line: thin Typer commands over the library.

Each command parses its options, calls one library function and renders the result.
Errors from the library are ShipitError subclasses; ``main`` turns them into one line
on stderr and the error's exit code. A traceback in front of a user is a bug.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer
import typer.core

from shipit import __version__
from shipit.errors import ConnectionFailed, Interrupted, ShipitError


class _Commands(typer.core.TyperGroup):
    """The command group, with one more guard: Click turns an EOFError into a bare
    "Aborted!" and exit 1. shipit never prompts (input() is where EOFError usually comes
    from), so one that got this far is a connection that closed under a library
    (paramiko raises it on a dead socket)."""

    def invoke(self, ctx: Any) -> Any:  # Click's Context (vendored by newer Typer)
        try:
            return super().invoke(ctx)
        except EOFError as exc:
            raise ConnectionFailed("a connection closed unexpectedly") from exc


app = typer.Typer(
    name="shipit",
    cls=_Commands,
    help=(
        "Move Docker images between Docker engines without a registry.\n\n"
        "shipit IMAGE... --to TARGET ships images straight from one engine to another "
        "(local socket, Docker context or SSH host), recompressed and shaped for the target."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Move Docker images between Docker engines without a registry."""


def fail(message: str, code: int) -> NoReturn:
    """Print one error line and exit."""
    typer.echo(f"shipit: error: {message}", err=True)
    raise SystemExit(code)


def _on_signal(signum: int, frame: object) -> None:
    # Turn SIGINT/SIGTERM into a ShipitError so `finally` blocks remove temp files and close
    # sessions, and so Click's own KeyboardInterrupt handling ("Aborted!", exit 1) never runs.
    raise Interrupted.from_signal(signum)


def _register_commands() -> None:
    # Imported for their side effect: each module adds its command(s) to `app`.
    from shipit.cli import archive, info, plugin, ship  # noqa: F401


COMMANDS = {"info", "ship", "save", "load", "convert", "inspect", "verify", "install-plugin"}
ROOT_OPTIONS = {"--help", "-h", "--version", "--install-completion", "--show-completion"}


def _default_to_ship(args: list[str]) -> list[str]:
    """`shipit IMAGE... --to T` means `shipit ship IMAGE... --to T`."""
    if args and args[0] not in COMMANDS and args[0] not in ROOT_OPTIONS:
        return ["ship", *args]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the command line (``sys.argv`` unless given); ends in SystemExit."""
    run(list(sys.argv[1:] if argv is None else argv))


def console() -> NoReturn:
    """The ``shipit`` program."""
    exit_after(main)


def exit_after(entry: Callable[[], None]) -> NoReturn:
    """A program's end: run ``entry``, then leave the process at once.

    Python's own teardown of what a run loaded takes ~45 ms after the command is done,
    and a ship's time is its user's wait. Nothing of shipit's is left for it: temp files
    are unlinked when made, connections are closed by the commands, and no exit hooks
    are registered. So the output is flushed and the process ends with the status."""
    try:
        entry()
        status: object = 0
    except SystemExit as done:
        status = done.code
    if status is not None and not isinstance(status, int):
        sys.stderr.write(f"{status}\n")  # sys.exit("message"), as Python would print it
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(status or 0)


def run(args: list[str], prog_name: str = "shipit") -> None:
    """Run the command line ``args`` (``prog_name`` names the program in usage lines)."""
    from shipit.cli.complete import implicit_ship
    from shipit.cli.compose import bare_compose

    _register_commands()
    # What is loaded by now lives until exit: the collector need not walk it again, in
    # a run nor at exit (40 ms of every command's end).
    gc.freeze()
    args = _default_to_ship(bare_compose(args))
    if os.environ.get("_SHIPIT_COMPLETE"):  # a shell asks for completions
        implicit_ship(os.environ, COMMANDS, ROOT_OPTIONS)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        app(args=args, prog_name=prog_name, standalone_mode=True)
    except ShipitError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        # Reader of our stdout went away (e.g. `| head`); not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
