"""Group commit: many appenders waiting for durability share one fdatasync.

An appender that needs its bytes on disk calls ``await_durable(end)`` after
writing.  If no sync is running it becomes the leader: it runs one sync,
which covers everything written so far by anyone, and wakes every waiter it
covered.  Appenders that arrive while a sync runs wait for it; those it did
not cover elect the next leader among themselves.

Gathering: an fdatasync blocks writes to the pages it is flushing, so
without help the appenders split into two alternating halves, each sync
covering about half of them.  A leader therefore first waits, for at most
``max_gather_s``, until no appender is still writing (``pending()`` tells
how many have started an append and not yet finished writing it), so that
they all join this sync.  A lone appender never waits: nobody else writes.

The sync itself runs without any lock held, so appends continue while the
disk works.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["GroupCommit"]


class GroupCommit:
    """Coordinates waiters on one monotonically growing durable position."""

    def __init__(
        self,
        sync: Callable[[], int],
        durable: int = 0,
        *,
        pending: Callable[[], int] | None = None,
        max_gather_s: float = 0.0005,
    ) -> None:
        """``sync()`` makes everything written so far durable and returns the
        end position (offset) it covered.  ``pending()`` counts the appenders
        that have started an append and not yet finished writing it."""
        self._sync = sync
        self._pending = pending
        self._max_gather_s = max_gather_s
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._joined = threading.Condition(lock)
        self._durable = durable
        self._syncing = False
        self._waiting = 0

    @property
    def durable(self) -> int:
        """Everything before this position is known to be durable."""
        return self._durable

    def mark_durable(self, position: int) -> None:
        """Record a sync made elsewhere (a roll, a close) and wake covered waiters."""
        with self._cond:
            if position > self._durable:
                self._durable = position
                self._cond.notify_all()

    def await_durable(self, position: int) -> None:
        """Return once everything before ``position`` is durable."""
        if self._durable >= position:
            return
        with self._cond:
            self._waiting += 1
            self._joined.notify()
            try:
                while self._durable < position:
                    if self._syncing:
                        self._cond.wait()
                        continue
                    self._syncing = True
                    self._gather_locked()
                    self._cond.release()
                    try:
                        covered = self._sync()
                    finally:
                        self._cond.acquire()
                        self._syncing = False
                        self._cond.notify_all()
                    if covered > self._durable:
                        self._durable = covered
            finally:
                self._waiting -= 1

    def _gather_locked(self) -> None:
        """Let appenders that are mid-write join this sync (bounded wait)."""
        if self._pending is None:
            return
        deadline = time.monotonic() + self._max_gather_s
        while self._pending() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._joined.wait(remaining)
