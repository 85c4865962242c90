"""Per-key FIFO scheduling for ``KEY_ORDERED`` delivery: a pure, in-memory scheduler.

A ``KeyScheduler`` holds the records of one partition that are waiting to be
delivered (read ahead from the log, or handed back after a nack, an expired
deadline or a rebalance) and decides which may go out now.  Its promise:

- **Never two in flight per key.**  A record is handed out only if no record
  of its key is out (between ``take`` and ``release``).
- **Strict FIFO per key.**  The records of a key are handed out in offset
  order, and a record handed back (``requeue``) goes out again before any
  later record of its key.
- **Keys do not wait for each other.**  Among the records allowed to go out,
  ``take`` picks the lowest offsets first, so a busy or failing key holds
  back only its own records.
- Records with a null key (``None``) are not ordered among themselves: each
  is its own key.

Cost: ``take`` and ``release`` are O(log k) per record for k ready keys
(a heap of each idle key's oldest waiting offset); no scan of waiting records.

What this does not do: it holds whatever it is given (the caller caps the
look-ahead with ``waiting``), it does no I/O and it keeps no time.  A key is
any hashable value; the coordinator uses the record key bytes.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Hashable

from logstore.errors import FailedPrecondition

__all__ = ["Waiting", "KeyScheduler"]


@dataclass(slots=True)
class Waiting:
    """A record waiting for delivery."""

    offset: int
    key: bytes | None
    raw: bytes
    """The framed record (tag, length, Record message), ready to splice into a reply."""
    attempts: int = 0
    """Deliveries made so far (0: never delivered)."""
    append_time: int = 0
    """The batch's append time if its topic uses log-append time, else 0."""


class KeyScheduler:
    """The waiting records of one partition, released key by key in FIFO order."""

    __slots__ = ("_queues", "_busy", "_ready", "_waiting")

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[Waiting]] = {}
        self._busy: set[Hashable] = set()
        self._ready: list[tuple[int, Hashable]] = []
        """Heap of (oldest waiting offset, key) for idle keys with waiting records."""
        self._waiting = 0

    @staticmethod
    def slot(entry: Waiting) -> Hashable:
        """The ordering key of a record: its key, or a private one for a null key."""
        return entry.key if entry.key is not None else (None, entry.offset)

    @property
    def waiting(self) -> int:
        """Records waiting (not handed out)."""
        return self._waiting

    @property
    def busy(self) -> int:
        """Keys with a record out."""
        return len(self._busy)

    def is_busy(self, key: Hashable) -> bool:
        return key in self._busy

    def add(self, entry: Waiting) -> None:
        """A newly read record; must come after every record of its key given so far."""
        slot = self.slot(entry)
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = deque()
        queue.append(entry)
        self._waiting += 1
        if len(queue) == 1 and slot not in self._busy:
            heapq.heappush(self._ready, (entry.offset, slot))

    def requeue(self, entry: Waiting) -> None:
        """A record handed out earlier comes back (nack, deadline, rebalance): it goes
        first among its key's records, and its key is released."""
        slot = self.slot(entry)
        if slot not in self._busy:
            raise FailedPrecondition(f"record at offset {entry.offset} was not handed out")
        self._busy.discard(slot)
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = deque()
        queue.appendleft(entry)
        self._waiting += 1
        heapq.heappush(self._ready, (entry.offset, slot))

    def release(self, slot: Hashable) -> None:
        """The record out for ``slot`` is done (acked): the key's next record may go."""
        if slot not in self._busy:
            raise FailedPrecondition(f"key {slot!r} has no record out")
        self._busy.discard(slot)
        queue = self._queues.get(slot)
        if queue:
            heapq.heappush(self._ready, (queue[0].offset, slot))
        elif queue is not None:
            del self._queues[slot]

    def hold(self, slot: Hashable) -> None:
        """Mark ``slot`` busy with no record handed out here (its record is in a retry
        tier); ``release`` frees it.  A key already busy stays as it is."""
        self._busy.add(slot)

    def take(self, limit: int) -> list[Waiting]:
        """Hand out up to ``limit`` records, lowest offsets first, at most one per key."""
        out: list[Waiting] = []
        ready, queues, busy = self._ready, self._queues, self._busy
        while ready and len(out) < limit:
            offset, slot = heapq.heappop(ready)
            queue = queues.get(slot)
            if not queue or slot in busy or queue[0].offset != offset:
                continue  # an outdated heap entry
            entry = queue.popleft()
            if not queue:
                del queues[slot]
            busy.add(slot)
            self._waiting -= 1
            out.append(entry)
        return out

    def clear(self) -> None:
        """Forget everything (after a seek)."""
        self._queues.clear()
        self._busy.clear()
        self._ready.clear()
        self._waiting = 0
