"""Group commit: many appenders waiting for durability share one fdatasync.

An appender that needs its bytes on disk calls ``await_durable(end)`` after
writing.  If no sync is running it becomes the leader: it runs one sync,
which covers everything written so far by anyone.  Appenders arriving while
a sync runs queue up; when the sync returns, the leader releases every
waiter it covered and, if some are left (they wrote after the sync began),
hands the lead to the oldest of them, which syncs again at once.  Under
load syncs therefore run back to back and each covers every append written
during the previous one.

Each waiter blocks on a lock of its own, which the leader releases: a woken
appender returns without contending for a shared condition.  On this
2-core VM a thread handoff costs about 30 us (a Python lock ping-pong
measures 65 us per round trip), which with fdatasync's ~150 us is what
bounds 1-record durable appends; ``benchmarks/storage_bench.py`` measures it.
The sync itself runs without any lock held, so appends continue meanwhile.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["GroupCommit"]


class _Waiter:
    """One appender waiting for ``position`` to become durable."""

    __slots__ = ("position", "lock", "lead")

    def __init__(self, position: int) -> None:
        self.position = position
        self.lock = threading.Lock()
        self.lock.acquire()  # the waiter blocks on it; the leader releases it
        self.lead = False  # set when the waiter is released to lead the next sync


class GroupCommit:
    """Coordinates waiters on one monotonically growing durable position."""

    def __init__(self, sync: Callable[[], int], durable: int = 0) -> None:
        """``sync()`` makes everything written so far durable and returns the
        end position (offset) it covered."""
        self._sync = sync
        self._lock = threading.Lock()
        self._durable = durable
        self._syncing = False
        self._waiters: list[_Waiter] = []

    @property
    def durable(self) -> int:
        """Everything before this position is known to be durable."""
        return self._durable

    def mark_durable(self, position: int) -> None:
        """Record a sync made elsewhere (a roll, a close) and release covered waiters."""
        with self._lock:
            if position <= self._durable:
                return
            self._durable = position
            covered = self._take_covered_locked()
        for waiter in covered:
            waiter.lock.release()

    def await_durable(self, position: int) -> None:
        """Return once everything before ``position`` is durable."""
        if self._durable >= position:
            return
        with self._lock:
            if self._durable >= position:
                return
            if self._syncing:
                waiter: _Waiter | None = _Waiter(position)
                self._waiters.append(waiter)
            else:
                self._syncing = True
                waiter = None
        if waiter is not None:
            waiter.lock.acquire()
            if not waiter.lead:
                return
        self._lead(position)

    def _take_covered_locked(self) -> list[_Waiter]:
        durable = self._durable
        covered = [w for w in self._waiters if w.position <= durable]
        if covered:
            self._waiters = [w for w in self._waiters if w.position > durable]
        return covered

    def _hand_over_locked(self) -> _Waiter | None:
        """Pass the lead to the oldest waiter, or end the syncing phase."""
        if self._waiters:
            successor = self._waiters.pop(0)
            successor.lead = True
            return successor
        self._syncing = False
        return None

    def _lead(self, position: int) -> None:
        """Sync until ``position`` is durable, then hand over the lead."""
        while True:
            try:
                covered_end = self._sync()
            except BaseException:
                with self._lock:
                    successor = self._hand_over_locked()
                if successor is not None:
                    successor.lock.release()
                raise
            with self._lock:
                if covered_end > self._durable:
                    self._durable = covered_end
                covered = self._take_covered_locked()
                done = self._durable >= position
                successor = self._hand_over_locked() if done else None
            for waiter in covered:
                waiter.lock.release()
            if successor is not None:
                successor.lock.release()
            if done:
                return
