"""SSH to a Docker host the way the user's OpenSSH would, without ever prompting.

docker-py's own ``ssh://`` support reads only part of ``~/.ssh/config`` (it ignores Port,
UserKnownHostsFile, ProxyJump and IdentityAgent), so shipit owns the connection: paramiko,
driven by the OpenSSH config, with a host key policy that refuses unknown keys unless the
user says ``--accept-new-host-key`` and always refuses changed ones. Each HTTP connection to
the remote engine is one ``docker system dial-stdio`` exec channel on a single transport.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import logging
import os
import shlex
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import paramiko
from paramiko.agent import AgentSSH
from paramiko.auth_strategy import AuthStrategy

from shipit.addresses import parse_user_host_port
from shipit.closable import Closable
from shipit.errors import AuthenticationFailed, ConnectionFailed, HostKeyError, UsageError
from shipit.options import CONNECT_TIMEOUT

DEFAULT_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DIAL_STDIO = "docker system dial-stdio"
SUDO_DIAL_STDIO = (
    'sudo -n "$(command -v docker)" ${DOCKER_HOST:+-H "$DOCKER_HOST"} system dial-stdio'
)
"""The same through passwordless sudo, for a user outside the docker group: the docker on
the user's PATH, by its full path (sudo's secure_path may find another, which sudoers does
not allow); sudo drops the environment, so DOCKER_HOST is passed on as ``-H``."""
ACCEPT_NEW_FLAG = "--accept-new-host-key"
REKEY_BYTES = 1 << 32
"""paramiko re-keys every 512 MiB it sends or receives; a channel closed by the server during a
re-key that paramiko started stalls the transport 30 s and kills it (paramiko #822, seen here
on a 512 MiB dial-stdio read). Re-keying after 4 GiB (the top of the 1G-4G range OpenSSH
documents as its default RekeyLimit) makes that rare; server-started re-keys are safe."""
LINK_PROBE_REQUEST = "shipit-link-probe@shipit.invalid"
"""A global request no server knows: answered (with a refusal) only in order."""

# paramiko's transport thread logs failures (with tracebacks) that we also raise as one
# ShipitError; without a handler Python's last-resort handler would print them to stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


# --- config -----------------------------------------------------------------------------------


def config_path(path: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The ssh config to read and whether the user named it (option, then $SHIPIT_SSH_CONFIG)."""
    named = path or os.environ.get("SHIPIT_SSH_CONFIG")
    return Path(os.path.expanduser(named or DEFAULT_CONFIG)), bool(named)


def load_config(path: str | os.PathLike[str] | None = None) -> paramiko.SSHConfig:
    """Parse the OpenSSH config; a missing default file is an empty config, a named one an error."""
    file, named = config_path(path)
    if not file.exists():
        if named:
            raise UsageError(f"ssh config {file}: no such file")
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(file))
    except (OSError, paramiko.ConfigParseError, ValueError) as exc:
        raise UsageError(f"ssh config {file}: {exc}") from exc


@dataclass(frozen=True)
class SSHHost:
    """One SSH destination with every config option shipit honours already resolved."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    known_hosts_files: tuple[str, ...]
    """UserKnownHostsFile: trusted, and the first one records accepted keys."""
    strict_host_key_checking: str = "ask"
    hash_known_hosts: bool = False
    global_known_hosts_files: tuple[str, ...] = ()
    """GlobalKnownHostsFile: trusted, never written."""
    identity_agent: str | None = None
    connect_timeout: float | None = None
    proxy_command: str | None = None
    via: SSHHost | None = field(default=None, repr=False)
    """The last ProxyJump hop; the connection is a direct-tcpip channel through it."""

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this host: ``host`` on port 22, else ``[host]:port``."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        where = self.hostname if self.port == 22 else f"{self.hostname}:{self.port}"
        return f"{self.user}@{where}"


def _expand(value: str, *, hostname: str, port: int, user: str, alias: str) -> str:
    """Expand ``~`` and the OpenSSH %-tokens paramiko leaves alone (known hosts, agent)."""
    tokens = {
        "%%": "%",
        "%d": os.path.expanduser("~"),
        "%h": hostname,
        "%n": alias,
        "%p": str(port),
        "%r": user,
        "%u": getpass.getuser(),
    }
    out, i = [], 0
    while i < len(value):
        two = value[i : i + 2]
        if two in tokens:
            out.append(tokens[two])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return os.path.expandvars(os.path.expanduser("".join(out)))


def resolve_host(
    alias: str,
    *,
    user: str | None = None,
    port: int | None = None,
    config: paramiko.SSHConfig | None = None,
    _depth: int = 0,
) -> SSHHost:
    """Look ``alias`` up in the ssh config; an explicit user or port wins over the config."""
    if _depth > 8:
        raise UsageError(f"ssh config: ProxyJump chain through {alias} is too long or loops")
    config = config if config is not None else load_config()
    opts = config.lookup(alias)
    hostname = opts.get("hostname", alias)
    try:
        port = port or int(opts.get("port", 22))
        timeout = float(opts["connecttimeout"]) if "connecttimeout" in opts else None
    except ValueError as exc:
        raise UsageError(f"ssh config for {alias}: {exc}") from exc
    user = user or opts.get("user") or getpass.getuser()

    def expand(value: str) -> str:
        return _expand(value, hostname=hostname, port=port, user=user, alias=alias)

    known = shlex.split(opts.get("userknownhostsfile", "")) or list(DEFAULT_KNOWN_HOSTS)
    known_global = shlex.split(opts.get("globalknownhostsfile", "")) or list(
        DEFAULT_GLOBAL_KNOWN_HOSTS
    )
    identities = opts.get("identityfile") or list(DEFAULT_IDENTITIES)
    agent: str | None = opts.get("identityagent", "SSH_AUTH_SOCK")
    if agent == "SSH_AUTH_SOCK":
        agent = os.environ.get("SSH_AUTH_SOCK")
    elif agent is not None and agent.lower() == "none":
        agent = None
    proxy_command = opts.get("proxycommand")
    host = SSHHost(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(expand(p) for p in identities),
        identities_only=opts.get("identitiesonly", "no").lower() == "yes",
        known_hosts_files=tuple(expand(p) for p in known if p.lower() != "none"),
        global_known_hosts_files=tuple(expand(p) for p in known_global if p.lower() != "none"),
        strict_host_key_checking=opts.get("stricthostkeychecking", "ask").lower(),
        hash_known_hosts=opts.get("hashknownhosts", "no").lower() == "yes",
        identity_agent=expand(agent) if agent else None,
        connect_timeout=timeout,
        proxy_command=None if not proxy_command or proxy_command == "none" else proxy_command,
    )
    jumps = opts.get("proxyjump", "none")
    if jumps.lower() == "none":
        return host
    # Like `ssh -J a,b`: the first hop uses its own config in full (even its own ProxyJump);
    # later hops are reached through the previous one.
    via: SSHHost | None = None
    for n, hop in enumerate(jumps.split(",")):
        hop_user, hop_host, hop_port = parse_user_host_port(hop.strip())
        hop_resolved = resolve_host(
            hop_host, user=hop_user, port=hop_port, config=config, _depth=_depth + 1
        )
        via = hop_resolved if n == 0 else replace(hop_resolved, via=via, proxy_command=None)
    return replace(host, via=via, proxy_command=None)


# --- host keys --------------------------------------------------------------------------------


def fingerprint(key: paramiko.PKey | bytes) -> str:
    """A public key (or its wire blob) as OpenSSH prints it: ``SHA256:`` + unpadded base64."""
    blob = key if isinstance(key, bytes) else key.asbytes()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def record_host_key(
    path: str | os.PathLike[str], name: str, key: paramiko.PKey, *, hashed: bool = False
) -> None:
    """Append ``name keytype base64`` to a known_hosts file, creating it 0600 if absent."""
    file = Path(path)
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        if file.stat().st_size and not file.read_bytes().endswith(b"\n"):
            out.write("\n")
        written = paramiko.HostKeys.hash_host(name) if hashed else name
        out.write(f"{written} {key.get_name()} {key.get_base64()}\n")


def load_known_hosts(files: tuple[str, ...] | list[str], into: paramiko.HostKeys) -> None:
    """Read known_hosts files, skipping lines paramiko cannot parse as OpenSSH does.

    (paramiko's own ``HostKeys.load`` raises on one bad base64 line; markers such as
    ``@cert-authority`` are not understood and skipped.)
    """
    for path in files:
        with contextlib.suppress(FileNotFoundError), open(path) as lines:
            for line in lines:
                line = line.strip()
                if not line or line.startswith(("#", "@")):
                    continue
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                except Exception:  # InvalidHostKey is not an SSHException
                    continue
                if entry is not None:
                    for name in entry.hostnames:
                        into.add(name, entry.key.get_name(), entry.key)


def _known_in(files: tuple[str, ...], name: str) -> str | None:
    """The first known_hosts file that has any key for ``name``."""
    for path in files:
        keys = paramiko.HostKeys()
        with contextlib.suppress(OSError):
            load_known_hosts([path], keys)
            if keys.lookup(name) is not None:
                return path
    return None


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for keys no known_hosts file has: refuse, or trust and record.

    Changed keys never reach a MissingHostKeyPolicy (paramiko raises BadHostKeyException),
    so accepting new keys can never override a mismatch.
    """

    def __init__(self, host: SSHHost, accept_new: bool) -> None:
        self.host = host
        self.accept_new = accept_new or host.strict_host_key_checking in ("accept-new", "no")

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        files = self.host.known_hosts_files
        if not self.accept_new or not files:
            where = f" (or add it to {files[0]})" if files else ""
            raise HostKeyError(
                f"host key of {hostname} is not known: {key.get_name()} {fingerprint(key)}; "
                f"if that is the right key, re-run with {ACCEPT_NEW_FLAG}{where}"
            )
        try:
            record_host_key(files[0], hostname, key, hashed=self.host.hash_known_hosts)
        except OSError as exc:
            raise HostKeyError(f"recording host key of {hostname} in {files[0]}: {exc}") from exc


# --- authentication ---------------------------------------------------------------------------


class _Agent(AgentSSH):
    """The keys of the ssh-agent at ``path`` (paramiko's Agent only reads $SSH_AUTH_SOCK)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            self._connect(sock)  # type: ignore[attr-defined]
        except (OSError, paramiko.SSHException):
            sock.close()  # a stale agent socket: like OpenSSH, carry on without an agent

    def close(self) -> None:
        self._close()  # type: ignore[attr-defined]


def _public_fingerprint(path: str) -> str | None:
    """Fingerprint of ``path.pub``, so an encrypted key file can be matched to an agent key."""
    try:
        return fingerprint(base64.b64decode(Path(path + ".pub").read_text().split()[1]))
    except (OSError, ValueError, IndexError):
        return None


class KeyAuth:
    """Public keys only, in OpenSSH's order, never asking for a password or passphrase.

    Passed to SSHClient.connect as its ``auth_strategy``, which only calls ``authenticate``.
    """

    def __init__(self, host: SSHHost) -> None:
        self.host = host

    def _keys(self, agent: _Agent | None) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
        agent_keys = {fingerprint(k): k for k in (agent.get_keys() if agent else ())}
        keys: list[tuple[str, paramiko.PKey]] = []
        skipped: list[str] = []
        for path in self.host.identity_files:
            if not os.path.exists(path):
                continue
            in_agent = agent_keys.pop(_public_fingerprint(path) or "", None)
            if in_agent is not None:
                keys.append((f"{path} (from agent)", in_agent))
                continue
            try:
                keys.append((path, paramiko.PKey.from_path(path)))
            except (TypeError, paramiko.PasswordRequiredException):
                # cryptography says "password was not given but private key is encrypted"
                skipped.append(
                    f"key {path} is encrypted and no passphrase can be asked; add it to ssh-agent"
                )
            except (OSError, ValueError, paramiko.SSHException) as exc:
                skipped.append(f"key {path} cannot be read: {exc}")
        if not self.host.identities_only:
            keys += [(f"agent key {k.comment or fp}", k) for fp, k in agent_keys.items()]
        return keys, skipped

    def authenticate(self, transport: paramiko.Transport) -> list[Any]:
        agent = _Agent(self.host.identity_agent) if self.host.identity_agent else None
        try:
            keys, skipped = self._keys(agent)
            tried: list[str] = []
            for label, key in keys:
                try:
                    remaining = transport.auth_publickey(self.host.user, key)
                except paramiko.AuthenticationException:
                    tried.append(f"{label} ({key.get_name()} {fingerprint(key)})")
                    continue
                if not remaining:
                    return []
                tried.append(f"{label} (accepted, but the server also wants {remaining})")
        finally:
            if agent:
                agent.close()
        parts = [f"tried {', '.join(tried)}" if tried else "no usable key"]
        if not tried and not skipped:
            parts.append(f"looked for {', '.join(self.host.identity_files)} and an ssh-agent")
        raise AuthenticationFailed(
            f"ssh authentication failed for {self.host} ({self.host.alias}): "
            + "; ".join(parts + skipped)
        )


# --- sessions ---------------------------------------------------------------------------------


class DialStdio:
    """One ``docker system dial-stdio`` exec channel, shaped like the socket http.client wants.

    The remote command's stderr is kept so a dead channel can explain itself
    (``docker: command not found``, a DOCKER_HOST the remote cannot reach).
    """

    def __init__(self, channel: paramiko.Channel, command: str) -> None:
        self.channel = channel
        self.command = command
        self._stderr = bytearray()

    # paramiko raises EOFError when the transport's socket has gone; http.client and the
    # Docker SDK understand only OSError there, and click would swallow an EOFError into a
    # bare "Aborted!".
    def sendall(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except EOFError as exc:
            raise self._gone() from exc

    def send(self, data: bytes) -> int:
        try:
            return self.channel.send(data)
        except EOFError as exc:
            raise self._gone() from exc

    def _gone(self) -> ConnectionResetError:
        return ConnectionResetError(errno.ECONNRESET, "the ssh connection closed")

    def recv(self, size: int) -> bytes:
        return self.channel.recv(size)

    def makefile(self, mode: str = "rb", bufsize: int = -1) -> Any:
        return self.channel.makefile(mode, bufsize)

    def settimeout(self, timeout: float | None) -> None:
        self.channel.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.channel.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        """No TCP options on a channel."""

    @property
    def is_open(self) -> bool:
        return not (self.channel.closed or self.channel.eof_received)

    def stderr(self) -> str:
        while self.channel.recv_stderr_ready():
            chunk = self.channel.recv_stderr(65536)
            if not chunk:
                break
            self._stderr += chunk
        return self._stderr.decode(errors="replace").strip()

    def failure(self, wait: float = 1.0) -> str | None:
        """Why the remote command ended, if it ended badly; None while it runs or after exit 0."""
        if not (self.channel.closed or self.channel.eof_received):
            return None
        self.channel.status_event.wait(wait)
        status = self.channel.exit_status if self.channel.exit_status_ready() else None
        err = self.stderr()
        if status in (0, None) and not err:
            return None
        exited = f" exited {status}" if status not in (None, -1) else " ended"
        return f"`{self.command}`{exited}" + (f": {err}" if err else "")

    def close(self) -> None:
        self.stderr()
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self.channel.close()  # sends a close message: fails when the link is gone


class SSHSession(Closable):
    """An authenticated SSH transport to one host; opens as many exec channels as needed."""

    def __init__(self, host: SSHHost, client: paramiko.SSHClient, jump: SSHSession | None):
        self.host = host
        self.client = client
        self.jump = jump
        self.dial_command = DIAL_STDIO
        """What each channel to the engine runs (``SUDO_DIAL_STDIO`` through sudo)."""
        self._dials: deque[DialStdio] = deque(maxlen=32)

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed(f"ssh connection to {self.host.alias} is closed")
        return transport

    def open_dial_stdio(
        self, command: str | None = None, timeout: float | None = None
    ) -> DialStdio:
        """Run ``docker system dial-stdio`` remotely; its stdin/stdout is the engine's API."""
        command = command or self.dial_command
        try:
            channel = self.transport.open_session(timeout=timeout or CONNECT_TIMEOUT)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(
                f"opening a channel to {self.host.alias}: {exc or type(exc).__name__}"
            ) from exc
        dial = DialStdio(channel, command)
        self._dials.append(dial)
        return dial

    def has_command(self, name: str, timeout: float | None = None) -> bool:
        """Whether ``name`` runs on the host (``command -v``, one short exec channel)."""
        try:
            channel = self.transport.open_session(timeout=timeout or CONNECT_TIMEOUT)
            try:
                channel.settimeout(timeout or CONNECT_TIMEOUT)
                channel.exec_command(f"command -v {shlex.quote(name)} >/dev/null")
                if not channel.status_event.wait(timeout or CONNECT_TIMEOUT):
                    return False
                return channel.exit_status == 0
            finally:
                channel.close()
        except (paramiko.SSHException, OSError, EOFError):
            return False

    def measure_link(self, budget: int = 2 << 20, seconds: float = 0.1) -> float:
        """Bytes per second this connection carries to the host, measured end to end.

        Sends SSH_MSG_IGNORE packets (the server discards them unread) and times a global
        request behind them: sshd answers it only after reading everything before it, so
        the time minus one round trip is the time the bytes took. A first 32 KiB tells
        a slow link already (it took over 20 ms: at 1 Mbit/s that is 0.26 s and all it
        costs); on a faster one a second batch sized to take about ``seconds`` gives the
        figure, never more than ``budget`` bytes in all. Needs nothing on the remote.
        """
        transport = self.transport
        rtt = min(self._round_trip(transport) for _ in range(2))
        piece = 32 << 10  # below the 35000-byte packet every SSH server must accept
        sent, batch, rate = 0, piece, 0.0
        while sent < budget:
            pieces = max(1, min(batch, budget - sent) // piece)
            started = time.monotonic()
            for _ in range(pieces):
                transport.send_ignore(piece)
            transport.global_request(LINK_PROBE_REQUEST, wait=True)
            if not transport.is_active():
                raise ConnectionFailed(f"ssh connection to {self.host.alias} closed")
            took = max(time.monotonic() - started - rtt, 1e-4)
            sent += pieces * piece
            rate = pieces * piece / took
            if took >= 0.02:
                break  # long enough to trust (a slow link: the first 32 KiB tell)
            # Too quick to time well: the next batch should take about ``seconds``.
            batch = max(2 * pieces * piece, int(rate * seconds))
        return rate

    @staticmethod
    def _round_trip(transport: paramiko.Transport) -> float:
        started = time.monotonic()
        transport.global_request(LINK_PROBE_REQUEST, wait=True)
        return time.monotonic() - started

    def remote_errors(self) -> str:
        """What dead dial-stdio channels said on stderr, for error messages."""
        return "; ".join(dict.fromkeys(f for d in self._dials if (f := d.failure()))) or ""

    def close(self) -> None:
        for dial in self._dials:
            dial.close()
        self.client.close()
        if self.jump:
            self.jump.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused or host unreachable"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def connect(
    host: SSHHost, *, accept_new_host_key: bool = False, timeout: float = CONNECT_TIMEOUT
) -> SSHSession:
    """Open an authenticated SSH session, through ProxyJump hops or a ProxyCommand if set."""
    timeout = host.connect_timeout or timeout
    jump = (
        connect(host.via, accept_new_host_key=accept_new_host_key, timeout=timeout)
        if (host.via)
        else None
    )
    client = paramiko.SSHClient()
    try:
        sock: Any = None
        if jump:
            sock = jump.transport.open_channel(
                "direct-tcpip", (host.hostname, host.port), ("127.0.0.1", 0), timeout=timeout
            )
        elif host.proxy_command:
            sock = paramiko.ProxyCommand(host.proxy_command)
        load_known_hosts(
            host.known_hosts_files + host.global_known_hosts_files, client.get_host_keys()
        )
        client.set_missing_host_key_policy(HostKeyPolicy(host, accept_new_host_key))
        client.connect(
            host.hostname,
            host.port,
            host.user,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            auth_strategy=cast(AuthStrategy, KeyAuth(host)),
        )
        transport = client.get_transport()
        if transport is not None:
            if isinstance(transport.sock, socket.socket):
                # Small requests (a channel open, the link probe's) must not wait 40 ms
                # behind delayed ACKs of bulk data.
                transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport.set_keepalive(30)
            transport.packetizer.REKEY_BYTES = REKEY_BYTES
        return SSHSession(host, client, jump)
    except BaseException as exc:
        client.close()
        if jump:
            jump.close()
        if isinstance(exc, paramiko.BadHostKeyException):
            name = host.known_hosts_name
            files = host.known_hosts_files + host.global_known_hosts_files
            file = _known_in(files, name) or files[0]
            raise HostKeyError(
                f"HOST KEY OF {name} HAS CHANGED: known_hosts has {exc.expected_key.get_name()} "
                f"{fingerprint(exc.expected_key)}, the host presented {exc.key.get_name()} "
                f"{fingerprint(exc.key)}; someone may be intercepting the connection, so shipit "
                f"refuses (even with {ACCEPT_NEW_FLAG}); if the host was really re-keyed, "
                f"remove the old key with: ssh-keygen -R '{name}' -f {file}"
            ) from exc
        if isinstance(exc, HostKeyError | AuthenticationFailed | ConnectionFailed):
            raise
        if isinstance(exc, paramiko.AuthenticationException):
            raise AuthenticationFailed(
                f"ssh authentication failed for {host} ({host.alias}): {exc}"
            ) from exc
        if isinstance(exc, OSError | paramiko.SSHException | EOFError):
            raise ConnectionFailed(f"ssh to {host} ({host.alias}): {_reason(exc)}") from exc
        raise
