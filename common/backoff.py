"""Capped exponential backoff for reconnecting to something that went away (libvirtd, Elasticsearch)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """``initial`` doubling up to ``cap`` seconds; ``ready`` says whether the next attempt is due; ``reset`` after a
    success."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.initial, self.cap, self.clock = initial, cap, clock
        self.delay = 0.0
        self.next_attempt = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.next_attempt

    def failed(self) -> None:
        self.delay = min(self.cap, self.delay * 2 if self.delay else self.initial)
        self.next_attempt = self.clock() + self.delay

    def reset(self) -> None:
        self.delay = 0.0
        self.next_attempt = 0.0
