"""Clocks.  Everything time-dependent takes a ``clock`` callable so tests can
drive retention, deadlines and delays without sleeping."""

from __future__ import annotations

import time
from typing import Callable

Clock = Callable[[], int]
"""A callable returning the current time in milliseconds since the Unix epoch."""


def wall_clock_ms() -> int:
    """The real wall clock, in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to; for tests and simulations."""

    __slots__ = ("now_ms",)

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        """Move the clock forward by ``ms`` and return the new time."""
        if ms < 0:
            raise ValueError("a clock never goes backwards")
        self.now_ms += ms
        return self.now_ms
