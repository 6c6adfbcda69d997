"""One error tree. Every failure a user can meet is a ShipitError subclass.

Other libraries' exceptions are wrapped at the boundary (``raise X(...) from exc``);
the CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
Messages are lowercase context chained with ': ', e.g.
``loading into rig-d20: layer sha256:ab12…: no space left on device``.
"""

from __future__ import annotations


class ShipitError(Exception):
    """Base of every error shipit raises on purpose."""

    exit_code = 1

    def context(self, prefix: str) -> ShipitError:
        """Return a copy of this error with ``prefix: `` in front of its message."""
        new = type(self).__new__(type(self))
        Exception.__init__(new, f"{prefix}: {self}")
        new.__dict__.update(self.__dict__)
        new.__cause__ = self.__cause__ or self
        return new


class UsageError(ShipitError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class PlatformMissing(UsageError):
    """The image has no manifest for the platform wanted (the target's, or --platform)."""


class BadInput(ShipitError):
    """An archive or manifest is malformed, unsafe or does not match its digests."""

    exit_code = 2


class DigestMismatch(BadInput):
    """Bytes read do not hash to (or have the size of) the digest that names them."""


class UnsafeArchive(BadInput):
    """An archive entry would write outside its place or is a kind we refuse."""


class TooLarge(BadInput):
    """A blob or document exceeds a configured limit (e.g. a decompression bomb)."""


class ConnectionFailed(ShipitError):
    """The engine or SSH host cannot be reached, or the link broke."""

    exit_code = 3


class HostKeyError(ConnectionFailed):
    """The SSH host key is unknown or has changed."""

    exit_code = 4


class AuthenticationFailed(ConnectionFailed):
    """SSH authentication failed."""

    exit_code = 4


class PermissionDenied(ConnectionFailed):
    """The remote user may not use the engine (not in the docker group, no sudo -n)."""

    exit_code = 4


class EngineError(ShipitError):
    """The Docker engine refused or failed a request."""

    exit_code = 5


class NoSpace(EngineError):
    """The target's disk cannot hold what would be sent."""


class TempSpaceShort(ShipitError):
    """The temp folder cannot hold a layer that must be spooled (its tar header needs the
    size of what shipit writes)."""


class ImageNotFound(EngineError):
    """A named image does not exist on the source engine."""


class Unsupported(ShipitError):
    """The target cannot read what was asked for (e.g. zstd on Engine 20.10)."""

    exit_code = 6


class VerificationFailed(ShipitError):
    """An image landed but does not match the source (config or diff_ids differ)."""

    exit_code = 7


class Interrupted(ShipitError):
    """SIGINT or SIGTERM: work was stopped and cleaned up (exit 128 + signal number)."""

    exit_code = 130

    @classmethod
    def from_signal(cls, signum: int) -> Interrupted:
        import signal

        err = cls("interrupted" if signum == signal.SIGINT else "terminated")
        err.exit_code = 128 + signum
        return err
