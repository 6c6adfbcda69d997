"""Commands on a remote host over SSH, for targets driven by a CLI there (``ctr``,
``podman``): run one and read its output, or stream an archive into its stdin.

The SSH side is shipit.ssh: the user's ssh config and known_hosts decide how to get there,
unknown host keys are refused unless the user opts in, and nothing ever prompts.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import paramiko

from shipit import ssh
from shipit.closable import Closable
from shipit.errors import ConnectionFailed, ShipitError
from shipit.options import CONNECT_TIMEOUT, Connect

#: Output kept from a command (its stdout and stderr each): enough for any listing
#: shipit reads, bounded so a chatty command cannot fill memory.
MAX_OUTPUT = 64 << 20


@dataclass(frozen=True)
class Completed:
    """How a remote command ended."""

    command: str
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def why(self) -> str:
        """One line: the command's last words on stderr, or its exit status."""
        err = self.stderr.decode(errors="replace").strip().splitlines()
        return err[-1].strip() if err else f"`{self.command}` exited {self.status}"


class RemoteHost(Closable):
    """An authenticated SSH session to one host; each command is one exec channel."""

    def __init__(self, name: str, session: ssh.SSHSession) -> None:
        self.name = name
        self.session = session

    @classmethod
    def open(
        cls,
        host: str,
        connect: Connect,
        *,
        user: str | None = None,
        port: int | None = None,
        name: str | None = None,
        timeout: float = CONNECT_TIMEOUT,
    ) -> RemoteHost:
        resolved = ssh.resolve_host(
            host, user=user, port=port, config=ssh.load_config(connect.ssh_config)
        )
        session = ssh.connect(
            resolved, accept_new_host_key=connect.accept_new_host_key, timeout=timeout
        )
        return cls(name or host, session)

    def run(
        self, argv: Sequence[str], *, stdin: Iterable[bytes] = (), timeout: float | None = 600
    ) -> Completed:
        """Run ``argv`` (quoted for the remote shell), feeding it ``stdin`` chunk by chunk
        while its output is read, and wait for it to exit."""
        command = " ".join(shlex.quote(a) for a in argv)
        return self.run_shell(command, stdin=stdin, timeout=timeout)

    def run_shell(
        self, command: str, *, stdin: Iterable[bytes] = (), timeout: float | None = 600
    ) -> Completed:
        """Like ``run``, for a command line already written for the remote shell."""
        try:
            channel = self.session.transport.open_session(timeout=CONNECT_TIMEOUT)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"running a command on {self.name}: {exc}") from exc
        out, err = bytearray(), bytearray()
        readers = [
            threading.Thread(target=_drain, args=(channel.recv, out), daemon=True),
            threading.Thread(target=_drain, args=(channel.recv_stderr, err), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            for chunk in stdin:
                if channel.exit_status_ready():
                    break  # it stopped reading: its status and stderr say why
                channel.sendall(chunk)
            channel.shutdown_write()
            deadline = None if timeout is None else time.monotonic() + timeout
            while not channel.exit_status_ready():
                if deadline is not None and time.monotonic() > deadline:
                    raise ConnectionFailed(f"`{command}` on {self.name} timed out")
                channel.status_event.wait(0.2)
            for reader in readers:
                reader.join(10)
            return Completed(command, channel.recv_exit_status(), bytes(out), bytes(err))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"`{command}` on {self.name}: the connection broke") from exc
        finally:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
                channel.close()

    def stream(
        self,
        argv: Sequence[str],
        *,
        failed: Callable[[Completed], ShipitError] | None = None,
        chunk_size: int = 1 << 20,
    ) -> RemoteStream:
        """Run ``argv`` and read its stdout as it comes (an archive it writes); see
        RemoteStream."""
        command = " ".join(shlex.quote(a) for a in argv)
        try:
            channel = self.session.transport.open_session(timeout=CONNECT_TIMEOUT)
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"running a command on {self.name}: {exc}") from exc
        return RemoteStream(self.name, command, channel, failed, chunk_size)

    def measure_link(self) -> float:
        return self.session.measure_link()

    def close(self) -> None:
        self.session.close()


class RemoteStream(Iterator[bytes]):
    """A remote command's stdout, chunk by chunk. If the command exits non-zero, the
    iteration ends by raising ``failed(completed)`` (default: a ShipitError with its
    last words). ``close`` may be called from any thread, also while another one waits
    for a chunk: it closes the channel, which ends the command's output."""

    def __init__(
        self,
        name: str,
        command: str,
        channel: paramiko.Channel,
        failed: Callable[[Completed], ShipitError] | None,
        chunk_size: int,
    ) -> None:
        self.name, self.command = name, command
        self._channel = channel
        self._failed = failed
        self._chunk_size = chunk_size
        self._err = bytearray()
        self._closed = False
        self._reader = threading.Thread(
            target=_drain, args=(channel.recv_stderr, self._err), daemon=True
        )
        self._reader.start()

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            chunk = self._channel.recv(self._chunk_size)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if self._closed:
                raise StopIteration from None
            self.close()
            raise ConnectionFailed(
                f"`{self.command}` on {self.name}: the connection broke"
            ) from exc
        if chunk:
            return chunk
        if self._closed:
            raise StopIteration
        status = self._channel.recv_exit_status()
        self._reader.join(10)
        self.close()
        if status != 0:
            done = Completed(self.command, status, b"", bytes(self._err))
            if self._failed is not None:
                raise self._failed(done)
            raise ShipitError(f"`{self.command}` on {self.name}: {done.why()}")
        raise StopIteration

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self._channel.close()


def _drain(recv: object, into: bytearray) -> None:
    while True:
        try:
            chunk = recv(1 << 16)  # type: ignore[operator]
        except (OSError, EOFError, paramiko.SSHException):
            return
        if not chunk:
            return
        if len(into) < MAX_OUTPUT:
            into += chunk
