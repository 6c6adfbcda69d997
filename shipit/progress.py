"""Progress events. The library emits them; only the CLI turns them into bars.

Events come from the reading thread and the writing thread, so ``Progress`` serialises
calls to the callback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """``read``: n bytes of the source taken; ``blob``: a blob finished (n = its output
    size, ``record`` says what became of it); ``sent``: n bytes handed to the sink;
    ``stage``: ``text`` names the step now running. ``target`` names the sink a ``blob``
    or ``sent`` event is for (a fan-out feeds several at once)."""

    kind: str
    n: int = 0
    record: Any = None
    text: str = ""
    target: str = ""


class Progress:
    def __init__(self, callback: Callable[[Event], None], total: int | None = None) -> None:
        self._callback = callback
        self.lock = threading.Lock()  # held while the callback runs
        self.total = total

    def emit(self, event: Event) -> None:
        with self.lock:
            self._callback(event)

    def stage(self, text: str) -> None:
        self.emit(Event("stage", text=text))
