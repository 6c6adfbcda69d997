"""Shell completion beyond Typer's own: engine names for --to/--from (Docker contexts and
host aliases of the ssh config), and the command line a completion request describes."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import typer

_PATTERN_CHARS = "*?!"


def ssh_config_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    env = os.environ if env is None else env
    chosen = explicit or env.get("SHIPIT_SSH_CONFIG") or "~/.ssh/config"
    return Path(os.path.expanduser(str(chosen)))


def _config_lines(path: Path, depth: int = 0) -> Iterator[tuple[str, list[str]]]:
    """(keyword, arguments) of each line, following Include (relative: to ~/.ssh)."""
    if depth > 16:
        return
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, _, rest = line.replace("=", " ", 1).partition(" ")
        words = rest.split()
        if keyword.lower() == "include":
            for pattern in words:
                expanded = os.path.expanduser(pattern)
                if not os.path.isabs(expanded):
                    expanded = os.path.join(os.path.expanduser("~/.ssh"), expanded)
                for found in sorted(glob.glob(expanded)):
                    yield from _config_lines(Path(found), depth + 1)
        else:
            yield keyword.lower(), words


def ssh_hosts(
    config: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Host aliases of the ssh config ($SHIPIT_SSH_CONFIG, else ~/.ssh/config), without
    wildcard patterns and negations."""
    hosts: dict[str, None] = {}
    for keyword, words in _config_lines(ssh_config_path(config, env)):
        if keyword == "host":
            for word in words:
                if not any(c in word for c in _PATTERN_CHARS):
                    hosts[word] = None
    return list(hosts)


def docker_contexts(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of the Docker contexts in $DOCKER_CONFIG (else ~/.docker), "default" first."""
    # shipit.daemon.address.docker_config_dir's rule, without loading the Docker SDK.
    env = os.environ if env is None else env
    config = Path(os.path.expanduser(env.get("DOCKER_CONFIG") or "~/.docker"))
    names = ["default"]
    for meta in sorted((config / "contexts" / "meta").glob("*/meta.json")):
        try:
            name = json.loads(meta.read_text()).get("Name")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def engines(incomplete: str, ssh_config: Any = None) -> list[tuple[str, str]]:
    """What --to/--from can name, starting with ``incomplete``: contexts, then ssh hosts."""
    found = [(name, "docker context") for name in docker_contexts()]
    found += [(host, "ssh host") for host in ssh_hosts(ssh_config)]
    seen: set[str] = set()
    out = []
    for name, kind in found:
        if name.startswith(incomplete) and name not in seen:
            seen.add(name)
            out.append((name, kind))
    return out


def complete_engine(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Typer completion for an option or argument that names an engine."""
    return engines(incomplete, ctx.params.get("ssh_config"))


def implicit_ship(
    env: MutableMapping[str, str], commands: set[str], root_options: set[str]
) -> None:
    """``shipit IMAGE --to <TAB>`` means ``shipit ship IMAGE --to <TAB>``: put the word
    into the completion request that Typer's shell scripts pass in the environment."""
    if "COMP_WORDS" in env and "COMP_CWORD" in env:  # bash
        words = env["COMP_WORDS"].split()
        if int(env["COMP_CWORD"]) >= 2 and _needs_ship(words[1:2], commands, root_options):
            prog, _, rest = env["COMP_WORDS"].partition(" ")
            env["COMP_WORDS"] = f"{prog} ship {rest}"
            env["COMP_CWORD"] = str(int(env["COMP_CWORD"]) + 1)
    elif "_TYPER_COMPLETE_ARGS" in env:  # zsh, fish, powershell
        line = env["_TYPER_COMPLETE_ARGS"]
        words = line.split()
        complete_first = len(words) > 2 or (len(words) == 2 and line.endswith(" "))
        if complete_first and _needs_ship(words[1:2], commands, root_options):
            prog, _, rest = line.partition(" ")
            env["_TYPER_COMPLETE_ARGS"] = f"{prog} ship {rest}"


def _needs_ship(first: list[str], commands: set[str], root_options: set[str]) -> bool:
    return bool(first) and first[0] not in commands and first[0] not in root_options
