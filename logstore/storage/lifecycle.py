"""The segment lifecycle as a pure transition table (no I/O).

::

    ACTIVE --seal--> SEALED --delete--> DELETING --unlink--> DELETED
      |                 |
      +----close----> CLOSED <--close--+

A segment is ACTIVE while it takes appends; exactly one segment of a log is
ACTIVE.  Sealing makes it read-only for good.  Deletion is two-phase: the
files are first renamed to ``*.deleted`` (DELETING), so a crash in the middle
leaves them recognisable and ``open`` finishes the job, then unlinked.
CLOSED is the end of a segment object whose files stay on disk.  The active
segment is never deleted; it must be sealed first.
"""

from __future__ import annotations

import enum

from logstore.errors import FailedPrecondition

__all__ = ["SegmentState", "SegmentEvent", "TRANSITIONS", "next_state"]


class SegmentState(enum.Enum):
    ACTIVE = "active"
    SEALED = "sealed"
    DELETING = "deleting"
    DELETED = "deleted"
    CLOSED = "closed"


class SegmentEvent(enum.Enum):
    SEAL = "seal"
    DELETE = "delete"
    UNLINK = "unlink"
    CLOSE = "close"


_S, _E = SegmentState, SegmentEvent

TRANSITIONS: dict[tuple[SegmentState, SegmentEvent], SegmentState] = {
    (_S.ACTIVE, _E.SEAL): _S.SEALED,
    (_S.ACTIVE, _E.CLOSE): _S.CLOSED,
    (_S.SEALED, _E.DELETE): _S.DELETING,
    (_S.SEALED, _E.CLOSE): _S.CLOSED,
    (_S.DELETING, _E.UNLINK): _S.DELETED,
}


def next_state(state: SegmentState, event: SegmentEvent) -> SegmentState:
    """The state after ``event``; raises FailedPrecondition for a move the table forbids."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise FailedPrecondition(
            f"a segment in state {state.value!r} cannot {event.value}"
        ) from None
