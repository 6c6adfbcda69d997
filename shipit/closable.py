"""One way to be a context manager for everything that holds a connection or a file."""

from __future__ import annotations

from typing import Self


class Closable:
    """``with x:`` closes ``x`` on every path; a subclass defines ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
