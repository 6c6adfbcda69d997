"""Where an engine is: turn what the user typed into a Docker URL or an SSH destination.

Forms, in the order a bare name is tried (the same precedence as the docker CLI for contexts):
``None`` → $DOCKER_CONTEXT, else $DOCKER_HOST, else config.json's currentContext, else the
local socket; ``unix://``, ``tcp://``, ``http://`` URLs; ``ssh://[user@]host[:port]``; a Docker
context name; anything else is an SSH destination ``[user@]host`` looked up in the ssh config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shipit.addresses import parse_user_host_port
from shipit.errors import Unsupported, UsageError

DEFAULT_HOST = "unix:///var/run/docker.sock"
DOCKER_URL_SCHEMES = ("unix://", "tcp://", "http://")


@dataclass(frozen=True)
class Address:
    """An engine address before any connection: either ``url`` or an SSH host is set."""

    name: str
    """What to call it in messages: the context, the ssh alias, or the URL."""
    url: str | None = None
    ssh_host: str | None = None
    ssh_user: str | None = None
    ssh_port: int | None = None

    @property
    def is_ssh(self) -> bool:
        return self.ssh_host is not None


def docker_config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(os.path.expanduser(env.get("DOCKER_CONFIG") or "~/.docker"))


def current_context(env: Mapping[str, str] | None = None) -> str | None:
    """The context the docker CLI would use, or None for "default" (DOCKER_HOST / local)."""
    env = os.environ if env is None else env
    if env.get("DOCKER_CONTEXT"):
        name: str | None = env["DOCKER_CONTEXT"]
    elif env.get("DOCKER_HOST"):
        name = None
    else:
        try:
            config = json.loads((docker_config_dir(env) / "config.json").read_text())
        except FileNotFoundError:
            config = {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"docker config {docker_config_dir(env)}/config.json: {exc}") from exc
        name = config.get("currentContext") if isinstance(config, dict) else None
    return None if name in (None, "", "default") else name


def context_host(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The docker endpoint URL of context ``name``; None if no such context exists."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    contexts = docker_config_dir(env) / "contexts"
    meta = contexts / "meta" / digest / "meta.json"
    try:
        endpoint = json.loads(meta.read_text())["Endpoints"]["docker"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"docker context {name!r} ({meta}): unreadable: {exc}") from exc
    if (contexts / "tls" / digest / "docker").exists() or endpoint.get("SkipTLSVerify"):
        raise Unsupported(f"docker context {name!r} uses TLS, which shipit does not speak yet")
    host = endpoint.get("Host")
    if not isinstance(host, str) or not host:
        raise UsageError(f"docker context {name!r} ({meta}): no docker Host")
    return host


def _from_url(url: str, name: str) -> Address:
    if url.startswith("ssh://"):
        rest = url[len("ssh://") :].rstrip("/")
        if not rest or "/" in rest:
            raise UsageError(f"{url}: expected ssh://[user@]host[:port]")
        user, host, port = parse_user_host_port(rest)
        return Address(name=name, ssh_host=host, ssh_user=user, ssh_port=port)
    if url.startswith(DOCKER_URL_SCHEMES):
        return Address(name=name, url=url)
    if url.startswith(("https://", "npipe://", "fd://")):
        raise Unsupported(f"{url}: shipit speaks unix://, tcp://, http:// and ssh:// only")
    raise UsageError(f"{url}: not a Docker host URL")


def parse_address(target: str | None, env: Mapping[str, str] | None = None) -> Address:
    """Decide what ``target`` names without connecting. ``env`` defaults to os.environ."""
    env = os.environ if env is None else env
    if not target or target == "default":
        context = current_context(env) if not target else None
        if context is None:
            host = env.get("DOCKER_HOST") or DEFAULT_HOST
            return _from_url(host, host)
        found = context_host(context, env)
        if found is None:
            raise UsageError(f"docker context {context!r} (the current context) does not exist")
        return _from_url(found, context)
    if "://" in target:
        return _from_url(target, target)
    found = context_host(target, env)
    if found is not None:
        return _from_url(found, target)
    user, name, port = parse_user_host_port(target)
    if port is not None:
        raise UsageError(f"{target}: write ssh://{target} to give an SSH port")
    return Address(name=target, ssh_host=name, ssh_user=user)
