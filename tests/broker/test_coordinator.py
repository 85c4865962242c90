"""GroupCoordinator on a real Broker and OffsetStore in tmp_path, time driven by a ManualClock.

The coordinator runs with ``timers=False``: nothing happens in the background.
A test plays the servicer's part itself: it pulls responses with
``session.next_outbound(0)``, answers with ``ack`` / ``nack`` / ``extend``
(delivery id ranges ``[first_id, end_id)``), moves the clock and calls
``tick()``.  With no committer thread, a test that wants acked floors written
to ``__consumer_offsets`` calls ``Harness.commit_now`` (the committer's own
per-group step).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker
from logstore.broker.config import TopicConfig
from logstore.broker.coordinator import (
    RESPONSE_BYTES,
    ConsumeOptions,
    DeliveryMode,
    GroupCoordinator,
    Guarantee,
    Outbound,
    SeekTarget,
    Session,
    StartPosition,
)
from logstore.broker.offsets import OFFSETS_TOPIC, CommittedOffset, OffsetStore
from logstore.clock import ManualClock
from logstore.errors import FailedPrecondition, InvalidArgument, LogstoreError, NotFound, PermissionDenied
from logstore.storage.batch import ATTR_TIMESTAMP_LOG_APPEND, build_batch_from_encoded
from logstore.storage.records import Record, decode_records, encode_records

T0 = 1_700_000_000_000
TP = TopicPartition
EARLIEST = StartPosition(earliest=True)
KEY = DeliveryMode.KEY_ORDERED
PART = DeliveryMode.PARTITION_ORDERED


# -- the harness --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Got:
    """One record as a member received it."""

    tp: TopicPartition
    offset: int
    id: int
    attempt: int
    key: bytes | None
    value: bytes | None
    deadline: int
    append_time: int = 0


def unpack(out: Outbound) -> list[Got]:
    """Every record of a response, each with its offset and delivery id."""
    got = []
    for d in out.deliveries:
        assert d.tp in out.assignment, f"{d.tp} delivered to a member that does not own it"
        records = [r for _, r in decode_records(b"".join(bytes(c) for c in d.records))]
        offsets = d.offsets if d.offsets is not None else range(d.base_offset, d.base_offset + d.count)
        assert len(records) == len(offsets) == d.count
        assert offsets[0] == d.base_offset
        for i, (offset, record) in enumerate(zip(offsets, records)):
            got.append(
                Got(d.tp, offset, d.first_id + i, d.attempt, record.key, record.value, d.deadline_ms, d.append_time_ms)
            )
    return got


def id_ranges(got: Iterable[Got] | Iterable[int]) -> list[tuple[int, int]]:
    """Delivery ids as sorted ``[first, end)`` runs."""
    ids = sorted(g.id if isinstance(g, Got) else g for g in got)
    runs: list[tuple[int, int]] = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def ids_of(runs: Iterable[tuple[int, int]]) -> set[int]:
    return {i for a, b in runs for i in range(a, b)}


class Member:
    """A session plus what its responses told it so far."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.assignment: tuple[TopicPartition, ...] | None = None
        self.generation = -1
        self.stale: set[int] = set()
        self.errors: list[LogstoreError] = []
        self.committed: dict[TopicPartition, int] = {}

    @property
    def id(self) -> str:
        return self.session.member_id

    def poll(self) -> list[Got]:
        """Every record the coordinator hands out now: ``next_outbound(0)`` until it has nothing."""
        got: list[Got] = []
        for _ in range(10_000):
            out = self.session.next_outbound(0)
            if out is None:
                return got
            assert out.member_id == self.id
            self.assignment = out.assignment
            self.generation = out.generation
            self.stale |= ids_of(out.stale)
            self.errors.extend(out.errors)
            self.committed.update(out.committed)
            got.extend(unpack(out))
        raise AssertionError("next_outbound never ran dry")

    def take_stale(self) -> set[int]:
        """Poll (expecting no records), then return and forget the ids reported stale so far."""
        assert self.poll() == [], "records arrived: use poll() and read .stale instead"
        stale, self.stale = self.stale, set()
        return stale

    def ack(self, got: Iterable[Got]) -> None:
        self.session.ack(id_ranges(got))

    def nack(self, got: Iterable[Got]) -> None:
        self.session.nack(id_ranges(got))

    def extend(self, got: Iterable[Got], ms: int) -> None:
        self.session.extend(id_ranges(got), ms)


class Harness:
    """A broker, its offset store and a timer-less coordinator on one ManualClock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock(T0)
        self.open()

    def open(self) -> None:
        self.broker = Broker.open(self.path, clock=self.clock, start_scheduler=False)
        self.offsets = OffsetStore.open(self.broker)
        self.coord = GroupCoordinator(self.broker, self.offsets, clock=self.clock, timers=False)

    def close(self) -> None:
        self.coord.close()
        self.broker.close()

    def topic(self, name: str, partitions: int = 1) -> str:
        self.broker.create_topic(name, partitions)
        return name

    def produce(
        self, topic: str, partition: int, items: Iterable[tuple[bytes | None, bytes | None]], ts: int | None = None
    ) -> range:
        """Append ``(key, value)`` pairs to one partition as one batch; their offsets."""
        stamp = self.clock() if ts is None else ts
        encoded = encode_records([Record(k, v, timestamp=stamp) for k, v in items])
        result = self.broker.append(topic, partition, encoded)
        return range(result.base_offset, result.base_offset + result.record_count)

    def fill(self, topic: str, partition: int, count: int) -> range:
        """``count`` records with values ``b"<partition>:<offset>"`` in one batch."""
        start = self.broker.partition(topic, partition).log.log_end_offset
        return self.produce(topic, partition, [(None, b"%d:%d" % (partition, start + i)) for i in range(count)])

    def join(self, group: str, topics: Iterable[str], **options: object) -> Member:
        """A new member; ``options`` are ConsumeOptions fields (``start`` defaults to earliest here)."""
        options.setdefault("start", EARLIEST)
        return Member(self.coord.join(group, list(topics), ConsumeOptions(**options), "test"))

    def commit_now(self, group: str) -> None:
        """What the committer thread does for ``group``: write floors that passed the commit."""
        state = self.coord._group_state(group)
        assert state is not None
        self.coord.flush(group)

    def committed(self, group: str) -> dict[TopicPartition, int]:
        return {tp: c.offset for tp, c in self.coord.fetch_committed(group).items()}

    def tick(self, advance_ms: int = 0) -> None:
        self.clock.advance(advance_ms)
        self.coord.tick()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "data")
    yield harness
    harness.close()


def offsets_of(got: Iterable[Got]) -> list[int]:
    return [g.offset for g in got]


# -- joining and the first response -----------------------------------------------------------------


def test_first_response_carries_member_id_generation_and_assignment(h):
    """The first response (even with nothing to deliver) names the member, its generation and all partitions."""
    h.topic("orders", 3)
    m = h.join("g", ["orders"])
    out = m.session.next_outbound(0)
    assert out is not None
    assert out.member_id == m.id and m.id.startswith("member-")
    assert out.generation >= 1
    assert out.assignment == (TP("orders", 0), TP("orders", 1), TP("orders", 2))
    assert out.deliveries == [] and out.stale == [] and out.errors == []
    assert m.session.next_outbound(0) is None, "nothing new: no second response"


def test_deliveries_are_the_stored_records_in_offset_order_with_consecutive_ids(h):
    """Records of every owned partition arrive once, in offset order, attempt 1, ids 1.. unique, deadline now+ack."""
    h.topic("orders", 3)
    for p in range(3):
        h.fill("orders", p, 4)
        h.fill("orders", p, 3)  # a second batch per partition
    h.clock.advance(5)
    m = h.join("g", ["orders"], ack_deadline_ms=2_000)
    got = m.poll()
    assert sorted(g.id for g in got) == list(range(1, 22))
    assert {g.attempt for g in got} == {1} and {g.deadline for g in got} == {T0 + 5 + 2_000}
    for p in range(3):
        mine = [g for g in got if g.tp == TP("orders", p)]
        assert offsets_of(mine) == list(range(7))
        assert [g.value for g in mine] == [b"%d:%d" % (p, o) for o in range(7)]


def test_max_in_flight_caps_the_unacked_records_of_a_member(h):
    """max_in_flight=7 over 3 partitions: 7 out, none more until acks; each ack frees exactly that much credit."""
    h.topic("orders", 3)
    for p in range(3):
        h.fill("orders", p, 20)
    m = h.join("g", ["orders"], max_in_flight=7)
    first = m.poll()
    assert len(first) == 7 and m.session.in_flight == 7
    assert m.poll() == []
    m.ack(first[:3])
    second = m.poll()
    assert len(second) == 3 and m.session.in_flight == 7
    m.ack(first[3:] + second)
    assert len(m.poll()) == 7


# -- acks and the committed offset ---------------------------------------------------------------------


def test_out_of_order_acks_commit_only_the_contiguous_prefix(h):
    """Acks of 5..9 and 2..3 commit nothing; then 0..1 commits 4; then 4 commits 10 (and the owner is told)."""
    h.topic("solo")
    h.fill("solo", 0, 10)
    m = h.join("g", ["solo"])
    got = m.poll()
    by_offset = {g.offset: g for g in got}
    m.ack(by_offset[o] for o in range(5, 10))
    m.ack([by_offset[2], by_offset[3]])
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 0}
    m.ack([by_offset[1], by_offset[0]])
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 4}
    m.poll()
    assert m.committed == {TP("solo", 0): 4}
    m.ack([by_offset[4]])
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 10}
    assert m.take_stale() == set()
    assert m.committed == {TP("solo", 0): 10}


def test_an_ack_is_applied_once_and_a_repeat_is_stale(h):
    """Acking the same ids twice: the second ack is reported stale and changes nothing."""
    h.topic("solo")
    h.fill("solo", 0, 4)
    m = h.join("g", ["solo"])
    got = m.poll()
    m.ack(got[:2])
    assert m.take_stale() == set()
    m.ack(got[:3])
    assert m.take_stale() == {got[0].id, got[1].id}
    assert m.session.in_flight == 1


def test_overlapping_ranges_in_one_request_are_applied_once_and_not_reported_stale(h):
    """Ranges of one ack that overlap are merged first: every id is acked once, none is stale."""
    h.topic("solo")
    h.fill("solo", 0, 8)
    m = h.join("g", ["solo"])
    got = m.poll()
    first = got[0].id
    m.session.ack([(first, first + 5), (first + 3, first + 7), (first + 6, first + 7)])
    assert m.take_stale() == set()
    assert m.session.in_flight == 1
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 7}


def test_nack_redelivers_with_the_next_attempt_and_new_ids_and_old_ids_turn_stale(h):
    """A nack of two records redelivers them (attempt 2, fresh ids); acking their old ids is stale."""
    h.topic("solo")
    h.fill("solo", 0, 5)
    m = h.join("g", ["solo"])
    got = m.poll()
    m.nack(got[1:3])
    again = m.poll()
    assert [(g.offset, g.attempt) for g in again] == [(1, 2), (2, 2)]
    assert [g.id for g in again] == [6, 7]
    assert [g.value for g in again] == [b"0:1", b"0:2"]
    m.ack(got)
    assert m.take_stale() == {got[1].id, got[2].id}
    m.nack(again[:1])
    third = m.poll()
    assert [(g.offset, g.attempt, g.id) for g in third] == [(1, 3, 8)]
    m.ack(third + again[1:])
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 5}


def test_partition_ordered_redelivery_blocks_fresh_records_of_its_partition_only(h):
    """A nacked record of p0 goes out again alone: no fresh p0 records until it is acked; p1 keeps flowing."""
    h.topic("two", 2)
    h.fill("two", 0, 10)
    h.fill("two", 1, 3)
    m = h.join("g", ["two"])
    got = m.poll()
    p0 = [g for g in got if g.tp.partition == 0]
    assert offsets_of(p0) == list(range(10)) and len(got) == 13
    m.nack(p0[1:2])
    m.ack(g for g in got if g is not p0[1])
    h.fill("two", 0, 3)
    h.fill("two", 1, 3)
    nxt = m.poll()
    assert [(g.offset, g.attempt) for g in nxt if g.tp.partition == 0] == [(1, 2)]
    assert offsets_of(g for g in nxt if g.tp.partition == 1) == [3, 4, 5]
    m.ack(g for g in nxt if g.tp.partition == 1)
    assert m.poll() == [], "p0 stays blocked behind its redelivery although records 10-12 wait"
    m.ack(g for g in nxt if g.tp.partition == 0)
    resumed = m.poll()
    assert [(g.tp.partition, g.offset, g.attempt) for g in resumed] == [(0, 10, 1), (0, 11, 1), (0, 12, 1)]
    h.commit_now("g")
    assert h.committed("g") == {TP("two", 0): 10, TP("two", 1): 6}


# -- deadlines ------------------------------------------------------------------------------------------


def test_an_expired_deadline_redelivers_and_acks_of_the_expired_ids_are_stale(h):
    """At exactly the deadline tick() takes the records back; they come again (attempt 2) and old acks are stale."""
    h.topic("solo")
    h.fill("solo", 0, 3)
    m = h.join("g", ["solo"], ack_deadline_ms=1_000)
    got = m.poll()
    assert {g.deadline for g in got} == {T0 + 1_000}
    h.tick(999)
    assert m.poll() == []
    h.tick(1)
    again = m.poll()
    assert [(g.offset, g.attempt) for g in again] == [(0, 2), (1, 2), (2, 2)]
    assert {g.id for g in again}.isdisjoint(g.id for g in got)
    m.ack(got)
    assert m.take_stale() == {g.id for g in got}
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 0}, "a stale ack commits nothing"
    m.ack(again)
    assert m.take_stale() == set()
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 3}


def test_extend_deadline_prevents_the_redelivery(h):
    """Extending at 800 ms by 1,000 ms: no redelivery at the old deadline, the ack at 1,500 ms is applied."""
    h.topic("solo")
    h.fill("solo", 0, 3)
    m = h.join("g", ["solo"], ack_deadline_ms=1_000)
    got = m.poll()
    h.clock.advance(800)
    m.extend(got, 1_000)
    h.tick(700)
    assert m.poll() == []
    assert m.session.in_flight == 3
    m.ack(got)
    assert m.take_stale() == set()
    h.tick(10_000)
    assert m.poll() == []
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 3}


def test_partial_ack_extend_and_nack_split_one_delivery_per_record(h):
    """Ack 1-2, extend 4-6, nack 9 of one delivery: only 3, 7, 8, 10 and 9's redelivery expire; then only 4-6 apply."""
    h.topic("solo")
    h.fill("solo", 0, 10)
    m = h.join("g", ["solo"], ack_deadline_ms=1_000)
    got = m.poll()
    assert [g.id for g in got] == list(range(1, 11)) and offsets_of(got) == list(range(10))
    m.session.ack([(1, 3)])
    m.session.extend([(4, 7)], 5_000)
    m.session.nack([(9, 10)])
    redelivered = m.poll()
    assert [(g.offset, g.attempt, g.id) for g in redelivered] == [(8, 2, 11)]
    h.tick(1_000)
    expired = m.poll()
    assert {g.offset: g.attempt for g in expired} == {2: 2, 6: 2, 7: 2, 8: 3, 9: 2}
    assert min(g.id for g in expired) == 12
    m.session.ack([(1, 12)])
    assert m.take_stale() == {1, 2, 3, 7, 8, 9, 10, 11}
    m.ack(expired)
    assert m.take_stale() == set()
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 10}
    assert m.session.in_flight == 0


def test_extend_with_an_absurd_extension_is_reported_and_changes_nothing(h):
    """extend(ms=0) puts an InvalidArgument in the next response; the deadline stays and still expires."""
    h.topic("solo")
    h.fill("solo", 0, 1)
    m = h.join("g", ["solo"], ack_deadline_ms=1_000)
    got = m.poll()
    m.extend(got, 0)
    m.poll()
    assert len(m.errors) == 1 and isinstance(m.errors[0], InvalidArgument)
    h.tick(1_000)
    assert [g.attempt for g in m.poll()] == [2]


# -- bad ids -----------------------------------------------------------------------------------------------


def test_ids_never_delivered_are_invalid_argument_and_the_stream_goes_on(h):
    """Undelivered, zero and empty id ranges give InvalidArgument; a straddling range's delivered ids apply."""
    h.topic("solo")
    h.fill("solo", 0, 5)
    m = h.join("g", ["solo"], max_in_flight=3)
    got = m.poll()
    assert [g.id for g in got] == [1, 2, 3]
    m.session.ack([(5, 9)])
    m.session.ack([(0, 1)])
    m.session.nack([(3, 2)])
    m.session.extend([(2, 2)], 1_000)
    m.session.ack([(2, 6)])  # 2 and 3 were delivered, 4 and 5 never
    nxt = m.poll()
    assert len(m.errors) == 5 and all(isinstance(e, InvalidArgument) for e in m.errors)
    assert "never delivered" in m.errors[0].message and "never delivered" in m.errors[4].message
    assert not m.stale
    assert offsets_of(nxt) == [3, 4], "ids 2 and 3 were acked: two credits came back"
    m.ack(got[:1] + nxt)
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 5}


# -- several members ------------------------------------------------------------------------------------------


def test_two_members_get_a_balanced_exclusive_assignment(h):
    """Two members of a 4-partition topic own two partitions each, disjoint, covering all, same generation."""
    h.topic("wide", 4)
    a = h.join("g", ["wide"])
    b = h.join("g", ["wide"])
    a.poll()
    b.poll()
    assert len(a.assignment) == len(b.assignment) == 2
    assert set(a.assignment).isdisjoint(b.assignment)
    assert set(a.assignment) | set(b.assignment) == {TP("wide", p) for p in range(4)}
    assert a.generation == b.generation
    owners = {p.tp: p.owner for p in h.coord.describe_group("g").partitions}
    assert all(owners[tp] == a.id for tp in a.assignment) and all(owners[tp] == b.id for tp in b.assignment)


def test_a_joining_member_takes_over_partitions_and_the_old_owners_acks_for_them_are_stale(h):
    """B joining takes moved partitions' records (attempt 2); A's acks for those are stale, for the rest apply."""
    h.topic("wide", 4)
    for p in range(4):
        h.fill("wide", p, 3)
    a = h.join("g", ["wide"])
    got_a = a.poll()
    assert len(got_a) == 12
    b = h.join("g", ["wide"])
    got_b = b.poll()
    a.poll()
    moved = set(b.assignment)
    assert len(moved) == 2 and moved.isdisjoint(a.assignment)
    assert sorted((g.tp, g.offset) for g in got_b) == sorted((g.tp, g.offset) for g in got_a if g.tp in moved)
    assert {g.attempt for g in got_b} == {2}
    a.ack(got_a)
    assert a.take_stale() == {g.id for g in got_a if g.tp in moved}
    b.ack(got_b)
    assert b.take_stale() == set()
    h.commit_now("g")
    assert h.committed("g") == {TP("wide", p): 3 for p in range(4)}


def test_leave_moves_partitions_and_unacked_records_to_the_remaining_member(h):
    """A leaves holding acked and unacked records: B then owns everything and gets exactly A's unacked ones."""
    h.topic("wide", 4)
    for p in range(4):
        h.fill("wide", p, 4)
    a = h.join("g", ["wide"])
    b = h.join("g", ["wide"])
    a_records = a.poll()
    b_first = b.poll()
    assert len(a_records) == 8 and len(b_first) == 8
    acked = [g for g in a_records if g.offset < 2]
    a.ack(acked)
    a.session.leave()
    assert a.session.ended and a.session.next_outbound(0) is None
    got_b = b.poll()
    assert set(b.assignment) == {TP("wide", p) for p in range(4)}
    assert sorted((g.tp, g.offset) for g in got_b) == sorted((g.tp, g.offset) for g in a_records if g.offset >= 2)
    assert {g.attempt for g in got_b} == {2}
    b.ack(b_first + got_b)
    h.commit_now("g")
    assert h.committed("g") == {TP("wide", p): 4 for p in range(4)}
    assert [m.member_id for m in h.coord.describe_group("g").members] == [b.id]


def test_a_silent_member_is_expired_by_tick_and_its_records_go_to_the_other(h):
    """A silent for session_timeout_ms is removed by tick() (FailedPrecondition); B gets its partitions and records."""
    h.topic("wide", 2)
    for p in range(2):
        h.fill("wide", p, 3)
    a = h.join("g", ["wide"], session_timeout_ms=1_000)
    b = h.join("g", ["wide"], session_timeout_ms=1_000)
    got_a, got_b = a.poll(), b.poll()
    assert len(got_a) == len(got_b) == 3
    h.clock.advance(999)
    b.session.heartbeat()
    h.tick()
    assert not a.session.ended
    h.tick(1)
    assert a.session.ended and isinstance(a.session.end_error, FailedPrecondition)
    assert not b.session.ended
    moved = b.poll()
    assert len(b.assignment) == 2
    assert sorted((g.tp, g.offset) for g in moved) == sorted((g.tp, g.offset) for g in got_a)
    assert {g.attempt for g in moved} == {2}


def test_random_membership_changes_never_lose_a_record_or_apply_an_ack_twice_partition_ordered(h):
    """PARTITION_ORDERED under random membership churn: one owner per partition, no loss, no ack applied twice."""
    run_soak(h, PART, seed=7)


def test_random_membership_changes_never_lose_a_record_or_apply_an_ack_twice_key_ordered(h):
    """KEY_ORDERED under random membership churn: as above, and each key's applied acks follow produce order."""
    run_soak(h, KEY, seed=11)


def run_soak(h: Harness, mode: DeliveryMode, seed: int) -> None:
    """Up to 4 members join, leave, break and go silent at random while others ack, nack, drop and extend.

    Checked throughout: every partition has exactly one owner among the live members, each member's
    deliveries are of partitions it owns, and no (partition, offset) is acked successfully twice.  At the
    end every record was acked exactly once, the committed offsets are the log ends, and in KEY_ORDERED the
    successful acks of each key came in produce order.
    """
    rng = random.Random(seed)
    parts, keys_n, total = 4, 40, 1_200
    h.topic("soak", parts)
    produced_keys: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    n = 0
    while n < total:
        batch = rng.randrange(1, 40)
        for p in range(parts):
            items = [(b"key-%d" % (rng.randrange(keys_n // parts) * parts + p), b"") for _ in range(batch)]
            for offset, (key, _v) in zip(h.produce("soak", p, items), items):
                produced_keys[key].append((p, offset))
            n += batch
    ends = {TP("soak", p): h.broker.partition("soak", p).log.log_end_offset for p in range(parts)}
    opts = dict(mode=mode, max_in_flight=16, ack_deadline_ms=5_000, session_timeout_ms=20_000)
    live: list[Member] = []
    pending: dict[str, list[Got]] = {}
    applied: dict[tuple[TopicPartition, int], int] = {}
    applied_keys: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    stats: dict[str, int] = defaultdict(int)

    def join() -> None:
        stats["joins"] += 1
        m = h.join("soak-g", ["soak"], **opts)
        live.append(m)
        pending[m.id] = []

    def poll(m: Member) -> None:
        got = m.poll()
        stats["redelivered"] += sum(g.attempt > 1 for g in got)
        pending[m.id].extend(got)

    def ack(m: Member, chosen: list[Got]) -> None:
        """Ack, then poll at once so that this ack's stale report is read before anything else happens."""
        m.stale.clear()
        m.ack(chosen)
        pending[m.id].extend(m.poll())
        stale = m.stale
        for g in chosen:
            if g.id in stale:
                stats["stale"] += 1
                continue
            where = (g.tp, g.offset)
            assert where not in applied, f"{where} acked successfully twice"
            applied[where] = g.id
            applied_keys[g.key].append((g.tp.partition, g.offset))

    def remove(m: Member, how: str) -> None:
        stats[how] += 1
        live.remove(m)
        pending.pop(m.id)
        if how == "leave":
            m.session.leave()
        elif how == "close":
            m.session.close()
        else:  # silent: only the others show signs of life until the session timeout
            h.clock.advance(20_000)
            for other in live:
                other.session.heartbeat()
            h.tick()
            assert m.session.ended and isinstance(m.session.end_error, FailedPrecondition)
        assert m.session.ended

    def check_owners() -> None:
        d = h.coord.describe_group("soak-g")
        assert sorted(x.member_id for x in d.members) == sorted(m.id for m in live)
        owners = {p.tp: p.owner for p in d.partitions}
        assert set(owners) == set(ends)
        assert set(owners.values()) <= {m.id for m in live}
        assert all(owners.values()), f"a partition without an owner: {owners}"
        by_member = {x.member_id: set(x.assignment) for x in d.members}
        for tp, owner in owners.items():
            assert tp in by_member[owner]
            assert sum(tp in a for a in by_member.values()) == 1

    join()
    for _ in range(1_500):
        op = rng.random()
        m = rng.choice(live)
        if op < 0.30:
            poll(m)
        elif op < 0.60:
            mine = pending[m.id]
            rng.shuffle(mine)
            k = rng.randrange(len(mine) + 1)
            chosen, pending[m.id] = mine[:k], mine[k:]
            ack(m, chosen)
        elif op < 0.68:
            mine = pending[m.id]
            k = rng.randrange(len(mine) + 1)
            m.nack(mine[:k])
            pending[m.id] = mine[k:]
        elif op < 0.72:
            mine = pending[m.id]
            m.extend(mine[: len(mine) // 2], 5_000)
        elif op < 0.78:
            pending[m.id] = pending[m.id][len(pending[m.id]) // 2 :]  # forgotten: their deadline will pass
        elif op < 0.85:
            h.clock.advance(rng.randrange(0, 3_000))
            for x in live:
                x.session.heartbeat()
            h.tick()
            now = h.clock()
            for x in live:
                pending[x.id] = [g for g in pending[x.id] if g.deadline > now]
        elif op < 0.92 and len(live) < 4:
            join()
        elif len(live) > 1:
            remove(m, rng.choice(["leave", "close", "silent"]))
            now = h.clock()
            for x in live:
                pending[x.id] = [g for g in pending[x.id] if g.deadline > now]
        check_owners()
    # Drain with one member left standing: ack everything it gets until every record is done.
    while len(live) > 1:
        remove(live[-1], "leave")
    last = live[0]
    for _ in range(2_000):
        got = last.poll() + pending.pop(last.id, [])
        pending[last.id] = []
        if got:
            ack(last, got)
        elif len(applied) == sum(ends.values()):
            break
        else:
            h.clock.advance(5_000)
            last.session.heartbeat()
            h.tick()
    assert len(applied) == sum(ends.values())
    assert set(applied) == {(tp, o) for tp, end in ends.items() for o in range(end)}
    h.commit_now("soak-g")
    assert h.committed("soak-g") == ends
    assert min(stats[x] for x in ("joins", "leave", "close", "silent", "stale", "redelivered")) >= 3, dict(stats)
    if mode is KEY:
        for key, order in produced_keys.items():
            assert applied_keys[key] == order, f"key {key!r}: acked order differs from produce order"


# -- KEY_ORDERED ------------------------------------------------------------------------------------------


def test_key_ordered_sends_different_keys_at_once_but_never_two_of_one_key(h):
    """Keys a,b,a,c,b,c: a@0, b@1, c@3 out together; b@4 follows b@1's ack; nacked a@0 goes again before a@2."""
    h.topic("solo")
    offsets = h.produce("solo", 0, [(k, b"%d" % i) for i, k in enumerate([b"a", b"b", b"a", b"c", b"b", b"c"])])
    assert list(offsets) == list(range(6))
    m = h.join("g", ["solo"], mode=KEY)
    got = m.poll()
    assert [(g.offset, g.key) for g in got] == [(0, b"a"), (1, b"b"), (3, b"c")]
    assert m.poll() == []
    m.ack(got[1:2])
    assert [(g.offset, g.key) for g in m.poll()] == [(4, b"b")]
    m.nack(got[:1])
    again = m.poll()
    assert [(g.offset, g.attempt) for g in again] == [(0, 2)]
    m.ack(again)
    assert [(g.offset, g.key) for g in m.poll()] == [(2, b"a")]


def test_key_ordered_null_keys_are_unordered_and_go_out_together(h):
    """Five null-key records are all out at once in KEY_ORDERED mode; an empty key b'' is one key."""
    h.topic("solo")
    h.produce("solo", 0, [(None, b"n")] * 5 + [(b"", b"e")] * 3)
    m = h.join("g", ["solo"], mode=KEY)
    assert offsets_of(m.poll()) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("seed", [1, 2])
def test_key_ordered_random_nacks_and_expiries_keep_per_key_order_of_acked_records(h, seed):
    """Random acks, nacks, expiries of 4,000 records/300 keys: one per key out; per-key ack order = produce order."""
    rng = random.Random(seed)
    parts, keys_n, total = 3, 300, 4_000
    h.topic("keyed", parts)
    produced: dict[bytes, list[int]] = defaultdict(list)
    n = 0
    while n < total:
        p = rng.randrange(parts)
        items = []
        for _ in range(rng.randrange(1, 60)):
            key = b"k%03d" % (rng.randrange(keys_n // parts) * parts + p)
            items.append((key, b""))
        for offset, (key, _v) in zip(h.produce("keyed", p, items), items):
            produced[key].append(offset)
        n += len(items)
    total = n
    m = h.join("g", ["keyed"], mode=KEY, max_in_flight=64, ack_deadline_ms=1_000, session_timeout_ms=600_000)
    out: dict[int, Got] = {}
    acked: dict[bytes, list[int]] = defaultdict(list)
    widest = 0
    for _ in range(100_000):
        for g in m.poll():
            out[g.id] = g
        assert not m.stale, "an ack or nack of a live lease was reported stale"
        keys_out = [g.key for g in out.values()]
        assert len(keys_out) == len(set(keys_out)), "two records of one key out at once"
        assert len(out) <= 64
        widest = max(widest, len(out))
        if not out:
            if sum(len(v) for v in acked.values()) == total:
                break
            h.tick(1_000)  # nothing out: let any lookahead refill
            continue
        live = list(out.values())
        rng.shuffle(live)
        roll = rng.random()
        if roll < 0.05:
            h.tick(1_000)  # everything out expires
            out.clear()
            continue
        k = rng.randrange(1, len(live) + 1)
        chosen = live[:k]
        nacked = [g for g in chosen if rng.random() < 0.2]
        done = [g for g in chosen if g not in nacked]
        for g in chosen:
            del out[g.id]
        m.nack(nacked)
        m.ack(done)
        for g in sorted(done, key=lambda x: x.id):
            acked[g.key].append(g.offset)
    assert sum(len(v) for v in acked.values()) == total
    assert widest > 10, "different keys must be out at the same time"
    for key, offsets in produced.items():
        assert acked[key] == offsets, f"key {key!r}: acked order differs from produce order"
    h.commit_now("g")
    assert h.committed("g") == {TP("keyed", p): h.broker.partition("keyed", p).log.log_end_offset for p in range(parts)}


# -- at-most-once ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [PART, KEY])
def test_at_most_once_commits_before_delivery_and_ignores_acks(h, mode):
    """At-most-once: committed when handed out; acks/nacks of delivered ids ignored; nothing is redelivered."""
    h.topic("solo")
    h.produce("solo", 0, [(b"k%d" % (i % 2), b"%d" % i) for i in range(6)])
    m = h.join("g", ["solo"], mode=mode, guarantee=Guarantee.AT_MOST_ONCE, ack_deadline_ms=1_000)
    got = m.poll()
    assert sorted(offsets_of(got)) == list(range(6))
    assert h.committed("g") == {TP("solo", 0): 6}
    assert m.session.in_flight == 0
    m.nack(got)
    m.ack(got)
    assert m.take_stale() == set() and m.errors == []
    m.session.ack([(999, 1_000)])  # never delivered: reported, as in at-least-once
    assert m.take_stale() == set()
    assert [type(e).__name__ for e in m.errors] == ["InvalidArgument"] and "never delivered" in m.errors[0].message
    h.tick(5_000)
    m.session.heartbeat()
    assert m.poll() == []
    h.fill("solo", 0, 2)
    assert offsets_of(m.poll()) == [6, 7]
    assert h.committed("g") == {TP("solo", 0): 8}


# -- seek, external commits, delete ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [PART, KEY])
def test_seek_withdraws_in_flight_records_and_restarts_delivery_at_the_target(h, mode):
    """Seek commits at once, tells the member, restarts delivery at the target, and makes in-flight ids stale."""
    h.topic("solo")
    h.produce("solo", 0, [(b"k%d" % i, b"%d" % i) for i in range(10)])
    m = h.join("g", ["solo"], mode=mode, max_in_flight=4)
    got = m.poll()
    assert offsets_of(got) == [0, 1, 2, 3]
    m.ack(got[:1])
    assert h.coord.seek("g", "solo", SeekTarget(offset=6)) == {TP("solo", 0): 6}
    assert h.committed("g") == {TP("solo", 0): 6}
    after = m.poll()
    assert m.committed == {TP("solo", 0): 6}
    assert [(g.offset, g.attempt) for g in after] == [(6, 1), (7, 1), (8, 1), (9, 1)]
    m.ack(got[1:])
    assert m.take_stale() == {g.id for g in got[1:]}
    m.ack(after[:2])
    h.coord.seek("g", "solo", SeekTarget(earliest=True))
    replay = m.poll()
    assert offsets_of(replay) == [0, 1, 2, 3]
    m.ack(after[2:])
    assert m.take_stale() == {g.id for g in after[2:]}
    h.commit_now("g")
    assert h.committed("g") == {TP("solo", 0): 0}, "acks from before the seek do not move the new floor"


def test_seek_to_latest_a_timestamp_and_a_clamped_offset(h):
    """Seek targets per partition: latest = log end, timestamp = first record at/after it, offset clamped to the end."""
    h.topic("two", 2)
    for i in range(4):
        h.produce("two", 0, [(None, b"x")], ts=T0 + 10 * i)
    h.produce("two", 1, [(None, b"y")] * 2, ts=T0 + 100)
    assert h.coord.seek("g", "two", SeekTarget(latest=True)) == {TP("two", 0): 4, TP("two", 1): 2}
    assert h.coord.seek("g", "two", SeekTarget(timestamp_ms=T0 + 15)) == {TP("two", 0): 2, TP("two", 1): 0}
    assert h.coord.seek("g", "two", SeekTarget(offset=50), [1]) == {TP("two", 1): 2}
    assert h.committed("g") == {TP("two", 0): 2, TP("two", 1): 2}
    m = h.join("g", ["two"])
    assert sorted((g.tp.partition, g.offset) for g in m.poll()) == [(0, 2), (0, 3)]
    with pytest.raises(InvalidArgument):
        SeekTarget(earliest=True, latest=True)
    with pytest.raises(NotFound):
        h.coord.seek("g", "nope", SeekTarget(earliest=True))


def test_seek_of_an_internal_topic_is_permission_denied_like_join(h):
    """Seeking a group on __consumer_offsets is PermissionDenied, the status join gives for that topic."""
    with pytest.raises(PermissionDenied):
        h.join("g", [OFFSETS_TOPIC])
    with pytest.raises(PermissionDenied):
        h.coord.seek("g", OFFSETS_TOPIC, SeekTarget(earliest=True))


def test_commit_offsets_is_refused_while_members_consume_and_moves_a_later_join(h):
    """commit_offsets with live members: FailedPrecondition; without: stored and the next join starts there."""
    h.topic("solo")
    h.fill("solo", 0, 10)
    m = h.join("g", ["solo"], max_in_flight=2)
    got = m.poll()
    with pytest.raises(FailedPrecondition):
        h.coord.commit_offsets("g", {TP("solo", 0): CommittedOffset(7, "manual", T0)})
    assert h.committed("g") == {TP("solo", 0): 0}
    m.ack(got)
    m.session.leave()
    h.coord.commit_offsets("g", {TP("solo", 0): CommittedOffset(7, "manual", T0)})
    assert h.committed("g") == {TP("solo", 0): 7}
    again = h.join("g", ["solo"])
    assert offsets_of(again.poll()) == [7, 8, 9]


def test_delete_group_is_refused_while_members_consume(h):
    """delete_group with a live member is FailedPrecondition; after leave it removes the group; again NotFound."""
    h.topic("solo")
    h.fill("solo", 0, 3)
    m = h.join("g", ["solo"])
    m.ack(m.poll())
    h.commit_now("g")
    with pytest.raises(FailedPrecondition):
        h.coord.delete_group("g")
    assert h.committed("g") == {TP("solo", 0): 3}
    assert [s.name for s in h.coord.list_groups()] == ["g"]
    m.session.leave()
    h.coord.delete_group("g")
    assert h.committed("g") == {}
    assert h.coord.list_groups() == []
    with pytest.raises(NotFound):
        h.coord.describe_group("g")
    with pytest.raises(NotFound):
        h.coord.delete_group("g")
    fresh = h.join("g", ["solo"])
    assert offsets_of(fresh.poll()) == [0, 1, 2]


# -- join validation and start positions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "topics, kwargs, error",
    [
        (["nope"], {}, NotFound),
        ([OFFSETS_TOPIC], {}, PermissionDenied),
        ([], {}, InvalidArgument),
        (["solo", "solo"], {}, InvalidArgument),
        (["bad topic!"], {}, InvalidArgument),
    ],
)
def test_join_refuses_bad_topics(h, topics, kwargs, error):
    """Unknown topic NotFound, internal PermissionDenied, none/duplicate/ill-named InvalidArgument; no member added."""
    h.topic("solo")
    with pytest.raises(error):
        h.join("g", topics, **kwargs)
    with pytest.raises(NotFound):
        h.coord.describe_group("g")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_in_flight": 0},
        {"max_in_flight": 100_001},
        {"max_in_flight": True},
        {"ack_deadline_ms": 99},
        {"ack_deadline_ms": 600_001},
        {"session_timeout_ms": 0},
        {"session_timeout_ms": 10**12},
        {"client_id": "c" * 256},
    ],
)
def test_absurd_options_are_invalid_argument(kwargs):
    """Out-of-range in-flight caps, deadlines and session timeouts, and over-long client ids are refused."""
    with pytest.raises(InvalidArgument):
        ConsumeOptions(**kwargs)


def test_a_negative_start_timestamp_is_invalid_argument():
    """StartPosition(timestamp_ms=-1) is refused; timestamp 0 is accepted."""
    with pytest.raises(InvalidArgument):
        StartPosition(timestamp_ms=-1)
    assert StartPosition(timestamp_ms=0).timestamp_ms == 0


def test_join_refuses_a_bad_group_name(h):
    """A group name that is empty, internal or has illegal characters: InvalidArgument."""
    h.topic("solo")
    for name in ["", "bad group", "x" * 300]:
        with pytest.raises(InvalidArgument):
            h.join(name, ["solo"])


def test_join_with_settings_that_conflict_with_live_members_is_failed_precondition(h):
    """Other topics/mode/guarantee than the live members' is FailedPrecondition; accepted once nobody consumes."""
    h.topic("solo")
    h.topic("other")
    h.fill("solo", 0, 3)
    m = h.join("g", ["solo"])
    for topics, kwargs in [
        (["other"], {}),
        (["solo", "other"], {}),
        (["solo"], {"mode": KEY}),
        (["solo"], {"guarantee": Guarantee.AT_MOST_ONCE}),
    ]:
        with pytest.raises(FailedPrecondition):
            h.join("g", topics, **kwargs)
    assert [x.member_id for x in h.coord.describe_group("g").members] == [m.id]
    got = m.poll()
    assert offsets_of(got) == [0, 1, 2] and set(m.assignment) == {TP("solo", 0)}
    m.ack(got)
    m.session.leave()
    k = h.join("g", ["solo"], mode=KEY)
    h.fill("solo", 0, 1)
    assert offsets_of(k.poll()) == [3], "a new mode starts from the committed offsets (the close committed 3)"


def test_start_positions_earliest_latest_and_timestamp_are_committed_at_join(h):
    """Join commits: earliest = log start, latest = log end, timestamp = first record at/after it; a stored one wins."""
    h.topic("ts")
    for i in range(5):
        h.produce("ts", 0, [(None, b"%d" % i)], ts=T0 + 10 * i)
    tp = TP("ts", 0)
    h.join("early", ["ts"], start=EARLIEST)
    h.join("late", ["ts"], start=StartPosition())
    h.join("mid", ["ts"], start=StartPosition(timestamp_ms=T0 + 15))
    h.join("future", ["ts"], start=StartPosition(timestamp_ms=T0 + 1_000))
    assert h.committed("early") == {tp: 0}
    assert h.committed("late") == {tp: 5}
    assert h.committed("mid") == {tp: 2}
    assert h.committed("future") == {tp: 5}
    assert h.offsets.fetch("mid")[tp].metadata == "start position"
    h.coord.commit_offsets("fresh", {tp: CommittedOffset(3, "", T0)})
    m = h.join("fresh", ["ts"], start=EARLIEST)
    assert h.committed("fresh") == {tp: 3}
    assert offsets_of(m.poll()) == [3, 4]


# -- restart, describe, growth -----------------------------------------------------------------------------------


def test_committed_offsets_survive_a_restart_and_consumption_resumes_right_after_them(h):
    """Acks of 0-5 then close (which commits) and reopen: a new member starts at 6 with attempt 1."""
    h.topic("solo")
    h.fill("solo", 0, 10)
    m = h.join("g", ["solo"])
    got = m.poll()
    m.ack(got[:6])
    h.close()
    h.open()
    assert h.committed("g") == {TP("solo", 0): 6}
    again = h.join("g", ["solo"])
    assert [(g.offset, g.attempt) for g in again.poll()] == [(o, 1) for o in range(6, 10)]


def test_describe_and_list_groups_report_members_offsets_lag_and_in_flight(h):
    """describe_group reports members, assignment, in-flight, committed, log end, lag, owner; list_groups the group."""
    h.topic("orders", 2)
    h.fill("orders", 0, 5)
    h.fill("orders", 1, 3)
    m = h.join("g", ["orders"], max_in_flight=4, client_id="billing")
    got = m.poll()
    m.ack(g for g in got if g.tp.partition == 0)
    h.commit_now("g")
    d = h.coord.describe_group("g")
    assert d.mode is PART and d.guarantee is Guarantee.AT_LEAST_ONCE
    [info] = d.members
    assert info.member_id == m.id and info.client_id == "billing" and info.member_id.startswith("billing-")
    assert set(info.assignment) == {TP("orders", 0), TP("orders", 1)}
    assert info.in_flight == m.session.in_flight == sum(1 for g in got if g.tp.partition == 1)
    progress = {p.tp.partition: p for p in d.partitions}
    acked0 = sum(1 for g in got if g.tp.partition == 0)
    assert (progress[0].committed, progress[0].log_end_offset, progress[0].lag) == (acked0, 5, 5 - acked0)
    assert (progress[1].committed, progress[1].log_end_offset, progress[1].lag) == (0, 3, 3)
    assert progress[0].owner == progress[1].owner == m.id
    assert progress[0].in_flight == 0
    [summary] = h.coord.list_groups()
    assert (summary.name, summary.member_count, summary.topics) == ("g", 1, ("orders",))


def test_a_topic_that_grows_is_followed_by_tick_from_the_earliest_offset(h):
    """After create_partitions, tick() assigns the new partition and its records (already there) arrive."""
    h.topic("orders", 2)
    a = h.join("g", ["orders"])
    b = h.join("g", ["orders"])
    a.poll()
    b.poll()
    h.broker.create_partitions("orders", 3)
    h.fill("orders", 2, 4)
    h.tick()
    got = a.poll() + b.poll()
    assert set(a.assignment) | set(b.assignment) == {TP("orders", p) for p in range(3)}
    assert set(a.assignment).isdisjoint(b.assignment)
    assert sorted((g.tp.partition, g.offset) for g in got) == [(2, o) for o in range(4)]
    assert h.committed("g")[TP("orders", 2)] == 0



def test_partitions_added_while_no_member_is_live_are_read_from_the_earliest_offset_too(h):
    """A partition added while the group had no member is read from its start, as under live members."""
    h.topic("orders", 2)
    m = h.join("g", ["orders"], start=StartPosition())
    h.fill("orders", 0, 2)
    m.ack(m.poll())
    m.session.leave()
    h.broker.create_partitions("orders", 3)
    h.fill("orders", 2, 4)
    h.tick()
    again = h.join("g", ["orders"], start=StartPosition())
    assert sorted((g.tp.partition, g.offset) for g in again.poll()) == [(2, o) for o in range(4)]


def test_deleting_a_topic_ends_its_members_and_drops_its_offsets(h):
    """delete_topic ends members (NotFound) and drops offsets; the topic created again is read from its start."""
    h.topic("t")
    h.fill("t", 0, 5)
    m = h.join("g", ["t"])
    m.ack(m.poll())
    h.commit_now("g")
    assert h.committed("g") == {TP("t", 0): 5}
    h.broker.delete_topic("t")
    assert m.session.ended and isinstance(m.session.end_error, NotFound)
    assert h.committed("g") == {}
    assert m.poll() == []
    h.topic("t")
    h.fill("t", 0, 3)
    again = h.join("g", ["t"])
    assert [(g.offset, g.attempt) for g in again.poll()] == [(0, 1), (1, 1), (2, 1)]


def small_segments(h: Harness, name: str) -> None:
    """A one-partition topic of ~1 KiB segments and 60 s retention, holding 30 records of keys k0-k2."""
    config = TopicConfig(segment_bytes=1024, max_record_bytes=512, max_batch_bytes=512, retention_ms=60_000)
    h.broker.create_topic(name, 1, config)
    for i in range(30):
        h.produce(name, 0, [(b"k%d" % (i % 3), b"v" * 80)])
    assert h.broker.partition(name, 0).log.segment_count > 2


def drain(m: Member, rounds: int = 20) -> list[Got]:
    """Poll and ack everything, several rounds (a skip past deleted records may take a round of its own)."""
    seen: list[Got] = []
    for _ in range(rounds):
        got = m.poll()
        m.ack(got)
        seen.extend(got)
    return seen


@pytest.mark.parametrize("mode", [PART, KEY])
def test_records_deleted_by_retention_are_skipped_and_the_group_goes_on_at_the_log_start(h, mode):
    """Records retention deleted (out, nacked or unread) are skipped; delivery and commits go on from the log start."""
    small_segments(h, "r")
    log = h.broker.partition("r", 0).log
    m = h.join("g", ["r"], mode=mode, max_in_flight=2)
    first = m.poll()
    m.nack(first[:1])
    h.clock.advance(120_000)
    m.session.heartbeat()
    h.produce("r", 0, [(b"k%d" % (i % 3), b"v" * 80) for i in range(30, 33)])
    assert log.apply_retention() > 0
    start = log.log_start_offset
    assert start >= 10
    rest = drain(m)
    m.ack(first)
    rest += drain(m)
    assert rest, "delivery must go on after the records vanished"
    delivered = {g.offset for g in rest}
    assert set(range(start, 33)) <= delivered
    if mode is PART:
        assert min(delivered) == start, "nothing below the new log start goes out again"
    # (KEY_ORDERED had read the 30 records ahead into memory and may still hand those out.)
    h.commit_now("g")
    assert h.committed("g") == {TP("r", 0): 33}


def test_a_committed_offset_below_the_log_start_is_reset_to_it_at_join(h):
    """A stored offset that retention passed is replaced at join by the log start, committed at once."""
    small_segments(h, "r")
    log = h.broker.partition("r", 0).log
    h.coord.commit_offsets("g", {TP("r", 0): CommittedOffset(2, "old", T0)})
    h.clock.advance(120_000)
    h.produce("r", 0, [(None, b"new")])
    log.apply_retention()
    start = log.log_start_offset
    assert start > 2
    m = h.join("g", ["r"])
    assert h.committed("g") == {TP("r", 0): start}
    assert h.offsets.fetch("g")[TP("r", 0)].metadata.startswith("reset")
    assert offsets_of(m.poll())[0] == start


def test_an_over_long_nack_reason_is_reported_but_the_nack_still_applies(h):
    """A nack with a 5,000-character reason reports InvalidArgument and still redelivers the record."""
    h.topic("solo")
    h.fill("solo", 0, 1)
    m = h.join("g", ["solo"])
    got = m.poll()
    m.session.nack(id_ranges(got), "x" * 5_000)
    again = m.poll()
    assert [(g.offset, g.attempt) for g in again] == [(0, 2)]
    assert len(m.errors) == 1 and isinstance(m.errors[0], InvalidArgument)



@pytest.mark.parametrize("mode", [PART, KEY])
def test_log_append_time_batches_are_delivered_apart_with_their_append_time(h, mode):
    """Log-append-time batches go out in deliveries of their own carrying that time, redeliveries included."""
    h.topic("lat")
    partition = h.broker.partition("lat", 0)
    plan = [(3, 0), (2, ATTR_TIMESTAMP_LOG_APPEND), (2, ATTR_TIMESTAMP_LOG_APPEND), (1, 0)]
    expected = []
    for n, (count, attrs) in enumerate(plan):
        stamp = T0 + 10 * n
        records = [Record(b"k%d" % (len(expected) + i), b"v", timestamp=stamp) for i in range(count)]
        partition.log.append(build_batch_from_encoded(encode_records(records), attributes=attrs))
        expected += [stamp if attrs else 0] * count
    partition.notify_appended()
    m = h.join("g", ["lat"], mode=mode)
    got = m.poll()
    assert offsets_of(got) == list(range(8))
    assert [g.append_time for g in got] == expected
    m.nack(got)
    again = sorted(m.poll(), key=lambda g: g.offset)
    assert [(g.attempt, g.append_time) for g in again] == [(2, t) for t in expected]


# -- response size ---------------------------------------------------------------------------------------------


def response_sizes(m: Member) -> tuple[list[int], int]:
    """Poll like ``Member.poll``; the record bytes of each response and the records received."""
    sizes, count = [], 0
    while (out := m.session.next_outbound(0)) is not None:
        sizes.append(sum(len(c) for d in out.deliveries for c in d.records))
        count += len(unpack(out))
    return sizes, count


@pytest.mark.parametrize(
    "mode, redelivery",
    [
        (PART, False),
        (PART, True),
        (KEY, False),
        (KEY, True),
    ],
)
def test_a_response_carries_about_one_mebibyte_of_records_at_most(h, mode, redelivery):
    """Every response holds at most RESPONSE_BYTES plus one record, for fresh deliveries and redeliveries alike."""
    h.topic("big")
    for i in range(40):
        h.produce("big", 0, [(b"k%d" % i, bytes(100_000))])
    m = h.join("g", ["big"], mode=mode)
    sizes, count = response_sizes(m)
    assert count == 40
    if redelivery:
        m.session.nack([(1, 41)])
        sizes, count = response_sizes(m)
        assert count == 40
    assert max(sizes) <= RESPONSE_BYTES + 100_010, sizes
