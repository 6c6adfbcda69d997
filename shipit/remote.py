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
from shipit.errors import ConnectionFailed, ShipitError
from shipit.options import Connect

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


class RemoteHost:
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
        timeout: float = ssh.DEFAULT_TIMEOUT,
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
            channel = self.session.transport.open_session(timeout=ssh.DEFAULT_TIMEOUT)
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
    ) -> Iterator[bytes]:
        """Run ``argv`` and yield its stdout as it comes (an archive it writes). If it exits
        non-zero, raise ``failed(completed)`` (default: a ShipitError with its last words)
        after the last chunk. Closing the generator early closes the channel."""
        command = " ".join(shlex.quote(a) for a in argv)
        try:
            channel = self.session.transport.open_session(timeout=ssh.DEFAULT_TIMEOUT)
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"running a command on {self.name}: {exc}") from exc
        err = bytearray()
        reader = threading.Thread(target=_drain, args=(channel.recv_stderr, err), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    chunk = channel.recv(chunk_size)
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise ConnectionFailed(
                        f"`{command}` on {self.name}: the connection broke"
                    ) from exc
                if not chunk:
                    break
                yield chunk
            status = channel.recv_exit_status()
            reader.join(10)
            if status != 0:
                done = Completed(command, status, b"", bytes(err))
                if failed is not None:
                    raise failed(done)
                raise ShipitError(f"`{command}` on {self.name}: {done.why()}")
        finally:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
                channel.close()

    def measure_link(self) -> float:
        return self.session.measure_link()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
