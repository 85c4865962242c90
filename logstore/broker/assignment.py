"""Assigning a consumer group's partitions to its members: balanced and sticky.

``assign(partitions, members, previous)`` is a pure function.  Its answer
maps every member to the partitions it owns in the new generation, and holds:

- **Exact cover.**  Every partition in ``partitions`` is owned by exactly one
  member; no member owns a partition that is not in ``partitions``.
- **Balance.**  Owned counts differ by at most one: with ``n`` partitions and
  ``m`` members, ``n % m`` members own ``n // m + 1`` and the rest ``n // m``.
- **Stickiness.**  As few partitions as possible change owner.  A partition
  *moves* when a member that still belongs to the group owned it before and
  another member owns it now; partitions that were unowned, or whose owner
  left, must be handed out anyway and do not count as moves.

How minimal movement is reached (for ``previous`` claims that do not
overlap): a member keeps ``min(len(claimed), size)`` of its claimed
partitions, where ``size`` is its balanced share, so the number kept is the
sum of those minima.  Only the choice of *which* members get the larger share
``n // m + 1`` is free, and a larger share keeps one more partition exactly
for the members claiming more than ``n // m``.  Handing the ``n % m`` larger
shares to the members with the most claims therefore keeps the most
partitions any balanced assignment can keep, i.e. moves the fewest.  The
partitions left over (unowned, released by shrinking members, owned by
departed members, or new) are dealt out round-robin in sorted order to
members below their share, which spreads each topic's partitions across
members.

Determinism: the answer depends only on the *sets* given (inputs are
deduplicated and sorted internally), never on their order, on hashing or on
randomness, so every coordinator computes the same assignment.

What this module does not guarantee:

- Minimal movement when ``previous`` is not a valid assignment (one partition
  claimed by several members, e.g. from a zombie).  Such a partition is first
  given to the claimant with the fewest valid claims (ties: the smallest
  member id) and the others drop it; the result is still balanced and an
  exact cover, but a cleverer resolution could sometimes keep more.
- Any notion of subscriptions: every member may own every partition.  A
  group whose members subscribe to different topics needs another function.
- Rack awareness, lag awareness or weighting of partitions by traffic.
- Anything with no members: ``assign(ps, [], prev)`` is ``{}`` (nobody can own).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Mapping

from logstore.errors import InvalidArgument

__all__ = ["TopicPartition", "assign", "moved_partitions"]


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """One partition of one topic; ordered by topic, then partition number."""

    topic: str
    partition: int

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise InvalidArgument(f"a topic-partition needs a non-empty topic name, got {self.topic!r}")
        if not isinstance(self.partition, int) or isinstance(self.partition, bool) or self.partition < 0:
            raise InvalidArgument(
                f"partition numbers are integers from 0, got {self.partition!r} for topic {self.topic!r}"
            )

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}"


def assign(
    partitions: Iterable[TopicPartition],
    members: Iterable[str],
    previous: Mapping[str, Iterable[TopicPartition]],
) -> dict[str, frozenset[TopicPartition]]:
    """The balanced, sticky assignment of ``partitions`` to ``members``.

    ``previous`` maps member ids to the partitions they owned before; entries
    for members that are no longer listed and partitions that no longer
    exist are ignored.  Every member is a key of the answer (possibly with
    an empty set when there are more members than partitions).
    """
    all_partitions = sorted(set(partitions))
    member_ids = sorted(set(members))
    for member in member_ids:
        if not isinstance(member, str) or not member:
            raise InvalidArgument(f"member ids are non-empty strings, got {member!r}")
    if not member_ids:
        return {}
    share, larger = divmod(len(all_partitions), len(member_ids))

    claims = _valid_claims(set(all_partitions), member_ids, previous)
    # The members with the most claims get the larger shares (ties: smallest id).
    by_claims = sorted(member_ids, key=lambda m: (-len(claims[m]), m))
    target = {m: share + (1 if rank < larger else 0) for rank, m in enumerate(by_claims)}

    owned: dict[str, list[TopicPartition]] = {}
    taken: set[TopicPartition] = set()
    for m in member_ids:
        kept = claims[m][: target[m]]  # claims are sorted: keep the lowest, release the rest
        owned[m] = list(kept)
        taken.update(kept)

    # Deal out the rest round-robin to the members still below their share.
    free = [tp for tp in all_partitions if tp not in taken]
    hungry = deque(m for m in member_ids if len(owned[m]) < target[m])
    for tp in free:
        m = hungry.popleft()
        owned[m].append(tp)
        if len(owned[m]) < target[m]:
            hungry.append(m)
    return {m: frozenset(owned[m]) for m in member_ids}


def _valid_claims(
    existing: set[TopicPartition],
    member_ids: list[str],
    previous: Mapping[str, Iterable[TopicPartition]],
) -> dict[str, list[TopicPartition]]:
    """Each current member's previous partitions that still exist, overlaps resolved, sorted."""
    raw = {m: sorted(set(previous.get(m, ())) & existing) for m in member_ids}
    claimants: dict[TopicPartition, list[str]] = {}
    for m in member_ids:
        for tp in raw[m]:
            claimants.setdefault(tp, []).append(m)
    winner = {tp: min(ms, key=lambda m: (len(raw[m]), m)) for tp, ms in claimants.items() if len(ms) > 1}
    return {m: [tp for tp in raw[m] if winner.get(tp, m) == m] for m in member_ids}


def moved_partitions(
    previous: Mapping[str, Iterable[TopicPartition]],
    current: Mapping[str, Iterable[TopicPartition]],
) -> frozenset[TopicPartition]:
    """Partitions a member of ``current`` owned in ``previous`` and another member owns now.

    This is what stickiness minimises; partitions whose previous owner left
    the group are not counted.
    """
    owner_now = {tp: m for m, tps in current.items() for tp in tps}
    moved = set()
    for member, tps in previous.items():
        if member not in current:
            continue
        for tp in tps:
            now = owner_now.get(tp)
            if now is not None and now != member:
                moved.add(tp)
    return frozenset(moved)
