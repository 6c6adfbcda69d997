"""An engine over SSH: every HTTP connection of the Docker SDK's client is one
``docker system dial-stdio`` channel of a single paramiko transport (see shipit.ssh).

Its own module so that a local engine loads neither paramiko nor shipit.ssh: a ship from a
local socket asks for its save before either is imported.
"""

from __future__ import annotations

import docker
import requests.adapters
import urllib3
import urllib3.connection
from docker.constants import MINIMUM_DOCKER_API_VERSION

from shipit import ssh
from shipit.daemon.endpoint import REQUEST_TIMEOUT

SSH_POOL_SIZE = 4
"""dial-stdio channels kept open per engine; sshd allows 10 sessions per connection."""


class _DialStdioConnection(urllib3.connection.HTTPConnection):
    def __init__(self, session: ssh.SSHSession, channel_timeout: float) -> None:
        super().__init__("localhost")
        self.session = session
        self.channel_timeout = channel_timeout

    def connect(self) -> None:
        # Opening a channel is "connecting": bounded by the endpoint's connect timeout, not
        # by the request's, which for streams is deliberately long.
        self.sock = self.session.open_dial_stdio(timeout=self.channel_timeout)
        self.sock.settimeout(self.timeout)

    @property
    def is_connected(self) -> bool:
        # urllib3 would poll the socket's fileno(), which makes paramiko create a pipe per
        # channel; the channel knows itself whether the far end is gone.
        return isinstance(self.sock, ssh.DialStdio) and self.sock.is_open


class _DialStdioPool(urllib3.HTTPConnectionPool):
    def __init__(self, session: ssh.SSHSession, timeout: float) -> None:
        super().__init__("localhost", maxsize=SSH_POOL_SIZE, block=False)
        self.session = session
        self.connect_timeout = timeout

    def _new_conn(self) -> _DialStdioConnection:
        return _DialStdioConnection(self.session, self.connect_timeout)


class DialStdioAdapter(requests.adapters.HTTPAdapter):
    """requests adapter whose connections are dial-stdio channels of one SSH session."""

    def __init__(self, session: ssh.SSHSession, timeout: float) -> None:
        super().__init__(max_retries=0)
        self.pool = _DialStdioPool(session, timeout)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.pool

    def get_connection(self, url, proxies=None):
        return self.pool

    def request_url(self, request, proxies):
        return request.path_url  # no proxies between us and a channel

    def close(self) -> None:
        self.pool.close()
        super().close()


def ssh_api(session: ssh.SSHSession, timeout: float) -> docker.APIClient:
    api = docker.APIClient(
        base_url="tcp://ssh.invalid:1", version=MINIMUM_DOCKER_API_VERSION, timeout=REQUEST_TIMEOUT
    )
    # The same URL prefix docker-py uses for its own ssh:// clients, so SDK helpers that
    # look for the channel under a response (attach, logs) find ours.
    api.mount("http+docker://ssh", DialStdioAdapter(session, timeout))
    api._unmount("http://", "https://")
    api.base_url = "http+docker://ssh"
    return api
