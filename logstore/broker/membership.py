"""Consumer group membership as pure values: a member transition table and a ``Group``.

No I/O, no threads, no clock reads: every time is passed in as ``now_ms``
(epoch milliseconds from the caller's injected clock), so the whole
protocol is testable as plain function calls, in the style of h11.

One member's life (the full table is ``TRANSITIONS``)::

    (new id) --join--> JOINING --assigned--> ACTIVE
                       JOINING <--join / rebalance-- ACTIVE
    JOINING, ACTIVE --leave--> LEAVING
    JOINING, ACTIVE, LEAVING --session_expired / stream_broken--> GONE

    Self-loops: heartbeat in JOINING, ACTIVE and LEAVING; join and rebalance
    in JOINING; rebalance in LEAVING.  Everything else is refused.

- JOINING: a member of the group that has not taken the assignment of the
  current generation yet.  It already owns its partitions in the group's
  bookkeeping, but must acknowledge the generation (``assigned``) to become
  ACTIVE.  A rebalance sends every ACTIVE member back here.
- ACTIVE: works with the assignment of the current generation.
- LEAVING: said goodbye; owns nothing any more, may still heartbeat (e.g.
  while committing its last offsets) until its stream closes.
- GONE: final.  A gone member is dropped from the group; coming back means
  joining as a new member.

A ``Group`` is an immutable value: every operation returns a new ``Group``.
The *generation* counts membership changes: it is bumped, and the partitions
are reassigned with ``assignment.assign`` (balanced and sticky), whenever the
set of owning members (JOINING or ACTIVE) or the set of partitions changes,
and at no other time.  Heartbeats, acknowledgements and rejoins of a known
member do not bump it.

What this module does not do or guarantee:

- It does not fence zombies on its own: a caller acting for a member must
  check the member's generation (``acknowledge`` does for assignments; offset
  commits will have to).
- It keeps no history: a gone member's id is forgotten, so the same id may
  join again as a brand-new member.  Handing out fresh ids is the
  coordinator's job.
- Time is whatever the caller says.  A ``now_ms`` earlier than a member's last
  activity (a wall clock stepping back) never moves ``last_seen_ms`` back,
  but a clock jumping forward can expire members that were alive.
- Nothing about subscriptions: every owning member may be given any partition.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Iterable

from logstore.broker.assignment import TopicPartition, assign
from logstore.broker.names import validate_group_name
from logstore.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["MemberState", "MemberEvent", "TRANSITIONS", "OWNING_STATES", "transition", "Member", "Group"]


class MemberState(enum.Enum):
    JOINING = "joining"
    ACTIVE = "active"
    LEAVING = "leaving"
    GONE = "gone"


class MemberEvent(enum.Enum):
    JOIN = "join"
    """The member (re)announces itself."""
    ASSIGNED = "assigned"
    """The member acknowledged the current generation's assignment."""
    HEARTBEAT = "heartbeat"
    """Any sign of life: a heartbeat, a commit, a fetch on its session."""
    REBALANCE = "rebalance"
    """The group moved to a new generation."""
    LEAVE = "leave"
    """The member said it is leaving."""
    SESSION_EXPIRED = "session_expired"
    """No sign of life for a whole session timeout."""
    STREAM_BROKEN = "stream_broken"
    """The member's session stream closed or failed."""


_S, _E = MemberState, MemberEvent

TRANSITIONS: dict[tuple[MemberState, MemberEvent], MemberState] = {
    (_S.JOINING, _E.JOIN): _S.JOINING,
    (_S.JOINING, _E.ASSIGNED): _S.ACTIVE,
    (_S.JOINING, _E.HEARTBEAT): _S.JOINING,
    (_S.JOINING, _E.REBALANCE): _S.JOINING,
    (_S.JOINING, _E.LEAVE): _S.LEAVING,
    (_S.JOINING, _E.SESSION_EXPIRED): _S.GONE,
    (_S.JOINING, _E.STREAM_BROKEN): _S.GONE,
    (_S.ACTIVE, _E.JOIN): _S.JOINING,
    (_S.ACTIVE, _E.HEARTBEAT): _S.ACTIVE,
    (_S.ACTIVE, _E.REBALANCE): _S.JOINING,
    (_S.ACTIVE, _E.LEAVE): _S.LEAVING,
    (_S.ACTIVE, _E.SESSION_EXPIRED): _S.GONE,
    (_S.ACTIVE, _E.STREAM_BROKEN): _S.GONE,
    (_S.LEAVING, _E.HEARTBEAT): _S.LEAVING,
    (_S.LEAVING, _E.REBALANCE): _S.LEAVING,
    (_S.LEAVING, _E.SESSION_EXPIRED): _S.GONE,
    (_S.LEAVING, _E.STREAM_BROKEN): _S.GONE,
}
"""Every allowed move; any (state, event) pair not listed is refused."""

_WHAT_INSTEAD = {
    _S.JOINING: "acknowledge the current generation first",
    _S.ACTIVE: "it already works with the current generation's assignment",
    _S.LEAVING: "it is leaving; close its session and join again as a new member",
    _S.GONE: "it has left the group; join again as a new member",
}

OWNING_STATES = frozenset({_S.JOINING, _S.ACTIVE})
"""States whose members own partitions and count as the group's membership."""


def transition(state: MemberState, event: MemberEvent) -> MemberState:
    """The member state after ``event``; raises FailedPrecondition for a move the table forbids."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise FailedPrecondition(
            f"a group member in state {state.value!r} cannot take event {event.value!r}: {_WHAT_INSTEAD[state]}"
        ) from None


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a group as the coordinator sees it."""

    member_id: str
    state: MemberState
    last_seen_ms: int
    """The latest ``now_ms`` at which the member showed a sign of life."""
    assignment: frozenset[TopicPartition] = frozenset()
    """The partitions it owns in the group's current generation."""

    def expires_at(self, session_timeout_ms: int) -> int:
        """The first ``now_ms`` at which the member counts as expired."""
        return self.last_seen_ms + session_timeout_ms

    def _after(self, event: MemberEvent, now_ms: int | None = None) -> "Member":
        state = transition(self.state, event)
        seen = self.last_seen_ms if now_ms is None else max(self.last_seen_ms, now_ms)
        return replace(self, state=state, last_seen_ms=seen)


@dataclass(frozen=True, slots=True)
class Group:
    """A consumer group's members, generation and assignment.  Build with ``Group.new``.

    ``members`` is sorted by member id and never holds GONE members.
    """

    name: str
    generation: int = 0
    partitions: frozenset[TopicPartition] = frozenset()
    members: tuple[Member, ...] = ()

    @classmethod
    def new(cls, name: str, partitions: Iterable[TopicPartition] = (), *, internal: bool = False) -> "Group":
        """An empty group at generation 0 that will share out ``partitions``."""
        validate_group_name(name, allow_internal=internal)
        return cls(name, 0, frozenset(partitions), ())

    # -- reading --------------------------------------------------------------------------

    def member(self, member_id: str) -> Member:
        """The member with that id; raises NotFound if it is not (or no longer) in the group."""
        for m in self.members:
            if m.member_id == member_id:
                return m
        raise NotFound(f"member {member_id!r} is not in group {self.name!r}; it must join (again)")

    def owners(self) -> list[str]:
        """Ids of the members that own partitions (JOINING or ACTIVE), sorted."""
        return [m.member_id for m in self.members if m.state in OWNING_STATES]

    @property
    def assignment(self) -> dict[str, frozenset[TopicPartition]]:
        """The current generation's assignment: every owning member to its partitions."""
        return {m.member_id: m.assignment for m in self.members if m.state in OWNING_STATES}

    def expired(self, now_ms: int, session_timeout_ms: int) -> list[str]:
        """Ids (sorted) of members with no sign of life for ``session_timeout_ms`` up to ``now_ms``.

        A member last seen at ``t`` is expired from ``now_ms == t + session_timeout_ms`` on.
        """
        _check_timeout(session_timeout_ms)
        return [m.member_id for m in self.members if now_ms >= m.expires_at(session_timeout_ms)]

    # -- changes ----------------------------------------------------------------------------

    def join(self, member_id: str, now_ms: int) -> "Group":
        """A member joins: a new id enters as JOINING and bumps the generation; a known
        JOINING or ACTIVE member rejoins (goes to JOINING) without a bump."""
        if not isinstance(member_id, str) or not member_id:
            raise InvalidArgument(f"a member id is a non-empty string, got {member_id!r}")
        if any(m.member_id == member_id for m in self.members):
            return self._apply(member_id, MemberEvent.JOIN, now_ms)
        joined = Member(member_id, MemberState.JOINING, now_ms)
        members = tuple(sorted((*self.members, joined), key=lambda m: m.member_id))
        return self._rebalanced(members, self.partitions)

    def acknowledge(self, member_id: str, generation: int, now_ms: int) -> "Group":
        """The member took the assignment of ``generation``, which must be the current one."""
        member = self.member(member_id)
        if generation != self.generation:
            raise FailedPrecondition(
                f"member {member_id!r} acknowledged generation {generation} but group {self.name!r} "
                f"is at generation {self.generation}; fetch the current assignment and acknowledge that"
            )
        return self._replace_member(member._after(MemberEvent.ASSIGNED, now_ms))

    def heartbeat(self, member_id: str, now_ms: int) -> "Group":
        """A sign of life from the member; never changes the generation."""
        return self._apply(member_id, MemberEvent.HEARTBEAT, now_ms)

    def leave(self, member_id: str, now_ms: int) -> "Group":
        """The member leaves: it becomes LEAVING, owns nothing, and the rest rebalance."""
        member = self.member(member_id)
        leaving = replace(member._after(MemberEvent.LEAVE, now_ms), assignment=frozenset())
        members = tuple(leaving if m.member_id == member_id else m for m in self.members)
        return self._rebalanced(members, self.partitions)

    def stream_broken(self, member_id: str) -> "Group":
        """The member's stream ended: it is gone; the rest rebalance if it owned partitions."""
        return self._remove([member_id], MemberEvent.STREAM_BROKEN)

    def expire(self, now_ms: int, session_timeout_ms: int) -> "Group":
        """Drop every expired member (see ``expired``); one generation bump covers them all."""
        return self._remove(self.expired(now_ms, session_timeout_ms), MemberEvent.SESSION_EXPIRED)

    def with_partitions(self, partitions: Iterable[TopicPartition]) -> "Group":
        """Share out a new set of partitions (e.g. a topic grew); bumps only if the set changed."""
        new = frozenset(partitions)
        if new == self.partitions:
            return self
        return self._rebalanced(self.members, new)

    # -- helpers --------------------------------------------------------------------------

    def _apply(self, member_id: str, event: MemberEvent, now_ms: int) -> "Group":
        return self._replace_member(self.member(member_id)._after(event, now_ms))

    def _replace_member(self, member: Member) -> "Group":
        members = tuple(member if m.member_id == member.member_id else m for m in self.members)
        return replace(self, members=members)

    def _remove(self, member_ids: list[str], event: MemberEvent) -> "Group":
        doomed = {mid: self.member(mid) for mid in member_ids}
        for member in doomed.values():
            if transition(member.state, event) is not MemberState.GONE:
                raise FailedPrecondition(f"member {member.member_id!r} cannot be removed on {event.value!r}")
        if not doomed:
            return self
        members = tuple(m for m in self.members if m.member_id not in doomed)
        if any(m.state in OWNING_STATES for m in doomed.values()):
            return self._rebalanced(members, self.partitions)
        return replace(self, members=members)

    def _rebalanced(self, members: tuple[Member, ...], partitions: frozenset[TopicPartition]) -> "Group":
        """Next generation: reassign ``partitions`` stickily over the owning ``members``."""
        owning = [m for m in members if m.state in OWNING_STATES]
        new = assign(partitions, [m.member_id for m in owning], {m.member_id: m.assignment for m in owning})
        out = []
        for m in members:
            moved = m._after(MemberEvent.REBALANCE)
            if m.state in OWNING_STATES:
                moved = replace(moved, assignment=new[m.member_id])
            out.append(moved)
        return replace(self, generation=self.generation + 1, partitions=partitions, members=tuple(out))


def _check_timeout(session_timeout_ms: int) -> None:
    if session_timeout_ms < 1:
        raise InvalidArgument(f"session_timeout_ms must be positive, got {session_timeout_ms}")
