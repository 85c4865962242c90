"""Group commit: many appenders waiting for durability share one fdatasync.

An appender that needs its bytes on disk calls ``await_durable(end)`` after
writing.  If no sync is running it becomes the leader: it runs one sync,
which covers everything written so far by anyone, and wakes every waiter it
covered.  Appenders that arrive while a sync runs wait for it; those it did
not cover elect the next leader among themselves.  With N concurrent
appenders an fdatasync therefore covers up to N appends.

The sync itself runs without any lock held, so appends continue while the
disk works.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["GroupCommit"]


class GroupCommit:
    """Coordinates waiters on one monotonically growing durable position."""

    def __init__(self, sync: Callable[[], int], durable: int = 0) -> None:
        """``sync()`` makes everything written so far durable and returns the
        end position (offset) it covered."""
        self._sync = sync
        self._cond = threading.Condition(threading.Lock())
        self._durable = durable
        self._syncing = False

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
            while self._durable < position:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                self._cond.release()
                try:
                    covered = self._sync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                if covered > self._durable:
                    self._durable = covered
