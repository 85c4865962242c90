"""The group coordinator: server-managed consumer groups, one member per Consume stream.

The coordinator owns every consumer group's live state: its members
(``Session``), the assignment of partitions to members (``membership.Group``
with ``assignment.assign``: balanced and sticky), the records out for
processing (leases), and the committed offsets (``offsets.OffsetStore``).
The gRPC servicer turns one Consume stream into one ``Session`` and does
nothing else.

Delivery, per partition of a group (``_Part``)
----------------------------------------------
- ``next_offset``: the next record never delivered to the group.
- ``floor`` (an ``AckFloor``): the first record not acked yet; everything
  below is done.  Acks arrive in any order; the floor moves to the end of
  the contiguous acked prefix.  The committer thread writes floors that
  passed ``committed`` to ``__consumer_offsets`` (one durable batch per group
  per round, so many acks share one fdatasync) and tells the owner.
- Records handed out are *leases*: a run of consecutive delivery ids of one
  member mapped to offsets, an attempt number and a deadline.  Ack, nack and
  extend first cut leases at the ids given, then act on whole leases, so the
  common case (a whole delivery acked at once) costs O(1), never O(records).
- A nacked, expired or revoked lease goes back to the partition: in
  ``PARTITION_ORDERED`` mode to ``retry`` (offset -> attempts made), which
  blocks fresh delivery of the partition until every retried record is acked;
  in ``KEY_ORDERED`` mode back to the partition's ``KeyScheduler``, first in
  line for its key.
- ``PARTITION_ORDERED`` fresh deliveries are the stored record bytes, sliced
  out of stored batches without decoding.  ``KEY_ORDERED`` reads up to
  ``LOOKAHEAD`` records ahead and extracts each record's key (per-record work:
  that mode is slower).

Ownership moves only through ``_apply_assignment_locked``: a partition's
leases at its old owner are revoked (their ids become stale, the records go
back for redelivery) before the new owner sees it.  A delivery id is
unique within its session; a lease that is gone (acked, nacked, expired,
revoked, withdrawn by a seek) makes its ids stale, so no ack is ever
applied twice.

Locks: one lock per group (``_GroupState.lock``) guards all of its state,
sessions and partitions included; ``_GroupState.commit_lock`` serialises
writes of its committed offsets (committer, seek, external commits, start
positions) and is always taken before the group lock.  Each session has
its own small condition for waking its sender, never held with the group lock
taken after it.

Time: ``clock`` (epoch ms) is injected.  A timer thread calls ``tick()``
every ``TICK_S`` to expire deadlines and silent members and to notice topics
that grew; tests with a ``ManualClock`` call ``tick()`` themselves.

What this does not guarantee:
- Commits are asynchronous (at-least-once): acks not yet committed when the
  broker dies are delivered again after the restart.  At-most-once groups
  commit every delivery durably before it is sent.
- Deadline accuracy is ``TICK_S`` (25 ms) on top of the clock.
- The committer writes at most every ``COMMIT_INTERVAL_S`` (20 ms) per
  round, so an ack is committed within about 20 ms plus one fdatasync.
- A member's deadline is per delivery: extending or acking part of a
  delivery splits it, so every record keeps its own deadline, but all
  records of one delivery start with the same deadline.
- In-flight state (leases, acked runs above the floor, retry attempt
  counts) lives in memory only; after a broker restart, every record from
  the committed offset on is delivered again with attempt 1.
- The group's state is per broker process; there is one broker.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping

from logstore.broker.ackfloor import AckFloor
from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Acks, Broker
from logstore.broker.keyorder import KeyScheduler, Waiting
from logstore.broker.membership import Group, MemberState
from logstore.broker.names import validate_group_name, validate_topic_name
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.broker.policies import PolicyStore
from logstore.broker.provenance import Provenance, read_provenance, with_provenance
from logstore.broker.stored import encoded, iter_framed, read_framed
from logstore.broker.retry import RetryPolicy, delay_topic, dlq_topic, parse_tier_topic, redrive_topic, tier_topic
from logstore.broker.deadletters import DeadLetters
from logstore.broker.topic import Partition
from logstore.clock import Clock
from logstore.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    LogstoreError,
    NotFound,
    OffsetOutOfRange,
    PermissionDenied,
)
from logstore.storage.batch import ATTR_DELIVERY_TIME, ATTR_TIMESTAMP_LOG_APPEND, HEADER, HEADER_SIZE
from logstore.storage.records import delivery_time, record_key, record_spans

_LOGGER = logging.getLogger(__name__)

__all__ = [
    "DeliveryMode",
    "Guarantee",
    "StartPosition",
    "ConsumeOptions",
    "Delivery",
    "Outbound",
    "Session",
    "MemberInfo",
    "PartitionProgress",
    "GroupDescription",
    "GroupSummary",
    "SeekTarget",
    "GroupCoordinator",
    "LOOKAHEAD",
]

MAX_TOPICS = 100
LOOKAHEAD = 10_000
"""KEY_ORDERED: the most records of a partition read ahead and waiting for their key."""
RESPONSE_BYTES = 1 << 20
"""Soft cap on record bytes per response (at least one record is always sent)."""
TICK_S = 0.025
COMMIT_INTERVAL_S = 0.02
"""The committer waits this long after writing, so one fdatasync covers the acks of 20 ms."""
MAX_ID = (1 << 64) - 1
_DEFAULTS = {"max_in_flight": 1000, "ack_deadline_ms": 30_000, "session_timeout_ms": 30_000}


class DeliveryMode(enum.Enum):
    PARTITION_ORDERED = "partition_ordered"
    KEY_ORDERED = "key_ordered"
    UNORDERED = "unordered"
    """Offset order for first deliveries, but a redelivery blocks nothing (ordering NONE)."""


class Guarantee(enum.Enum):
    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a group starts on a partition it has no committed offset for."""

    earliest: bool = False
    """True: the log start.  False (and no timestamp): the log end."""
    timestamp_ms: int | None = None
    """The first record at or after this time (the log end if none)."""

    def __post_init__(self) -> None:
        if self.timestamp_ms is not None and self.timestamp_ms < 0:
            raise InvalidArgument(f"start_position.timestamp_ms must not be negative, got {self.timestamp_ms}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class ConsumeOptions:
    """A member's options from its Join (0 in the proto means the default here)."""

    max_in_flight: int = 1000
    ack_deadline_ms: int = 30_000
    mode: DeliveryMode = DeliveryMode.PARTITION_ORDERED
    start: StartPosition = StartPosition()
    session_timeout_ms: int = 30_000
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
    client_id: str = ""
    retry_policies: tuple[tuple[str, RetryPolicy], ...] = ()
    """(topic, policy) pairs stored for the group at the join (see ``set_retry_policy``)."""

    def __post_init__(self) -> None:
        _check_range("max_in_flight_records", self.max_in_flight, 1, 100_000)
        _check_range("ack_deadline_ms", self.ack_deadline_ms, 100, 600_000)
        _check_range("session_timeout_ms", self.session_timeout_ms, 100, 600_000)
        if not isinstance(self.client_id, str) or len(self.client_id) > 255:
            raise InvalidArgument("client_id must be a string of at most 255 characters")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Records of one partition handed to a member (see the proto's ``Delivery``)."""

    tp: TopicPartition
    first_id: int
    base_offset: int
    offsets: tuple[int, ...] | None
    """Each record's offset when they are not consecutive from ``base_offset``."""
    attempt: int
    deadline_ms: int
    records: tuple[bytes | memoryview, ...]
    """Chunks of framed records (``repeated Record`` encoding), in order."""
    count: int
    append_time_ms: int = 0
    """The append time of a topic stamped with log-append time (every record's timestamp), else 0."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """What one response to a member carries."""

    member_id: str
    generation: int
    assignment: tuple[TopicPartition, ...]
    deliveries: list[Delivery]
    stale: list[tuple[int, int]]
    committed: list[tuple[TopicPartition, int]]
    errors: list[LogstoreError]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    client_id: str
    peer: str
    assignment: tuple[TopicPartition, ...]
    in_flight: int
    joined_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    tp: TopicPartition
    committed: int
    """-1 when the group has no committed offset for it."""
    log_end_offset: int
    lag: int
    owner: str
    in_flight: int


@dataclass(frozen=True, slots=True)
class GroupDescription:
    name: str
    generation: int
    mode: DeliveryMode | None
    guarantee: Guarantee | None
    members: tuple[MemberInfo, ...]
    partitions: tuple[PartitionProgress, ...]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    name: str
    member_count: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SeekTarget:
    """Exactly one of: ``earliest``, ``latest``, ``offset``, ``timestamp_ms``."""

    earliest: bool = False
    latest: bool = False
    offset: int | None = None
    timestamp_ms: int | None = None

    def __post_init__(self) -> None:
        chosen = sum((self.earliest, self.latest, self.offset is not None, self.timestamp_ms is not None))
        if chosen != 1:
            raise InvalidArgument("a seek needs exactly one target: earliest, latest, an offset or a timestamp")
        if self.offset is not None and self.offset < 0:
            raise InvalidArgument(f"a seek offset must not be negative, got {self.offset}")
        if self.timestamp_ms is not None and self.timestamp_ms < 0:
            raise InvalidArgument(f"a seek timestamp must not be negative, got {self.timestamp_ms}")


# -- internal state --------------------------------------------------------------------------------


class _Part:
    """One partition's delivery state within one group."""

    __slots__ = (
        "tp", "partition", "epoch", "floor", "committed", "next_offset", "in_flight", "owner",
        "retry", "redelivering", "keys", "listener", "spans", "origin", "not_before", "kind", "held",
        "timers", "scanned",
    )

    def __init__(
        self,
        tp: TopicPartition,
        partition: Partition,
        committed: int,
        mode: DeliveryMode,
        origin: str | None = None,
        kind: str = "main",
    ) -> None:
        self.tp = tp
        self.kind = kind
        """"main" (a topic of the join), "tier" (a retry tier), "redrive" or "delay"."""
        self.held: set[bytes] = set()
        """KEY_ORDERED main partitions: keys held busy because one of their records is in a retry tier."""
        self.timers: list[tuple[int, int]] = []
        """Delay partitions: heap of (due, offset) of records not delivered yet (the timer index)."""
        self.scanned = committed
        """Delay partitions: records below this offset are in ``timers`` (or done)."""
        self.origin = origin
        """For a retry tier or redrive topic: the topic its records came from; None for a topic of the join."""
        self.not_before = 0
        """Retry path: the due time of the record at ``next_offset`` when it was not due yet."""
        self.partition = partition
        self.epoch = 0
        self.floor = AckFloor(committed)
        self.committed = committed
        self.next_offset = committed
        self.in_flight = 0
        self.owner: Session | None = None
        self.retry: dict[int, int] = {}
        """PARTITION_ORDERED: offset -> deliveries made, for records to deliver again."""
        self.redelivering = 0
        """PARTITION_ORDERED: records out that are redeliveries (they block fresh ones)."""
        keyed = mode is DeliveryMode.KEY_ORDERED and origin is None
        self.keys: KeyScheduler | None = KeyScheduler() if keyed else None
        self.spans: tuple[int, list[int]] = (-1, [])
        """(base offset, record_spans) of the stored batch cut last: a big batch is cut
        at the in-flight limit many times and walked once."""

        def listener() -> None:
            owner = self.owner
            if owner is not None:
                owner.wake()

        self.listener = listener
        partition.add_listener(listener)

    def reset(self, offset: int) -> None:
        """Start over at ``offset`` (a seek or an external commit); caller withdrew the leases."""
        self.epoch += 1
        self.floor.reset(offset)
        self.committed = offset
        self.next_offset = offset
        self.in_flight = 0
        self.timers.clear()
        self.scanned = offset
        self.retry.clear()
        self.redelivering = 0
        if self.keys is not None:
            self.keys.clear()

    def detach(self) -> None:
        self.partition.remove_listener(self.listener)

    @property
    def source_topic(self) -> str:
        """The topic the group reads these records for: the origin of a retry topic, else its own."""
        return self.origin or self.tp.topic


class _Lease:
    """Delivery ids ``[first_id, first_id + count)`` of one session, out for processing."""

    __slots__ = ("first_id", "count", "part", "epoch", "offsets", "attempt", "deadline", "entries", "blocking")

    def __init__(
        self,
        first_id: int,
        part: _Part,
        offsets: range | list[int],
        attempt: int,
        deadline: int,
        entries: list[Waiting] | None,
    ) -> None:
        self.first_id = first_id
        self.count = len(offsets)
        self.part = part
        self.epoch = part.epoch
        self.offsets = offsets
        self.attempt = attempt
        self.deadline = deadline
        self.entries = entries
        self.blocking = False
        """A PARTITION_ORDERED redelivery: counted in ``part.redelivering`` while out."""

    @property
    def end_id(self) -> int:
        return self.first_id + self.count


class _GroupState:
    __slots__ = (
        "name", "lock", "commit_lock", "membership", "sessions", "parts", "topics", "mode", "guarantee",
        "policies",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.commit_lock = threading.Lock()
        self.membership = Group.new(name)
        self.sessions: dict[str, Session] = {}
        self.parts: dict[TopicPartition, _Part] = {}
        self.topics: tuple[str, ...] = ()
        self.mode: DeliveryMode | None = None
        self.guarantee: Guarantee | None = None
        self.policies: dict[str, RetryPolicy] = {}
        """Retry policy per topic of the group (a copy of the PolicyStore's)."""


# -- a member ----------------------------------------------------------------------------------------


class Session:
    """One member of a group, as seen through its Consume stream.

    The servicer calls ``next_outbound`` from its sending thread and ``ack``,
    ``nack``, ``extend``, ``heartbeat``, ``leave`` and ``close`` from its
    receiving thread.  All of them are thread-safe.
    """

    def __init__(
        self, coordinator: "GroupCoordinator", group: _GroupState, options: ConsumeOptions, peer: str, now: int
    ) -> None:
        self._coordinator = coordinator
        self._group = group
        self.options = options
        self.peer = peer
        self.member_id = f"{options.client_id or 'member'}-{uuid.uuid4().hex[:12]}"
        self.joined_ms = now
        self.last_seen_ms = now
        self._leases: dict[int, _Lease] = {}
        self._starts: list[int] = []
        """First ids of leases, sorted; may hold ids of leases already gone."""
        self._deadlines: list[tuple[int, int]] = []
        """Heap of (deadline, first id); entries whose lease is gone or changed are skipped."""
        self._next_id = 1
        self.in_flight = 0
        self._owned: list[_Part] = []
        self._assignment: tuple[TopicPartition, ...] = ()
        self._rr = 0
        self._first_sent = False
        self._assignment_dirty = True
        self._stale: list[tuple[int, int]] = []
        self._errors: list[LogstoreError] = []
        self._committed: dict[TopicPartition, int] = {}
        self._forwards: list[tuple[_Lease, str, bool]] = []
        """Failed leases to copy to a retry tier or the DLQ once the group lock is released."""
        self._wake = threading.Condition(threading.Lock())
        self._woken = False
        self.ended = False
        self.end_error: LogstoreError | None = None
        """Why the broker ended the session (None: the member left or the stream closed)."""

    # -- waking -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Make a waiting ``next_outbound`` look again."""
        with self._wake:
            self._woken = True
            self._wake.notify()

    # -- the sending side ---------------------------------------------------------------------

    def next_outbound(self, timeout_s: float) -> Outbound | None:
        """The next response to send, waiting up to ``timeout_s``; None if there is none
        yet or the session ended (check ``ended``)."""
        deadline = time.monotonic() + timeout_s
        group = self._group
        while True:
            with group.lock:
                if self.ended:
                    return None
                out = self._build_locked(self._coordinator.clock())
            if out is not None:
                if out.deliveries and group.guarantee is Guarantee.AT_MOST_ONCE:
                    self._coordinator._commit_group(group)  # durable before the records leave
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._wake:
                if not self._woken:
                    self._wake.wait(remaining)
                self._woken = False

    def _build_locked(self, now: int) -> Outbound | None:
        group = self._group
        deliveries = self._fill_locked(now)
        if (
            self._first_sent
            and not self._assignment_dirty
            and not deliveries
            and not self._stale
            and not self._errors
            and not self._committed
        ):
            return None
        if self._assignment_dirty:
            for part in self._owned:  # where each partition it now owns stands
                self._committed.setdefault(part.tp, part.committed)
            member = next((m for m in group.membership.members if m.member_id == self.member_id), None)
            if member is not None and member.state is MemberState.JOINING:
                group.membership = group.membership.acknowledge(self.member_id, group.membership.generation, now)
        out = Outbound(
            self.member_id,
            group.membership.generation,
            self._assignment,
            deliveries,
            self._stale,
            sorted(self._committed.items()),
            self._errors,
        )
        self._first_sent = True
        self._assignment_dirty = False
        self._stale = []
        self._errors = []
        self._committed = {}
        return out

    def _fill_locked(self, now: int) -> list[Delivery]:
        """Hand out records of owned partitions up to the in-flight limit and a byte budget."""
        owned = self._owned
        credit = self.options.max_in_flight - self.in_flight
        if credit <= 0 or not owned:
            return []
        out: list[Delivery] = []
        budget = RESPONSE_BYTES
        n = len(owned)
        start = self._rr
        self._rr = (start + 1) % n
        for k in range(n):
            if credit <= 0 or budget <= 0:
                break
            part = owned[(start + k) % n]
            try:
                got, used = self._fill_part_locked(part, credit, budget, now, out)
            except OffsetOutOfRange as exc:
                self._skip_to_start_locked(part, exc.start)
                self.wake()  # look again at once from the new start
                continue
            except (LogClosed, NotFound):
                continue  # the topic is going away; the timer ends the session
            credit -= got
            budget -= used
        if out and self._group.guarantee is Guarantee.AT_MOST_ONCE:
            for d in out:  # nothing is leased: every record counts as done at once
                self._finish_at_most_once_locked(d)
        return out

    def _skip_to_start_locked(self, part: _Part, log_start: int) -> None:
        _LOGGER.warning(
            "group %s: %s below the log start %d (retention deleted it); continuing there",
            self._group.name, part.tp, log_start,
        )
        part.next_offset = max(part.next_offset, log_start)
        part.floor.skip_to(log_start)
        for offset in [o for o in part.retry if o < log_start]:
            del part.retry[offset]
        self._coordinator._mark_dirty(self._group)

    def _fill_part_locked(self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]) -> tuple[int, int]:
        if part.not_before > now and part.kind == "main":
            return 0, 0  # a delayed record could not be set aside; try again later
        got = used = 0
        if part.retry:
            got, used = self._redeliver_locked(part, credit, budget, now, out)
            if self._group.mode is not DeliveryMode.UNORDERED or got >= credit or used >= budget:
                return got, used
        credit, budget = credit - got, budget - used
        if part.kind == "delay":
            more, size = self._fill_delay_locked(part, credit, budget, now, out)
        elif part.origin is not None:
            more, size = self._fill_retry_path_locked(part, credit, budget, now, out)
        elif part.keys is not None:
            more, size = self._fill_keyed_locked(part, credit, budget, now, out)
        else:
            more, size = self._fill_fresh_locked(part, credit, budget, now, out)
        return got + more, used + size

    def _redeliver_locked(self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]) -> tuple[int, int]:
        """Records of ``part.retry``, lowest offsets first; in PARTITION_ORDERED mode they
        block the partition's fresh records until acked."""
        blocking = self._group.mode is not DeliveryMode.UNORDERED
        offsets = sorted(part.retry)[:credit]
        framed = read_framed(part.partition, offsets)
        kept, size = [], 0
        for o in offsets:  # keep to the byte budget (at least one record)
            if o in framed:
                size += len(framed[o][0])
                if kept and size > budget:
                    break
            kept.append(o)
        offsets = kept
        got = used = 0
        pairs = [(o, (part.retry[o], framed[o][1])) for o in offsets if o in framed]
        for (attempt, append_time), run in _runs_by_attempt(pairs):
            chunks = [framed[o][0] for o in run]
            for o in run:
                del part.retry[o]
            if blocking:
                part.redelivering += len(run)
            out.append(self._lease_locked(part, run, attempt + 1, now, chunks, None, append_time, blocking=blocking))
            got += len(run)
            used += sum(len(c) for c in chunks)
        for o in offsets:  # records that vanished (retention) are skipped
            if o not in framed and o in part.retry:
                del part.retry[o]
                part.floor.add(o, o + 1)
        return got, used

    def _fill_fresh_locked(self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]) -> tuple[int, int]:
        """Records never delivered, from ``next_offset``, as stored bytes where possible."""
        if part.redelivering or credit <= 0:
            return 0, 0
        log = part.partition.log
        offset = part.next_offset
        if offset >= log.log_end_offset:
            return 0, 0
        # Read about what the credit can take (at least one whole batch comes back anyway).
        batches = log.read(offset, min(budget, max(1 << 16, credit << 7)))
        chunks: list[bytes | memoryview] = []
        pos = offset  # the next offset not handled yet
        delivered = used = 0
        run_start, run_time = offset, 0
        for batch in batches:
            base, length, _m, _c, attrs, count, _first, max_ts = HEADER.unpack_from(batch, 0)[:8]
            skip = pos - base
            if skip >= count:
                continue
            if attrs & ATTR_DELIVERY_TIME:
                if chunks:
                    out.append(self._lease_locked(part, range(run_start, pos), 1, now, chunks, None, run_time))
                    chunks = []
                consumed, got, size = self._fill_delayed_batch_locked(part, batch, skip, credit - delivered, now, out)
                pos += consumed
                delivered += got
                used += size
                run_start, run_time = pos, 0
                if consumed < count - skip or delivered >= credit or used >= budget:
                    break
                continue
            append_time = max_ts if attrs & ATTR_TIMESTAMP_LOG_APPEND else 0
            if append_time != run_time and chunks:
                # Records stamped with another append time start another delivery.
                out.append(self._lease_locked(part, range(run_start, pos), 1, now, chunks, None, run_time))
                chunks, run_start = [], pos
            run_time = append_time
            want = min(count - skip, credit - delivered)
            view = memoryview(batch)
            if skip == 0 and want == count:
                chunk = view[HEADER_SIZE:length]
            else:
                cached_base, spans = part.spans
                if cached_base != base:
                    spans = record_spans(batch, HEADER_SIZE, length)
                    part.spans = (base, spans)
                chunk = view[spans[skip] : spans[skip + want]]
            chunks.append(chunk)
            pos += want
            delivered += want
            used += len(chunk)
            if delivered >= credit or used >= budget:
                break
        if chunks:
            out.append(self._lease_locked(part, range(run_start, pos), 1, now, chunks, None, run_time))
        part.next_offset = pos
        return delivered, used

    def _fill_delayed_batch_locked(
        self, part: _Part, batch: bytes, skip: int, credit: int, now: int, out: list[Delivery]
    ) -> tuple[int, int, int]:
        """A stored batch with delivery times: deliver the records that are due, set the
        others aside in the group's delay topic; return (records handled, delivered, bytes)."""
        base, length, _m, _c, _a, count = HEADER.unpack_from(batch, 0)[:6]
        spans = record_spans(batch, HEADER_SIZE, length)
        ready: list[Waiting] = []
        later: list[tuple[int, bytes, int]] = []
        i = skip
        while i < count and len(ready) < credit:
            lo, hi = spans[i], spans[i + 1]
            due = delivery_time(batch, lo, hi)
            raw = bytes(batch[lo:hi])
            if due > now:
                later.append((base + i, raw, due))
            else:
                ready.append(Waiting(base + i, None, raw))
            i += 1
        if later and not self._coordinator._set_aside_locked(self._group, part, later):
            part.not_before = now + 1000
            return 0, 0, 0
        if ready:
            out.append(self._lease_locked(part, [e.offset for e in ready], 1, now, [e.raw for e in ready], None))
        return i - skip, len(ready), sum(len(e.raw) for e in ready)

    def _fill_delay_locked(self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]) -> tuple[int, int]:
        """The group's delay topic: index new records by due time, deliver those that are due."""
        log = part.partition.log
        if part.scanned < log.log_end_offset:
            for offset, raw in iter_framed(part.partition, part.scanned):
                prov = read_provenance(raw)
                heapq.heappush(part.timers, (prov.due_ms if prov is not None else 0, offset))
                part.scanned = offset + 1
        due_now: list[int] = []
        timers = part.timers
        while timers and timers[0][0] <= now and len(due_now) < credit:
            due_now.append(heapq.heappop(timers)[1])
        part.not_before = timers[0][0] if timers else 0
        if not due_now:
            return 0, 0
        framed = read_framed(part.partition, sorted(due_now))
        entries = [Waiting(o, None, framed[o][0]) for o in sorted(framed)]
        for o in due_now:
            if o not in framed:  # gone (retention): nothing to deliver
                part.floor.add(o, o + 1)
        if not entries:
            return 0, 0
        out.append(self._lease_locked(part, [e.offset for e in entries], 1, now, [e.raw for e in entries], entries))
        return len(entries), sum(len(e.raw) for e in entries)

    def _fill_retry_path_locked(
        self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]
    ) -> tuple[int, int]:
        """A retry tier or redrive topic: records in order, each only once due."""
        if part.redelivering or (part.not_before and part.not_before > now):
            return 0, 0
        log = part.partition.log
        offset = part.next_offset
        if offset >= log.log_end_offset:
            return 0, 0
        ready: list[Waiting] = []
        used = 0
        part.not_before = 0
        for batch in log.read(offset, min(budget, 1 << 20)):
            base, length, _m, _c, _a, count = HEADER.unpack_from(batch, 0)[:6]
            if base + count <= offset:
                continue
            spans = record_spans(batch, HEADER_SIZE, length)
            for i in range(max(0, offset - base), count):
                raw = bytes(batch[spans[i] : spans[i + 1]])
                provenance = read_provenance(raw)
                due = provenance.due_ms if provenance is not None else 0
                if due > now:
                    part.not_before = due
                    break
                attempts = provenance.attempt if provenance is not None else 0
                ready.append(Waiting(base + i, record_key(raw, 0, len(raw)), raw, attempts))
                used += len(raw)
                if len(ready) >= credit or used >= budget:
                    break
            if part.not_before or len(ready) >= credit or used >= budget:
                break
        if not ready:
            return 0, 0
        part.next_offset = ready[-1].offset + 1
        run: list[Waiting] = []
        for entry in ready:
            if run and entry.attempts != run[0].attempts:
                out.append(self._retry_path_lease_locked(part, run, now))
                run = []
            run.append(entry)
        out.append(self._retry_path_lease_locked(part, run, now))
        return len(ready), used

    def _retry_path_lease_locked(self, part: _Part, run: list[Waiting], now: int) -> Delivery:
        attempt = run[0].attempts + 1
        return self._lease_locked(part, [e.offset for e in run], attempt, now, [e.raw for e in run], run)

    def _fill_keyed_locked(self, part: _Part, credit: int, budget: int, now: int, out: list[Delivery]) -> tuple[int, int]:
        keys = part.keys
        assert keys is not None
        log = part.partition.log
        while keys.waiting < LOOKAHEAD and part.next_offset < log.log_end_offset:
            offset = part.next_offset
            batches = log.read(offset, 1 << 20)
            if not batches:
                break
            stalled = False
            for batch in batches:
                base, length, _m, _c, attrs, count, _first, max_ts = HEADER.unpack_from(batch, 0)[:8]
                if base + count <= offset:
                    continue
                spans = record_spans(batch, HEADER_SIZE, length)
                append_time = max_ts if attrs & ATTR_TIMESTAMP_LOG_APPEND else 0
                adds: list[Waiting] = []
                later: list[tuple[int, bytes, int]] = []
                for i in range(max(0, offset - base), count):
                    lo, hi = spans[i], spans[i + 1]
                    raw = bytes(batch[lo:hi])
                    if attrs & ATTR_DELIVERY_TIME:
                        due = delivery_time(batch, lo, hi)
                        if due > now:
                            later.append((base + i, raw, due))
                            continue
                    adds.append(Waiting(base + i, record_key(batch, lo, hi), raw, 0, append_time))
                if later and not self._coordinator._set_aside_locked(self._group, part, later):
                    part.not_before = now + 1000
                    stalled = True
                    break
                for entry in adds:
                    keys.add(entry)
                offset = base + count
            part.next_offset = offset
            if stalled:
                break
        entries = keys.take(credit)
        if not entries:
            return 0, 0
        size = 0
        for i, entry in enumerate(entries):  # keep to the byte budget (at least one record)
            size += len(entry.raw)
            if i and size > budget:
                for back in reversed(entries[i:]):
                    keys.requeue(back)
                entries = entries[:i]
                break
        used = 0
        got = 0
        run: list[Waiting] = []
        for entry in entries:
            if run and (entry.attempts, entry.append_time) != (run[0].attempts, run[0].append_time):
                out.append(self._keyed_lease_locked(part, run, now))
                run = []
            run.append(entry)
            got += 1
            used += len(entry.raw)
        out.append(self._keyed_lease_locked(part, run, now))
        return got, used

    def _keyed_lease_locked(self, part: _Part, run: list[Waiting], now: int) -> Delivery:
        attempt = run[0].attempts + 1
        for entry in run:
            entry.attempts = attempt
        if self._group.guarantee is Guarantee.AT_MOST_ONCE:
            assert part.keys is not None
            for entry in run:  # nothing stays out: the key is free again at once
                part.keys.release(KeyScheduler.slot(entry))
        return self._lease_locked(
            part, [e.offset for e in run], attempt, now, [e.raw for e in run], run, run[0].append_time
        )

    def _lease_locked(
        self,
        part: _Part,
        offsets: range | list[int],
        attempt: int,
        now: int,
        chunks: list,
        entries: list[Waiting] | None,
        append_time: int = 0,
        *,
        blocking: bool = False,
    ) -> Delivery:
        first = self._next_id
        deadline = now + self.options.ack_deadline_ms
        count = len(offsets)
        self._next_id = first + count
        if self._group.guarantee is not Guarantee.AT_MOST_ONCE:
            lease = _Lease(first, part, offsets, attempt, deadline, entries)
            lease.blocking = blocking
            self._leases[first] = lease
            self._starts.append(first)
            heapq.heappush(self._deadlines, (deadline, first))
            self.in_flight += count
            part.in_flight += count
        contiguous = isinstance(offsets, range)
        return Delivery(
            part.tp,
            first,
            offsets[0],
            None if contiguous else tuple(offsets),
            attempt,
            deadline,
            tuple(chunks),
            count,
            append_time,
        )

    def _finish_at_most_once_locked(self, d: Delivery) -> None:
        """At-most-once: a delivered record is done at once (committed before it is sent)."""
        part = self._group.parts.get(d.tp)
        if part is None:
            return
        if d.offsets is None:
            part.floor.add(d.base_offset, d.base_offset + d.count)
        else:
            for a, b in _offset_runs(d.offsets):
                part.floor.add(a, b)

    # -- the receiving side --------------------------------------------------------------------

    def heartbeat(self) -> None:
        """A sign of life (every request is one)."""
        self.last_seen_ms = max(self.last_seen_ms, self._coordinator.clock())

    def ack(self, ranges: Iterable[tuple[int, int]]) -> None:
        """The records with these delivery ids are done."""
        self._apply(ranges, self._ack_lease_locked, "ack")

    def nack(self, ranges: Iterable[tuple[int, int]], reason: str = "", terminal: bool = False) -> None:
        """The records with these delivery ids failed: deliver them again, through the
        group's retry tiers if it has a retry policy (``terminal``: straight to its DLQ)."""
        if len(reason) > 4096:
            self.report(InvalidArgument(f"a nack reason is at most 4096 characters, got {len(reason)}"))
            reason = reason[:4096]
        self._apply(ranges, lambda lease: self._fail_lease_locked(lease, reason or "nacked", terminal), "nack")
        self._coordinator._schedule_forwards(self)

    def extend(self, ranges: Iterable[tuple[int, int]], extension_ms: int) -> None:
        """Move the deadline of these records to ``extension_ms`` from now."""
        if not isinstance(extension_ms, int) or not 1 <= extension_ms <= 600_000:
            self.report(InvalidArgument(f"extend_deadline.extension_ms must be in [1, 600000], got {extension_ms}"))
            return
        deadline = self._coordinator.clock() + extension_ms

        def extend_lease(lease: _Lease) -> None:
            lease.deadline = deadline
            heapq.heappush(self._deadlines, (deadline, lease.first_id))

        self._apply(ranges, extend_lease, "extend")

    def report(self, error: LogstoreError) -> None:
        """Send ``error`` to the member in its next response (the stream goes on)."""
        with self._group.lock:
            self._errors.append(error)
        self.wake()

    def _apply(self, ranges: Iterable[tuple[int, int]], action: Callable[[_Lease], None], verb: str) -> None:
        group = self._group
        now = self._coordinator.clock()
        notify = False
        with group.lock:
            if self.ended:
                return
            self.last_seen_ms = max(self.last_seen_ms, now)
            at_most_once = group.guarantee is Guarantee.AT_MOST_ONCE
            for first, end in _merge_runs([(a, b) for a, b in ranges if b > a]) + [(a, b) for a, b in ranges if b <= a]:
                if first < 1 or end <= first or end - 1 > MAX_ID:
                    self._errors.append(InvalidArgument(
                        f"{verb}: delivery id range [{first}, {end}) is empty or out of range; "
                        "ids start at 1 and a range's end_id is greater than its first_id"
                    ))
                    notify = True
                    continue
                if end > self._next_id:
                    self._errors.append(InvalidArgument(
                        f"{verb}: delivery ids {max(first, self._next_id)} to {end - 1} were never delivered "
                        f"on this stream (the last id delivered is {self._next_id - 1})"
                    ))
                    notify = True
                    end = self._next_id
                    if end <= first:
                        continue
                if at_most_once:
                    continue  # nothing is leased: valid ids are accepted and ignored
                pos = first
                for lease in self._overlapping_locked(first, end):
                    lo, hi = max(first, lease.first_id), min(end, lease.end_id)
                    if lo > pos:
                        self._stale.append((pos, lo))
                    action(self._carve_locked(lease, lo, hi))
                    pos = hi
                if pos < end:
                    self._stale.append((pos, end))
                notify = True
            if self._stale:
                self._stale = _merge_runs(self._stale)
        if notify:
            self.wake()

    def _overlapping_locked(self, first: int, end: int) -> list[_Lease]:
        starts = self._starts
        if len(starts) > 2 * len(self._leases) + 64:
            starts[:] = sorted(self._leases)
        i = max(0, bisect.bisect_right(starts, first) - 1)
        found = []
        leases = self._leases
        while i < len(starts) and starts[i] < end:
            lease = leases.get(starts[i])
            if lease is not None and lease.end_id > first and lease.first_id == starts[i]:
                found.append(lease)
            i += 1
        return found

    def _carve_locked(self, lease: _Lease, lo: int, hi: int) -> _Lease:
        """Split ``lease`` so that a lease covers exactly ids ``[lo, hi)``; return that one."""
        if lo > lease.first_id:
            lease = self._split_locked(lease, lo)
        if hi < lease.end_id:
            self._split_locked(lease, hi)
        return lease

    def _split_locked(self, lease: _Lease, at: int) -> _Lease:
        """Cut ``lease`` at id ``at``: it keeps the ids below, a new lease (returned) the rest."""
        k = at - lease.first_id
        right = _Lease.__new__(_Lease)
        right.first_id = at
        right.count = lease.count - k
        right.part = lease.part
        right.epoch = lease.epoch
        right.offsets = lease.offsets[k:]
        right.attempt = lease.attempt
        right.deadline = lease.deadline
        right.entries = None if lease.entries is None else lease.entries[k:]
        right.blocking = lease.blocking
        lease.count = k
        lease.offsets = lease.offsets[:k]
        if lease.entries is not None:
            lease.entries = lease.entries[:k]
        self._leases[at] = right
        bisect.insort(self._starts, at)
        heapq.heappush(self._deadlines, (right.deadline, at))
        return right

    def _drop_locked(self, lease: _Lease) -> None:
        del self._leases[lease.first_id]
        self.in_flight -= lease.count
        part = lease.part
        part.in_flight -= lease.count
        if lease.blocking:
            part.redelivering -= lease.count

    def _fail_lease_locked(self, lease: _Lease, reason: str, terminal: bool) -> None:
        """A delivery failed (nack or deadline): retry tier or DLQ under a retry policy, else in place."""
        part = lease.part
        if part.source_topic in self._group.policies and part.epoch == lease.epoch:
            self._drop_locked(lease)
            self._forwards.append((lease, reason, terminal))
            return
        if terminal:
            self._errors.append(FailedPrecondition(
                f"a terminal nack needs a retry policy: group {self._group.name!r} has none for topic "
                f"{part.source_topic!r}, so the record is delivered again; set one to get a dead-letter topic"
            ))
        self._retry_lease_locked(lease)

    def _release_origin_keys_locked(self, part: _Part, lease: _Lease) -> None:
        """A record of the retry path is done (acked or dead-lettered): free its key in the
        KEY_ORDERED partition it came from, so the key's later records may go."""
        origin = self._group.parts.get(TopicPartition(part.source_topic, part.tp.partition))
        if origin is None or origin.keys is None:
            return
        entries = lease.entries
        if entries is None:
            framed = read_framed(part.partition, list(lease.offsets))
            keys = [record_key(raw, 0, len(raw)) for raw, _t in framed.values()]
        else:
            keys = [e.key for e in entries]
        for key in keys:
            if key is not None and key in origin.held:
                origin.held.discard(key)
                origin.keys.release(key)
        if origin.owner is not None:
            origin.owner.wake()

    def _ack_lease_locked(self, lease: _Lease) -> None:
        self._drop_locked(lease)
        part = lease.part
        if part.kind == "tier" and self._group.mode is DeliveryMode.KEY_ORDERED:
            self._release_origin_keys_locked(part, lease)
        offsets = lease.offsets
        if isinstance(offsets, range):
            part.floor.add(offsets.start, offsets.stop)
        else:
            for a, b in _offset_runs(offsets):
                part.floor.add(a, b)
        if lease.entries is not None and part.keys is not None:
            for entry in lease.entries:
                part.keys.release(KeyScheduler.slot(entry))
        if part.floor.floor > part.committed:
            self._coordinator._mark_dirty(self._group)

    def _retry_lease_locked(self, lease: _Lease) -> None:
        """Give the lease's records back for redelivery (nack, expiry, revocation)."""
        self._drop_locked(lease)
        part = lease.part
        if part.keys is not None:
            assert lease.entries is not None
            for entry in reversed(lease.entries):
                part.keys.requeue(entry)
        else:
            for offset in lease.offsets:
                part.retry[offset] = lease.attempt
        owner = part.owner
        if owner is not None and owner is not self:
            owner.wake()

    def _withdraw_part_locked(self, part: _Part, *, redeliver: bool) -> None:
        """Take back every lease of ``part``: redeliver its records, or (a seek) drop them."""
        for lease in [x for x in self._leases.values() if x.part is part]:
            if redeliver:
                self._retry_lease_locked(lease)
            else:
                self._drop_locked(lease)

    def _expire_locked(self, now: int) -> bool:
        """Redeliver leases whose deadline passed; True if any did."""
        heap = self._deadlines
        expired = False
        while heap and heap[0][0] <= now:
            deadline, first = heapq.heappop(heap)
            lease = self._leases.get(first)
            if lease is not None and lease.deadline == deadline:
                self._fail_lease_locked(lease, "ack deadline expired", False)
                expired = True
        if len(heap) > 4 * len(self._leases) + 64:
            self._deadlines = [(x.deadline, x.first_id) for x in self._leases.values()]
            heapq.heapify(self._deadlines)
        return expired

    # -- ending -----------------------------------------------------------------------------------

    def leave(self) -> None:
        """The member leaves the group; its unacked records go to other members."""
        self._coordinator._remove(self, None)

    def close(self) -> None:
        """The stream ended (or broke); same as ``leave`` if the session is still on."""
        self._coordinator._remove(self, None)

    def describe_locked(self) -> MemberInfo:
        return MemberInfo(
            self.member_id, self.options.client_id, self.peer, self._assignment,
            self.in_flight, self.joined_ms, self.last_seen_ms,
        )


def _is_dlq_of(topic: str, group: str) -> bool:
    """Whether ``topic`` is one of ``group``'s dead-letter topics."""
    return topic.endswith(f".{group}.dlq")


def _unforward_locked(lease: _Lease) -> None:
    """A failed lease that could not be copied to its retry tier: deliver it again in place."""
    part = lease.part
    if part.epoch != lease.epoch:
        return  # a seek withdrew it
    if part.keys is not None and lease.entries is not None:
        for entry in reversed(lease.entries):
            if part.keys.is_busy(KeyScheduler.slot(entry)):
                part.keys.requeue(entry)
    else:
        for offset in lease.offsets:
            part.retry[offset] = lease.attempt
    if part.owner is not None:
        part.owner.wake()


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    runs.sort()
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def _offset_runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs ``[a, b)`` of sorted ``offsets``."""
    runs: list[tuple[int, int]] = []
    for o in sorted(offsets):
        if runs and runs[-1][1] == o:
            runs[-1] = (runs[-1][0], o + 1)
        else:
            runs.append((o, o + 1))
    return runs


def _runs_by_attempt(items: list[tuple[int, tuple[int, int]]]) -> list[tuple[tuple[int, int], list[int]]]:
    """Group (offset, (attempts, append time)) pairs, in order, into runs of equal values."""
    out: list[tuple[tuple[int, int], list[int]]] = []
    for offset, attempts in items:
        if out and out[-1][0] == attempts:
            out[-1][1].append(offset)
        else:
            out.append((attempts, [offset]))
    return out


# -- the coordinator ----------------------------------------------------------------------------------


class GroupCoordinator:
    """Every consumer group of one broker.  See the module docstring."""

    def __init__(
        self,
        broker: Broker,
        offsets: OffsetStore,
        clock: Clock | None = None,
        *,
        timers: bool = True,
        policies: PolicyStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._broker = broker
        self._offsets = offsets
        self._policies = policies if policies is not None else PolicyStore.open(broker)
        self._rng = rng or random.Random()
        self.clock: Clock = clock or broker.clock
        self.dead_letters = DeadLetters(broker, offsets, self.clock, self._ensure_topic)
        """Listing, redriving and purging the groups' dead-letter topics."""
        self._lock = threading.Lock()
        """Guards ``_groups`` (the map only)."""
        self._groups: dict[str, _GroupState] = {}
        self._dirty: set[str] = set()
        self._dirty_cond = threading.Condition(threading.Lock())
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failing: list[Session] = []
        """Sessions with failed leases to move to the retry path (the forwarder thread's queue)."""
        self._failing_cond = threading.Condition(threading.Lock())
        self._forwarder = timers
        broker.add_deletion_listener(self._topic_deleted)
        if timers:
            for name, target in (
                ("logstore-group-timer", self._run_timer),
                ("logstore-group-commit", self._run_committer),
                ("logstore-group-forward", self._run_forwarder),
            ):
                t = threading.Thread(target=target, name=name, daemon=True)
                t.start()
                self._threads.append(t)

    # -- joining ----------------------------------------------------------------------------------

    def join(self, group: str, topics: Iterable[str], options: ConsumeOptions, peer: str = "") -> Session:
        """Add a member to ``group`` consuming ``topics``; raises if the join is refused."""
        self._check_open()
        validate_group_name(group)
        topics = tuple(topics)
        if not topics:
            raise InvalidArgument("a join needs at least one topic")
        if len(topics) > MAX_TOPICS:
            raise InvalidArgument(f"a join may name at most {MAX_TOPICS} topics, got {len(topics)}")
        if len(set(topics)) != len(topics):
            raise InvalidArgument("a join names a topic twice; list each topic once")
        for name in topics:
            if name.startswith("__"):
                raise PermissionDenied(f"topic {name!r} is internal to the broker; consumer groups cannot read it")
            validate_topic_name(name)
            self._broker.topic(name)  # NotFound
        topics = tuple(sorted(topics))
        state = self._group_state(group, create=True)
        assert state is not None
        if options.retry_policies:
            with state.lock:  # refuse a conflicting join before it changes any policy
                self._check_join_locked(state, topics, options)
        for topic, policy in options.retry_policies:
            if topic not in topics:
                raise InvalidArgument(f"a retry policy names topic {topic!r}, which the join does not consume")
            self.set_retry_policy(group, topic, policy)
        with state.commit_lock:
            with state.lock:
                if state.sessions:
                    self._check_join_locked(state, topics, options)
                elif state.mode is not options.mode or state.topics != topics or state.guarantee is not options.guarantee:
                    # Nobody is consuming: start from the committed offsets with the new settings.
                    self._flush_floors(state, holding_lock=True)
                    for part in state.parts.values():
                        part.detach()
                    state.parts = {}
                    state.topics, state.mode, state.guarantee = topics, options.mode, options.guarantee
                if not state.sessions:
                    # A topic deleted and created again has new partitions: drop state of the old ones.
                    for tp, part in list(state.parts.items()):
                        try:
                            alive = self._broker.partition(tp.topic, tp.partition) is part.partition
                        except NotFound:
                            alive = False
                        if not alive:
                            part.detach()
                            del state.parts[tp]
                state.policies = self._policies.of_group(group)
                routes = self._consumed(group, topics)
                needed = [tp for tp in routes if tp not in state.parts]
            starts = self._start_offsets(group, needed, options.start, routes)
            with state.lock:
                for tp in needed:
                    if tp not in state.parts:
                        state.parts[tp] = self._new_part(state, tp, starts[tp], routes[tp])
                self._hold_retried_keys_locked(state, needed)
                now = self.clock()
                session = Session(self, state, options, peer, now)
                state.sessions[session.member_id] = session
                if state.membership.owners():
                    state.membership = state.membership.with_partitions(state.parts)
                else:  # nobody owns anything yet: a new partition set is no rebalance
                    state.membership = replace(state.membership, partitions=frozenset(state.parts))
                state.membership = state.membership.join(session.member_id, now)
                self._apply_assignment_locked(state)
        _LOGGER.info(
            "group %s: member %s joined from %s (generation %d, %d member(s))",
            group, session.member_id, peer or "?", state.membership.generation, len(state.sessions),
        )
        return session

    @staticmethod
    def _check_join_locked(state: _GroupState, topics: tuple[str, ...], options: ConsumeOptions) -> None:
        """Refuse a join that differs from the group's live members (if it has any)."""
        if not state.sessions:
            return
        group = state.name
        if state.topics != topics:
            raise FailedPrecondition(
                f"group {group!r} is consuming topics {list(state.topics)}; every live member "
                f"must join with the same topics (got {list(topics)})"
            )
        if state.mode is not options.mode:
            assert state.mode is not None
            raise FailedPrecondition(
                f"group {group!r} uses delivery mode {state.mode.value}; join with the same mode "
                f"(got {options.mode.value})"
            )
        if state.guarantee is not options.guarantee:
            assert state.guarantee is not None
            raise FailedPrecondition(
                f"group {group!r} uses the {state.guarantee.value} guarantee; join with the same "
                f"(got {options.guarantee.value})"
            )

    def _topic_partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        out = []
        for name in topics:
            topic = self._broker.topic(name)
            out.extend(TopicPartition(name, p.index) for p in topic.partitions)
        return out

    def _consumed(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, str | None]:
        """Every partition the group reads: of its topics (origin None), and of the retry
        tiers, redrive and delay topics that exist for them (origin: the topic they serve)."""
        out: dict[TopicPartition, str | None] = {tp: None for tp in self._topic_partitions(topics)}
        names = [t.name for t in self._broker.list_topics()]
        for topic in topics:
            extra = (redrive_topic(topic, group), delay_topic(topic, group))
            for name in names:
                if parse_tier_topic(name, topic, group) is not None or name in extra:
                    for tp in self._topic_partitions([name]):
                        out[tp] = topic
        return out

    def _new_part(self, state: _GroupState, tp: TopicPartition, start: int, origin: str | None) -> _Part:
        partition = self._broker.partition(tp.topic, tp.partition)
        if origin is None:
            kind = "main"
        elif tp.topic == delay_topic(origin, state.name):
            kind = "delay"
        elif tp.topic == redrive_topic(origin, state.name):
            kind = "redrive"
        else:
            kind = "tier"
        assert state.mode is not None
        return _Part(tp, partition, start, state.mode, origin, kind)

    def _set_aside_locked(self, state: _GroupState, part: _Part, later: list[tuple[int, bytes, int]]) -> bool:
        """Copy records not due yet to the group's delay topic (durably) and count them done
        here; False (nothing done) if that failed.  Caller holds the group lock."""
        dest = delay_topic(part.tp.topic, state.name)
        now = self.clock()
        records = [
            with_provenance(raw, Provenance(part.tp.topic, part.tp.partition, offset, 0, 0, "", due, 0))
            for offset, raw, due in later
        ]
        try:
            self._ensure_topic(dest, len(self._broker.topic(part.tp.topic).partitions))
            self._broker.append(dest, part.tp.partition, encoded(records), Acks.DURABLE, append_time_ms=now)
        except LogstoreError as exc:
            _LOGGER.error("group %s: setting delayed records of %s aside failed: %s; retrying", state.name, part.tp, exc)
            return False
        for offset, _raw, _due in later:
            part.floor.add(offset, offset + 1)
        self._mark_dirty(state)
        return True

    def _hold_retried_keys_locked(self, state: _GroupState, new: list[TopicPartition]) -> None:
        """KEY_ORDERED: a key with a record in a retry tier holds its later records back.
        New retry-path partitions (after a restart) are scanned for the keys in them."""
        if state.mode is not DeliveryMode.KEY_ORDERED:
            return
        for tp in new:
            part = state.parts[tp]
            if part.kind != "tier":
                continue
            origin = state.parts.get(TopicPartition(part.origin, tp.partition))
            if origin is None or origin.keys is None:
                continue
            for _offset, raw in iter_framed(part.partition, part.next_offset):
                key = record_key(raw, 0, len(raw))
                if key is not None and not origin.keys.is_busy(key):
                    origin.keys.hold(key)
                    origin.held.add(key)

    def _start_offsets(
        self,
        group: str,
        tps: list[TopicPartition],
        start: StartPosition,
        routes: Mapping[TopicPartition, str | None] | None = None,
    ) -> dict[TopicPartition, int]:
        """Committed offsets of ``tps``; resolve and durably commit the start for those without
        (retry-path partitions always start at their earliest).  Caller holds the commit lock."""
        if not tps:
            return {}
        stored = self._offsets.fetch(group)
        known_topics = {tp.topic for tp in stored}
        result: dict[TopicPartition, int] = {}
        fresh: dict[TopicPartition, CommittedOffset] = {}
        now = self.clock()
        for tp in tps:
            log = self._broker.partition(tp.topic, tp.partition).log
            if tp in stored:
                offset = stored[tp].offset
                if log.log_start_offset <= offset <= log.log_end_offset:
                    result[tp] = offset
                    continue
                # Out of the log (retention passed it, or the topic was created again): the
                # nearest end of the log, committed at once.
                offset = min(max(offset, log.log_start_offset), log.log_end_offset)
                _LOGGER.warning(
                    "group %s: committed offset %d of %s is outside the log [%d, %d]; using %d",
                    group, stored[tp].offset, tp, log.log_start_offset, log.log_end_offset, offset,
                )
                result[tp] = offset
                fresh[tp] = CommittedOffset(offset, "reset: out of range", now)
                continue
            if start.earliest or tp.topic in known_topics or (routes is not None and routes.get(tp)):
                # A partition of a topic the group already reads was added since: all of it is new.
                offset = log.log_start_offset
            elif start.timestamp_ms is not None:
                found = log.offset_for_timestamp(start.timestamp_ms)
                offset = log.log_end_offset if found is None else found
            else:
                offset = log.log_end_offset
            result[tp] = offset
            fresh[tp] = CommittedOffset(offset, "start position", now)
        if fresh:
            self._offsets.commit(group, fresh)
        return result

    def _apply_assignment_locked(self, state: _GroupState) -> None:
        """Make partition owners match the membership's assignment; revoke moved leases first."""
        assignment = state.membership.assignment
        owner_of = {tp: mid for mid, tps in assignment.items() for tp in tps}
        for tp, part in state.parts.items():
            new_owner = state.sessions.get(owner_of.get(tp, ""))
            if part.owner is not new_owner:
                if part.owner is not None:
                    part.owner._withdraw_part_locked(part, redeliver=True)
                part.owner = new_owner
        for mid, session in state.sessions.items():
            tps = sorted(assignment.get(mid, ()))
            session._owned = [state.parts[tp] for tp in tps if tp in state.parts]
            if tuple(tps) != session._assignment or not session._first_sent:
                session._assignment = tuple(tps)
                session._assignment_dirty = True
            session.wake()

    def _remove(self, session: Session, error: LogstoreError | None) -> None:
        state = session._group
        with state.lock:
            if session.ended:
                return
            session.ended = True
            session.end_error = error
            for lease, _reason, _terminal in session._forwards:
                _unforward_locked(lease)
            session._forwards = []
            for part in list(session._owned):
                session._withdraw_part_locked(part, redeliver=True)
            for lease in list(session._leases.values()):
                session._retry_lease_locked(lease)
            del state.sessions[session.member_id]
            try:
                state.membership = state.membership.stream_broken(session.member_id)
            except (NotFound, FailedPrecondition):
                pass
            self._apply_assignment_locked(state)
        session.wake()
        _LOGGER.info(
            "group %s: member %s left%s (generation %d, %d member(s))",
            state.name, session.member_id, f": {error}" if error else "", state.membership.generation,
            len(state.sessions),
        )

    # -- the retry path ---------------------------------------------------------------------------

    def _schedule_forwards(self, session: Session) -> None:
        """Move the session's failed leases to the retry path: on the forwarder thread, so a
        nack never holds up the acks read after it (at once when there is no thread)."""
        if not self._forwarder:
            self._run_forwards(session)
            return
        with self._failing_cond:
            if session not in self._failing:
                self._failing.append(session)
                self._failing_cond.notify()

    def _run_forwarder(self) -> None:
        while not self._closed.is_set():
            with self._failing_cond:
                while not self._failing and not self._closed.is_set():
                    self._failing_cond.wait(0.5)
                sessions, self._failing = self._failing, []
            for session in sessions:
                try:
                    self._run_forwards(session)
                except Exception:  # noqa: BLE001 - _run_forwards already puts records back on errors
                    _LOGGER.exception("moving failed records of %s to the retry path failed", session.member_id)

    def _run_forwards(self, session: Session) -> None:
        """Copy the session's failed leases to their retry tier or DLQ (durably), then count
        them done in their partition: a crash in between gives a duplicate, never a loss."""
        state = session._group
        with state.lock:
            forwards, session._forwards = session._forwards, []
        if not forwards:
            return
        now = self.clock()
        appends: dict[tuple[str, int], list[bytes]] = {}
        counts: dict[str, int] = {}
        done: list[tuple[_Lease, bool]] = []
        try:
            # One read per partition for all its failed records (each stored batch walked once).
            wanted: dict[_Part, list[int]] = {}
            for lease, _reason, _terminal in forwards:
                if lease.entries is None:
                    wanted.setdefault(lease.part, []).extend(lease.offsets)
            stored = {part: read_framed(part.partition, offsets) for part, offsets in wanted.items()}
            for lease, reason, terminal in forwards:
                part = lease.part
                source = part.source_topic
                policy = state.policies.get(source)
                if policy is None:
                    raise FailedPrecondition(f"the retry policy of {source!r} was removed")
                if lease.entries is not None:
                    raws = [(e.offset, e.raw) for e in lease.entries]
                else:
                    framed = stored[part]
                    raws = [(o, framed[o][0]) for o in lease.offsets if o in framed]
                dead = terminal or lease.attempt >= policy.max_attempts
                for offset, raw in raws:
                    old = read_provenance(raw) if part.origin is not None else None
                    origin = (old.origin_topic, old.origin_partition, old.origin_offset) if old else (
                        part.tp.topic, part.tp.partition, offset)
                    first_failure = old.first_failure_ms if old and old.first_failure_ms else now
                    if dead:
                        dest = dlq_topic(source, state.name)
                        prov = Provenance(*origin, lease.attempt, first_failure, reason, 0, now)
                    else:
                        dest = tier_topic(source, state.name, policy.delay_before(lease.attempt + 1))
                        due = policy.due_ms(lease.attempt + 1, now, self._rng)
                        prov = Provenance(*origin, lease.attempt, first_failure, reason, due, 0)
                    appends.setdefault((dest, part.tp.partition), []).append(with_provenance(raw, prov))
                counts[source] = len(self._broker.topic(source).partitions)
                done.append((lease, dead))
            for (dest, index), records in appends.items():
                source_count = max(counts.values())
                self._ensure_topic(dest, source_count)
                self._broker.append(dest, index, encoded(records), Acks.DURABLE, append_time_ms=now)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the records must not be lost
            _LOGGER.error("group %s: moving failed records to the retry path failed (%s); delivering them "
                          "again in place", state.name, exc, exc_info=not isinstance(exc, LogstoreError))
            with state.lock:
                for lease, _reason, _terminal in forwards:
                    _unforward_locked(lease)
            return
        with state.lock:
            for lease, dead in done:
                part = lease.part
                if part.epoch != lease.epoch:
                    continue
                if not dead and part.keys is not None and lease.entries is not None:
                    for entry in lease.entries:  # the key waits for its record in the retry tier
                        if entry.key is not None and part.keys.is_busy(entry.key):
                            part.held.add(entry.key)
                offsets = lease.offsets
                for a, b in (_offset_runs(offsets) if not isinstance(offsets, range) else [(offsets.start, offsets.stop)]):
                    part.floor.add(a, b)
                if dead and state.mode is DeliveryMode.KEY_ORDERED:
                    if part.keys is not None and lease.entries is not None:
                        for entry in lease.entries:
                            slot = KeyScheduler.slot(entry)
                            part.held.discard(entry.key)
                            if part.keys.is_busy(slot):
                                part.keys.release(slot)
                    elif part.kind == "tier":
                        session._release_origin_keys_locked(part, lease)
                if part.owner is not None:
                    part.owner.wake()
            self._mark_dirty(state)

    def _ensure_topic(self, name: str, partitions: int) -> None:
        """Create a retry-path topic, or grow it to ``partitions``."""
        try:
            self._broker.create_topic(name, partitions, self._broker.config.topic_defaults)
        except AlreadyExists:
            if len(self._broker.topic(name).partitions) < partitions:
                self._broker.create_partitions(name, partitions)

    def set_retry_policy(self, group: str, topic: str, policy: RetryPolicy | None) -> None:
        """Store (None: clear) the retry policy of ``group`` for ``topic``, durably, and create
        its retry tiers, dead-letter and redrive topics."""
        validate_group_name(group)
        if isinstance(topic, str) and topic.startswith("__"):
            raise PermissionDenied(f"topic {topic!r} is internal to the broker; consumer groups cannot read it")
        validate_topic_name(topic)
        count = len(self._broker.topic(topic).partitions)  # NotFound
        if policy is not None:
            policy.check_names(topic, group)
            for other_group, other_topic in self._policies.pairs():
                if (other_group, other_topic) != (group, topic) and f"{other_topic}.{other_group}" == f"{topic}.{group}":
                    raise FailedPrecondition(
                        f"group {other_group!r} on topic {other_topic!r} already uses the retry topics "
                        f"{topic}.{group}.*; rename the group (names containing '.' can spell the same prefix)"
                    )
            for delay in policy.tier_delays():
                self._ensure_topic(tier_topic(topic, group, delay), count)
            self._ensure_topic(dlq_topic(topic, group), count)
            self._ensure_topic(redrive_topic(topic, group), count)
        self._policies.set(group, topic, policy)
        state = self._group_state(group, create=True)
        assert state is not None
        with state.lock:
            state.policies = self._policies.of_group(group)
            topics = state.topics if state.sessions else ()
        if topics:
            self._follow_topics(state, topics)
        _LOGGER.info("group %s: retry policy of %s set to %s", group, topic, policy)

    def retry_policies(self, group: str) -> dict[str, RetryPolicy]:
        validate_group_name(group)
        return self._policies.of_group(group)

    # -- committing -------------------------------------------------------------------------------

    def _mark_dirty(self, state: _GroupState) -> None:
        with self._dirty_cond:
            if state.name not in self._dirty:
                self._dirty.add(state.name)
                self._dirty_cond.notify()

    def _run_committer(self) -> None:
        while not self._closed.is_set():
            with self._dirty_cond:
                while not self._dirty and not self._closed.is_set():
                    self._dirty_cond.wait(0.5)
                names, self._dirty = self._dirty, set()
            for name in sorted(names):
                state = self._group_state(name)
                if state is None:
                    continue
                try:
                    self._commit_group(state)
                except LogstoreError as exc:
                    if not self._closed.is_set():
                        _LOGGER.error("group %s: committing offsets failed: %s; will retry", name, exc)
                        self._mark_dirty(state)
                        time.sleep(0.1)
            self._closed.wait(COMMIT_INTERVAL_S)

    def flush(self, group: str | None = None) -> None:
        """Commit now what the committer thread would commit soon: for ``group``, or all groups."""
        with self._lock:
            states = [self._groups[group]] if group in self._groups else [] if group else list(self._groups.values())
        for state in states:
            self._commit_group(state)

    def _commit_group(self, state: _GroupState) -> None:
        """Write every floor that passed its committed offset, as one durable batch."""
        with state.commit_lock:
            self._flush_floors(state, holding_lock=False)

    def _flush_floors(self, state: _GroupState, *, holding_lock: bool) -> None:
        """The body of ``_commit_group``; caller holds ``commit_lock``, and the group lock
        if ``holding_lock``."""

        def collect() -> dict[TopicPartition, tuple[int, int]]:
            return {
                tp: (part.floor.floor, part.epoch)
                for tp, part in state.parts.items()
                if part.floor.floor > part.committed
            }

        def record(todo: dict[TopicPartition, tuple[int, int]]) -> None:
            for tp, (offset, epoch) in todo.items():
                part = state.parts.get(tp)
                if part is None or part.epoch != epoch or offset <= part.committed:
                    continue
                part.committed = offset
                if part.owner is not None:
                    part.owner._committed[tp] = offset
                    part.owner.wake()

        if holding_lock:
            todo = collect()
        else:
            with state.lock:
                todo = collect()
        if not todo:
            return
        now = self.clock()
        self._offsets.commit(state.name, {tp: CommittedOffset(off, "", now) for tp, (off, _e) in todo.items()})
        if holding_lock:
            record(todo)
        else:
            with state.lock:
                record(todo)

    # -- timers -------------------------------------------------------------------------------------

    def _run_timer(self) -> None:
        while not self._closed.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the timer must survive a bug in one group
                _LOGGER.exception("group timer tick failed")

    def tick(self, now: int | None = None) -> None:
        """Expire deadlines and silent members, follow topics that grew or vanished."""
        now = self.clock() if now is None else now
        with self._lock:
            states = list(self._groups.values())
        for state in states:
            doomed: list[tuple[Session, LogstoreError]] = []
            with state.lock:
                if not state.sessions:
                    continue
                for part in state.parts.values():
                    if part.not_before and part.not_before <= now and part.owner is not None:
                        part.owner.wake()
                for session in state.sessions.values():
                    if now >= session.last_seen_ms + session.options.session_timeout_ms:
                        doomed.append((session, FailedPrecondition(
                            f"member {session.member_id} sent nothing for {session.options.session_timeout_ms} ms "
                            "(session_timeout_ms) and was removed from the group; join again"
                        )))
                    elif session._expire_locked(now):
                        session.wake()
                topics = state.topics
            with state.lock:
                failing = [x for x in state.sessions.values() if x._forwards]
            for session in failing:
                self._schedule_forwards(session)
            for session, error in doomed:
                self._remove(session, error)
            self._follow_topics(state, topics)

    def _topic_deleted(self, topic: str) -> None:
        """End the members reading ``topic`` (NOT_FOUND) and forget its partitions' state."""
        with self._lock:
            states = list(self._groups.values())
        for state in states:
            with state.lock:
                sessions = list(state.sessions.values()) if topic in state.topics else []
            for session in sessions:
                self._remove(session, NotFound(f"topic {topic!r} of group {state.name!r} was deleted"))
            with state.commit_lock, state.lock:
                for tp in [tp for tp in state.parts if tp.topic == topic]:
                    state.parts.pop(tp).detach()

    def _follow_topics(self, state: _GroupState, topics: tuple[str, ...]) -> None:
        try:
            current = self._consumed(state.name, topics)
        except NotFound as exc:
            with state.lock:
                sessions = list(state.sessions.values())
            for session in sessions:
                self._remove(session, NotFound(f"a topic of group {state.name!r} was deleted: {exc}"))
            return
        with state.lock:
            new = [tp for tp in current if tp not in state.parts]
        if not new:
            return
        with state.commit_lock:
            starts = self._start_offsets(state.name, new, StartPosition(earliest=True), current)
            with state.lock:
                for tp in new:
                    if tp not in state.parts and state.mode is not None:
                        state.parts[tp] = self._new_part(state, tp, starts[tp], current[tp])
                self._hold_retried_keys_locked(state, [tp for tp in new if tp in state.parts])
                state.membership = state.membership.with_partitions(state.parts)
                self._apply_assignment_locked(state)
        _LOGGER.info("group %s: %d new partition(s) of its topics; rebalanced", state.name, len(new))

    # -- offsets and admin ----------------------------------------------------------------------------

    def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, CommittedOffset]) -> None:
        """Store offsets for a group whose members commit themselves (no live Consume members)."""
        validate_group_name(group)
        state = self._group_state(group, create=True)
        assert state is not None
        with state.commit_lock:
            with state.lock:
                if state.sessions:
                    raise FailedPrecondition(
                        f"group {group!r} has {len(state.sessions)} member(s) on Consume streams; the broker "
                        "commits for them as they ack; use SeekGroup to move the group"
                    )
            self._offsets.commit(group, offsets)
            with state.lock:
                for tp, committed in offsets.items():
                    part = state.parts.get(tp)
                    if part is not None:
                        part.reset(committed.offset)

    def fetch_committed(self, group: str, topics: Iterable[str] = ()) -> dict[TopicPartition, CommittedOffset]:
        validate_group_name(group)
        wanted = set(topics)
        for name in wanted:
            validate_topic_name(name)
        stored = self._offsets.fetch(group)
        return {tp: c for tp, c in stored.items() if not wanted or tp.topic in wanted}

    def seek(
        self, group: str, topic: str, target: SeekTarget, partitions: Iterable[int] = ()
    ) -> dict[TopicPartition, int]:
        """Move the group's committed offsets of ``topic`` (all or some partitions) at once."""
        validate_group_name(group)
        if isinstance(topic, str) and topic.startswith("__"):
            raise PermissionDenied(f"topic {topic!r} is internal to the broker; consumer groups cannot read it")
        validate_topic_name(topic)
        wanted = list(partitions)
        if len(set(wanted)) != len(wanted):
            raise InvalidArgument("a seek lists a partition twice; list each once")
        t = self._broker.topic(topic)
        chosen = [t.partition(p) for p in wanted] if wanted else list(t.partitions)
        state = self._group_state(group, create=True)
        assert state is not None
        with state.commit_lock:
            targets: dict[TopicPartition, int] = {}
            for p in chosen:
                log = p.log
                start, end = log.log_start_offset, log.log_end_offset
                if target.earliest:
                    offset = start
                elif target.latest:
                    offset = end
                elif target.offset is not None:
                    offset = min(max(target.offset, start), end)
                else:
                    found = log.offset_for_timestamp(target.timestamp_ms)
                    offset = end if found is None else found
                targets[TopicPartition(topic, p.index)] = offset
            now = self.clock()
            self._offsets.commit(group, {tp: CommittedOffset(o, "seek", now) for tp, o in targets.items()})
            with state.lock:
                for tp, offset in targets.items():
                    part = state.parts.get(tp)
                    if part is None:
                        continue
                    if part.owner is not None:
                        part.owner._withdraw_part_locked(part, redeliver=False)
                    part.reset(offset)
                    if part.owner is not None:
                        part.owner._committed[tp] = offset
                        part.owner.wake()
        _LOGGER.info("group %s: seek of %s to %s", group, topic, target)
        return dict(sorted(targets.items()))

    def delete_group(self, group: str) -> None:
        validate_group_name(group)
        state = self._group_state(group)
        if state is not None:
            with state.commit_lock, state.lock:
                if state.sessions:
                    raise FailedPrecondition(
                        f"group {group!r} has {len(state.sessions)} member(s) consuming; stop them before deleting it"
                    )
                with self._lock:
                    self._groups.pop(group, None)
                for part in state.parts.values():
                    part.detach()
                state.parts = {}
        try:
            self._offsets.delete_group(group)
        except NotFound:
            if state is None:
                raise NotFound(f"consumer group {group!r} does not exist (no committed offsets, no members)") from None

    def list_groups(self) -> list[GroupSummary]:
        names = set(self._offsets.groups())
        with self._lock:
            states = dict(self._groups)
        names |= {n for n, s in states.items() if s.sessions}
        out = []
        for name in sorted(names):
            topics = {tp.topic for tp in self._offsets.fetch(name) if not _is_dlq_of(tp.topic, name)}
            members = 0
            state = states.get(name)
            if state is not None:
                with state.lock:
                    members = len(state.sessions)
                    if members:
                        topics |= set(state.topics)
            out.append(GroupSummary(name, members, tuple(sorted(topics))))
        return out

    def describe_group(self, group: str) -> GroupDescription:
        validate_group_name(group)
        # The cursors of the group's dead-letter topics are stored as committed offsets too
        # (see deadletters.py); they are no consumption progress, so they are left out.
        stored = {tp: c for tp, c in self._offsets.fetch(group).items() if not _is_dlq_of(tp.topic, group)}
        state = self._group_state(group)
        members: tuple[MemberInfo, ...] = ()
        owners: dict[TopicPartition, tuple[str, int]] = {}
        generation = 0
        mode = guarantee = None
        tps = set(stored)
        if state is not None:
            with state.lock:
                generation = state.membership.generation
                members = tuple(s.describe_locked() for _, s in sorted(state.sessions.items()))
                if state.sessions:
                    mode, guarantee = state.mode, state.guarantee
                    tps |= set(state.parts)
                for tp, part in state.parts.items():
                    owners[tp] = (part.owner.member_id if part.owner else "", part.in_flight)
        if not tps and not members:
            raise NotFound(f"consumer group {group!r} does not exist (no committed offsets, no members)")
        progress = []
        for tp in sorted(tps):
            try:
                log = self._broker.partition(tp.topic, tp.partition).log
                end, start = log.log_end_offset, log.log_start_offset
            except NotFound:
                end = start = 0
            committed = stored[tp].offset if tp in stored else -1
            lag = max(0, end - (committed if committed >= 0 else start))
            owner, in_flight = owners.get(tp, ("", 0))
            progress.append(PartitionProgress(tp, committed, end, lag, owner, in_flight))
        return GroupDescription(group, generation, mode, guarantee, members, tuple(progress))

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """End every session (UNAVAILABLE), commit what was acked, stop the threads."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._dirty_cond:
            self._dirty_cond.notify_all()
        with self._failing_cond:
            self._failing_cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            states = list(self._groups.values())
        for state in states:
            with state.lock:
                sessions = list(state.sessions.values())
            for session in sessions:
                self._remove(session, LogClosed("the broker is shutting down; join again after it restarts"))
            try:
                self._commit_group(state)
            except LogstoreError as exc:
                _LOGGER.error("group %s: final commit failed: %s", state.name, exc)
            with state.lock:
                for part in state.parts.values():
                    part.detach()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise LogClosed("the broker is shutting down; join again after it restarts")

    def _group_state(self, name: str, create: bool = False) -> _GroupState | None:
        with self._lock:
            state = self._groups.get(name)
            if state is None and create:
                state = self._groups[name] = _GroupState(name)
            return state
