"""A consumer group's member (``Session``) and the per-partition delivery state it works on.

Delivery, per partition of a group (``_Part``)
----------------------------------------------
- ``next_offset``: the next record never delivered to the group.
- ``floor`` (an ``AckFloor``): the first record not acked yet; everything
  below is done.  Acks arrive in any order; the floor moves to the end of
  the contiguous acked prefix.  The coordinator's committer writes floors
  that passed ``committed`` to ``__consumer_offsets`` and tells the owner.
- Records handed out are *leases*: a run of consecutive delivery ids of one
  member mapped to offsets, an attempt number and a deadline.  Ack, nack and
  extend first cut leases at the ids given, then act on whole leases, so the
  common case (a whole delivery acked at once) costs O(1), never O(records).
- A nacked, expired or revoked lease goes back to the partition: to
  ``retry`` (offset -> attempts made; in ``PARTITION_ORDERED`` mode it blocks
  fresh delivery of the partition until every retried record is acked), or
  in ``KEY_ORDERED`` mode to the partition's ``KeyScheduler``, first in line
  for its key.  Under a retry policy a nack or an expired deadline moves the
  record to the retry path instead (the coordinator's ``_run_forwards``).
- ``PARTITION_ORDERED`` fresh deliveries are the stored record bytes, sliced
  out of stored batches without decoding.  ``KEY_ORDERED`` reads up to
  ``LOOKAHEAD`` records ahead and extracts each record's key.
- Partitions of retry tiers and redrive topics deliver each record once due;
  the delay topic is kept as a heap of due times (a durable timer index).

A delivery id is unique within its session; a lease that is gone (acked,
nacked, expired, revoked, withdrawn by a seek) makes its ids stale, so no
ack is ever applied twice.  Every method with ``_locked`` in its name
expects the group's lock (``_GroupState.lock``) to be held.

What this does not guarantee: in-flight state lives in memory only, and a
member's deadline is per delivery (extending or acking part of a delivery
splits it, so each record keeps its own deadline from then on).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Callable, Iterable

from logstore.broker.ackfloor import AckFloor
from logstore.broker.assignment import TopicPartition
from logstore.broker.groupvalues import (
    ConsumeOptions,
    Delivery,
    DeliveryMode,
    Guarantee,
    MemberInfo,
    Outbound,
)
from logstore.broker.keyorder import KeyScheduler, Waiting
from logstore.broker.membership import Group, MemberState
from logstore.broker.provenance import read_provenance
from logstore.broker.stored import iter_framed, read_framed
from logstore.broker.retry import RetryPolicy
from logstore.broker.topic import Partition
from logstore.errors import (
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    LogstoreError,
    NotFound,
    OffsetOutOfRange,
)
from logstore.storage.batch import ATTR_DELIVERY_TIME, ATTR_TIMESTAMP_LOG_APPEND, HEADER, HEADER_SIZE
from logstore.storage.records import delivery_time, record_key, record_spans

if TYPE_CHECKING:
    from logstore.broker.coordinator import GroupCoordinator

_LOGGER = logging.getLogger(__name__)

__all__ = ["Session", "LOOKAHEAD", "RESPONSE_BYTES"]

LOOKAHEAD = 10_000
"""KEY_ORDERED: the most records of a partition read ahead and waiting for their key."""
RESPONSE_BYTES = 1 << 20
"""Soft cap on record bytes per response (at least one record is always sent)."""
MAX_ID = (1 << 64) - 1


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
