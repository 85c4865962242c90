"""The contiguous acked prefix of a partition: what a group may commit.

Acks arrive in any order and in runs (a whole delivery at once).  An
``AckFloor`` keeps the *floor*, the first offset not yet acked, and the
acked runs above it as sorted, disjoint, non-adjacent ``[start, end)``
intervals.  The floor only moves up: when a run starting at the floor is
added, the floor jumps to the end of it and of every run it now touches.
Everything below the floor is done, so the floor is the offset to commit.

Cost: an ack run that starts at the floor (the usual in-order case) is O(1)
plus the runs it swallows; any other run is O(log n + k) for n stored runs
and k runs it merges with.  No per-offset work.

What this does not do: it does not know which offsets were delivered, so it
accepts acks for offsets never handed out; the caller (the coordinator's
leases) only passes runs it has checked.  Acks below the floor are ignored.
"""

from __future__ import annotations

import bisect

from logstore.errors import InvalidArgument

__all__ = ["AckFloor"]


class AckFloor:
    """The floor (first unacked offset) and the acked runs above it."""

    __slots__ = ("floor", "_starts", "_ends")

    def __init__(self, floor: int) -> None:
        if floor < 0:
            raise InvalidArgument(f"an ack floor is an offset from 0, got {floor}")
        self.floor = floor
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __repr__(self) -> str:
        runs = ", ".join(f"[{s}, {e})" for s, e in zip(self._starts, self._ends))
        return f"AckFloor(floor={self.floor}, above=[{runs}])"

    @property
    def runs(self) -> list[tuple[int, int]]:
        """The acked runs above the floor, sorted."""
        return list(zip(self._starts, self._ends))

    def acked_above(self) -> int:
        """How many offsets above the floor are acked."""
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def is_acked(self, offset: int) -> bool:
        """Whether ``offset`` is below the floor or in an acked run."""
        if offset < self.floor:
            return True
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def add(self, start: int, end: int) -> int:
        """Record offsets ``[start, end)`` as acked; return the (possibly raised) floor."""
        if end <= start:
            return self.floor
        start = max(start, self.floor)
        if end <= start:
            return self.floor
        starts, ends = self._starts, self._ends
        # Merge with every run that overlaps or touches [start, end).
        lo = bisect.bisect_left(ends, start)
        hi = bisect.bisect_right(starts, end)
        if lo < hi:
            start = min(start, starts[lo])
            end = max(end, ends[hi - 1])
        del starts[lo:hi]
        del ends[lo:hi]
        if start == self.floor:
            self.floor = end
        else:
            starts.insert(lo, start)
            ends.insert(lo, end)
        return self.floor

    def reset(self, floor: int) -> None:
        """Forget every ack and start again at ``floor`` (after a seek)."""
        if floor < 0:
            raise InvalidArgument(f"an ack floor is an offset from 0, got {floor}")
        self.floor = floor
        self._starts.clear()
        self._ends.clear()

    def skip_to(self, offset: int) -> int:
        """Raise the floor to at least ``offset`` (records below it are gone); return the floor."""
        if offset > self.floor:
            self.add(self.floor, offset)
        return self.floor
