"""The group coordinator: server-managed consumer groups, one member per Consume stream.

The coordinator owns every consumer group's live state: its members
(``Session``), the assignment of partitions to members (``membership.Group``
with ``assignment.assign``: balanced and sticky), the records out for
processing (leases), and the committed offsets (``offsets.OffsetStore``).
The gRPC servicer turns one Consume stream into one ``Session`` and does
nothing else.

How a member's records are delivered, leased and acked is described in
``session.py``.

The retry path is here too: a forwarder thread copies failed leases, with
provenance headers, to a retry tier or the dead-letter topic of the group's
retry policy (durably, before the original counts as done), and records not
yet due for delivery are set aside in the group's delay topic the same way.
Dead letters themselves are listed, redriven and purged by ``deadletters.py``.

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

import logging
import random
import threading
import time
from dataclasses import replace
from typing import Callable, Iterable, Mapping, TypeVar

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Acks, Broker, ProduceResult
from logstore.broker.idempotence import ProducerStamp
from logstore.broker.transact import produce_and_commit
from logstore.broker.groupvalues import (
    ConsumeOptions,
    Delivery,
    DeliveryMode,
    GroupDescription,
    GroupSummary,
    Guarantee,
    MemberInfo,
    Outbound,
    PartitionProgress,
    SeekTarget,
    StartPosition,
)
from logstore.broker.session import (
    LOOKAHEAD,
    RESPONSE_BYTES,
    Session,
    _GroupState,
    _is_dlq_of,
    _Lease,
    _offset_runs,
    _Part,
    _unforward_locked,
)
from logstore.broker.keyorder import KeyScheduler
from logstore.broker.names import validate_group_name, validate_topic_name
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.broker.policies import PolicyStore
from logstore.broker.provenance import Provenance, read_provenance, with_provenance
from logstore.broker.stored import encoded, iter_framed, read_framed
from logstore.broker.retry import RetryPolicy, delay_topic, dlq_topic, parse_tier_topic, redrive_topic, tier_topic
from logstore.broker.deadletters import DeadLetters
from logstore.clock import Clock
from logstore.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    LogstoreError,
    NotFound,
    PermissionDenied,
)
from logstore.storage.records import EncodedRecords, record_key

_LOGGER = logging.getLogger(__name__)

_T = TypeVar("_T")

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
    "RESPONSE_BYTES",
]

MAX_TOPICS = 100
TICK_S = 0.025
COMMIT_INTERVAL_S = 0.02
"""The committer waits this long after writing, so one fdatasync covers the acks of 20 ms."""


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
        self._commit_for_self_committing(
            group, offsets, "use SeekGroup to move the group", lambda: self._offsets.commit(group, offsets)
        )

    def produce_and_commit(
        self,
        group: str,
        offsets: Mapping[TopicPartition, CommittedOffset],
        if_committed: Mapping[TopicPartition, int],
        topic: str,
        partition: int,
        records: EncodedRecords,
        producer: ProducerStamp | None = None,
    ) -> ProduceResult:
        """Append ``records`` and commit ``offsets`` atomically (see ``transact``), for a group
        whose members commit themselves (no live Consume members)."""
        return self._commit_for_self_committing(
            group, offsets, "so ProduceAndCommit cannot commit for it",
            lambda: produce_and_commit(
                self._broker, self._offsets, group, offsets, if_committed, topic, partition, records, producer
            ),
        )

    def _commit_for_self_committing(
        self, group: str, offsets: Mapping[TopicPartition, CommittedOffset], advice: str, commit: Callable[[], _T]
    ) -> _T:
        """Run ``commit`` for a group without live Consume members (else FailedPrecondition
        ending with ``advice``), then move the group's in-memory positions to ``offsets``."""
        validate_group_name(group)
        state = self._group_state(group, create=True)
        assert state is not None
        with state.commit_lock:
            with state.lock:
                if state.sessions:
                    raise FailedPrecondition(
                        f"group {group!r} has {len(state.sessions)} member(s) on Consume streams; the broker "
                        f"commits for them as they ack; {advice}"
                    )
            result = commit()
            with state.lock:
                for tp, committed in offsets.items():
                    part = state.parts.get(tp)
                    if part is not None:
                        part.reset(committed.offset)
        return result

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
