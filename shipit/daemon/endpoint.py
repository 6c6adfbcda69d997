"""A connected Docker engine: a docker-py APIClient, over a local socket, TCP or SSH.

Over SSH every HTTP connection of the client is one ``docker system dial-stdio`` channel of
a single paramiko transport (shipit.daemon.channels), so the remote needs only sshd and the
docker CLI, and the user's ssh config and known_hosts decide how to get there (see
shipit.ssh). Both load only for an SSH destination.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.transport import UnixHTTPAdapter
from docker.utils import version_lt

from shipit.closable import Closable
from shipit.daemon.address import Address, parse_address
from shipit.errors import (
    ConnectionFailed,
    EngineError,
    ImageNotFound,
    PermissionDenied,
    ShipitError,
    Unsupported,
)
from shipit.options import CONNECT_TIMEOUT

if TYPE_CHECKING:
    from shipit.ssh import SSHSession

REQUEST_TIMEOUT = 60.0
"""Read timeout of ordinary API calls (info, inspect); streams use STREAM_TIMEOUT."""

STREAM_TIMEOUT = (600.0, None)
"""Save/load: no read timeout (an engine may think for minutes before answering a load), but
give up if the engine stops taking our upload for 10 minutes. urllib3 applies the first
number to sending the body, so it cannot be the short connect timeout."""


class Endpoint(Closable):
    """A Docker engine shipit talks to. Close it (or use ``with``) to drop channels and SSH."""

    def __init__(
        self,
        name: str,
        api: docker.APIClient,
        session: SSHSession | None = None,
    ) -> None:
        self.name = name
        self.api = api
        self.session = session
        self.version: dict[str, Any] = {}
        """The engine's ``GET /version`` answer, from API version negotiation."""
        self.sudo = False
        """Reached through ``sudo -n`` on the remote (the user may not open the socket)."""

    def link_speed(self) -> float | None:
        """Bytes per second to the engine: measured over SSH, infinite for a unix socket
        (the engine is on this machine), None when unknown (TCP)."""
        if self.session is not None:
            import paramiko

            try:
                return self.session.measure_link()
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self.failure("measuring the link to", exc) from exc
        if isinstance(self.api.get_adapter(self.api.base_url), UnixHTTPAdapter):
            return float("inf")
        return None

    def failure(self, doing: str, exc: BaseException) -> ShipitError:
        """Turn any exception from talking to this engine into one ShipitError.

        ``doing`` is lowercase context, e.g. ``loading into`` → "loading into rig-d20: …".
        """
        prefix = f"{doing} {self.name}"
        if isinstance(exc, ShipitError):
            return exc.context(prefix)
        if isinstance(exc, docker.errors.NotFound):
            err: ShipitError = ImageNotFound(f"{prefix}: {exc.explanation or exc}")
        elif isinstance(exc, docker.errors.APIError):
            err = EngineError(f"{prefix}: {exc.explanation or exc}")
        else:
            remote = self.session.remote_errors() if self.session else ""
            err = ConnectionFailed(f"{prefix}: {remote or _reason(exc)}")
        err.__cause__ = exc
        return err

    def close(self) -> None:
        self.api.close()
        if self.session:
            self.session.close()

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r})"


def _reason(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3/socket error chain."""
    if isinstance(exc, requests.Timeout | TimeoutError):
        return "timed out"
    seen: BaseException | None = exc
    deepest = exc
    while seen is not None:
        deepest = seen
        inner = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(seen, "reason", None)
        seen = (
            inner[0] if inner else reason if isinstance(reason, BaseException) else seen.__cause__
        )
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror.lower()
    text = str(deepest) or type(deepest).__name__
    return text.split(": ", 1)[-1] if "Connection pool" in text else text


def _negotiate(endpoint: Endpoint, timeout: float) -> None:
    """Ask ``/version`` unversioned, then pin the lower of the engine's and the SDK's API.

    The SDK defaults to API 1.45; Engine 20.10 answers only up to 1.41, so a fixed version
    would be refused there. Pinning (not "auto") also keeps every later call one round trip.
    """
    api = endpoint.api
    try:
        response = api.get(api._url("/version", versioned_api=False), timeout=timeout)
        api._raise_for_status(response)
        endpoint.version = response.json()
        server = str(endpoint.version["ApiVersion"])
    except (KeyError, ValueError, TypeError, docker.errors.APIError) as exc:
        raise ConnectionFailed(
            f"connecting to {endpoint.name}: no Docker engine answers there ({exc})"
        ) from exc
    except Exception as exc:
        raise endpoint.failure("connecting to", exc) from exc
    if version_lt(server, MINIMUM_DOCKER_API_VERSION):
        raise Unsupported(
            f"{endpoint.name}: engine API {server} is older than {MINIMUM_DOCKER_API_VERSION}"
        )
    lower = server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else DEFAULT_DOCKER_API_VERSION
    api._version = lower


def resolve_endpoint(
    target: str | None,
    *,
    ssh_config: str | os.PathLike[str] | None = None,
    accept_new_host_key: bool = False,
    timeout: float = CONNECT_TIMEOUT,
    sudo: bool | None = None,
    session: SSHSession | None = None,
) -> Endpoint:
    """Connect to the engine ``target`` names (see shipit.daemon.address) and negotiate its API.

    ``timeout`` bounds connecting (TCP, SSH handshake, authentication, the first API call);
    it is not a limit on later transfers. Over SSH, ``sudo`` True runs the remote end as
    ``sudo -n docker``; None tries that once when the user may not open the socket.
    ``session``: an SSH session to the host ``target`` names, already open (it is then
    the endpoint's to close).
    """
    where = parse_address(target)
    endpoint = _connect(where, ssh_config, accept_new_host_key, timeout, session)
    try:
        if sudo and endpoint.session is not None:
            _through_sudo(endpoint, timeout)
        try:
            _negotiate(endpoint, timeout)
        except ConnectionFailed as exc:
            if sudo is not None or endpoint.session is None or not _socket_denied(str(exc)):
                raise
            _through_sudo(endpoint, timeout)
            _negotiate(endpoint, timeout)
    except ConnectionFailed as exc:
        endpoint.close()
        if endpoint.sudo and ("password is required" in str(exc) or "terminal" in str(exc)):
            user = endpoint.session.host.user if endpoint.session else "the user"
            raise PermissionDenied(
                f"connecting to {endpoint.name}: {user} may not open the docker socket and "
                f"sudo -n needs a password there; add {user} to the docker group, or allow "
                f"it `sudo -n docker` without a password"
            ) from exc
        raise
    except BaseException:
        endpoint.close()
        raise
    return endpoint


def _socket_denied(message: str) -> bool:
    """dial-stdio could not open the engine's socket: "permission denied while trying to
    connect to the Docker daemon socket" (older CLIs), "dial unix …: connect: permission
    denied" (newer ones)."""
    low = message.lower()
    return "permission denied" in low and ("socket" in low or "dial unix" in low)


def _through_sudo(endpoint: Endpoint, timeout: float) -> None:
    """From now on, every channel runs ``sudo -n docker system dial-stdio`` (a new client:
    the old one's pooled channels ran the plain command)."""
    from shipit.daemon.channels import ssh_api
    from shipit.ssh import SUDO_DIAL_STDIO

    assert endpoint.session is not None
    endpoint.session.dial_command = SUDO_DIAL_STDIO
    endpoint.api.close()
    endpoint.api = ssh_api(endpoint.session, timeout)
    endpoint.sudo = True


def _connect(
    where: Address,
    ssh_config: str | os.PathLike[str] | None,
    accept_new_host_key: bool,
    timeout: float,
    session: SSHSession | None = None,
) -> Endpoint:
    if where.url is not None:
        try:
            api = docker.APIClient(
                base_url=where.url, version=MINIMUM_DOCKER_API_VERSION, timeout=REQUEST_TIMEOUT
            )
        except docker.errors.DockerException as exc:
            raise ConnectionFailed(f"{where.name}: {exc}") from exc
        return Endpoint(where.name, api)
    import paramiko

    from shipit import ssh
    from shipit.daemon.channels import ssh_api

    assert where.ssh_host is not None
    if session is None:
        host = ssh.resolve_host(
            where.ssh_host,
            user=where.ssh_user,
            port=where.ssh_port,
            config=ssh.load_config(ssh_config),
        )
        session = ssh.connect(host, accept_new_host_key=accept_new_host_key, timeout=timeout)
    try:
        return Endpoint(where.name, ssh_api(session, timeout), session)
    except (docker.errors.DockerException, paramiko.SSHException) as exc:
        session.close()
        raise ConnectionFailed(f"{where.name}: {exc}") from exc
