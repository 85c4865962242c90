"""KeyScheduler against a reference model under random add/take/release/requeue operations.

``Model`` is the scheduler's promise written the slow, obvious way: a FIFO
list per key, a set of busy keys, and ``take`` = the lowest head offsets of
idle keys.  Every random step runs on both; what ``take`` hands out must be
exactly the model's choice, and the per-key histories must show FIFO order
(requeues included) and never two records of a key out at once.
"""

from __future__ import annotations

import random
from typing import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.broker.keyorder import KeyScheduler, Waiting
from logstore.errors import FailedPrecondition


def slot_of(key: bytes | None, offset: int) -> Hashable:
    return key if key is not None else (None, offset)


class Model:
    """The reference: per-key FIFO lists and a busy set; no heap, no cleverness."""

    def __init__(self) -> None:
        self.queues: dict[Hashable, list[int]] = {}
        self.busy: set[Hashable] = set()

    def add(self, slot: Hashable, offset: int) -> None:
        self.queues.setdefault(slot, []).append(offset)

    def take(self, limit: int) -> list[int]:
        heads = sorted((q[0], s) for s, q in self.queues.items() if q and s not in self.busy)
        chosen = heads[:limit]
        for offset, slot in chosen:
            self.queues[slot].pop(0)
            self.busy.add(slot)
        return [offset for offset, _ in chosen]

    def release(self, slot: Hashable) -> None:
        self.busy.remove(slot)

    def requeue(self, slot: Hashable, offset: int) -> None:
        self.busy.remove(slot)
        self.queues.setdefault(slot, []).insert(0, offset)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self.queues.values())


class Driver:
    """One real scheduler, its model, and the checks of every step."""

    def __init__(self) -> None:
        self.real = KeyScheduler()
        self.model = Model()
        self.next_offset = 0
        self.out: dict[Hashable, Waiting] = {}
        """Slot -> the record handed out for it (at most one per slot, by the promise)."""
        self.added: dict[Hashable, list[int]] = {}
        self.done: dict[Hashable, list[int]] = {}
        self.handed: dict[Hashable, list[int]] = {}

    def add(self, key: bytes | None) -> None:
        offset = self.next_offset
        self.next_offset += 1 + (offset % 3 == 0)  # gaps, as after retention or other partitions' records
        slot = slot_of(key, offset)
        self.real.add(Waiting(offset, key, b"raw-%d" % offset))
        self.model.add(slot, offset)
        self.added.setdefault(slot, []).append(offset)

    def take(self, limit: int) -> list[Waiting]:
        got = self.real.take(limit)
        expected = self.model.take(limit)
        assert [w.offset for w in got] == expected, "take must hand out the lowest eligible offsets"
        assert [w.offset for w in got] == sorted(w.offset for w in got)
        for w in got:
            slot = KeyScheduler.slot(w)
            assert slot not in self.out, f"two records of key {slot!r} out at once"
            assert w.raw == b"raw-%d" % w.offset
            self.out[slot] = w
            history = self.handed.setdefault(slot, [])
            finished = self.done.get(slot, [])
            # FIFO per key: the next record not finished yet, whether first delivery or redelivery.
            assert w.offset == self.added[slot][len(finished)], (slot, w.offset, finished)
            history.append(w.offset)
        return got

    def release(self, rng: random.Random) -> None:
        slot = rng.choice(sorted(self.out, key=repr))
        w = self.out.pop(slot)
        self.real.release(slot)
        self.model.release(slot)
        self.done.setdefault(slot, []).append(w.offset)

    def requeue(self, rng: random.Random) -> None:
        slot = rng.choice(sorted(self.out, key=repr))
        w = self.out.pop(slot)
        w.attempts += 1
        self.real.requeue(w)
        self.model.requeue(slot, w.offset)

    def check(self) -> None:
        assert self.real.waiting == self.model.waiting
        assert self.real.busy == len(self.model.busy) == len(self.out)
        for slot in list(self.added)[:50]:
            assert self.real.is_busy(slot) == (slot in self.model.busy)

    def drain(self) -> None:
        """Release everything until nothing is waiting or out; every key ends fully done, in order."""
        while self.out or self.real.waiting:
            self.take(1_000_000)
            for slot in list(self.out):
                w = self.out.pop(slot)
                self.real.release(slot)
                self.model.release(slot)
                self.done.setdefault(slot, []).append(w.offset)
            self.check()
        assert self.done == self.added, "every record is finished once, in per-key offset order"
        assert self.real.waiting == 0 and self.real.busy == 0


def run_random(seed: int, steps: int, key_count: int, null_share: float) -> Driver:
    rng = random.Random(seed)
    d = Driver()
    keys = [b"k%d" % i for i in range(key_count)]
    for _ in range(steps):
        op = rng.random()
        if op < 0.40:
            for _ in range(rng.randrange(1, 6)):
                d.add(None if rng.random() < null_share else rng.choice(keys))
        elif op < 0.65:
            d.take(rng.choice([0, 1, 2, 3, 5, 8, 1000]))
        elif op < 0.85:
            if d.out:
                d.release(rng)
        elif d.out:
            d.requeue(rng)
        d.check()
    d.drain()
    return d


@pytest.mark.parametrize("seed", range(10))
def test_random_operations_match_the_model(seed):
    """4,000 random add/take/release/requeue steps over 12 keys and null keys: real == model throughout."""
    d = run_random(seed, 4_000, key_count=12, null_share=0.15)
    assert sum(len(v) for v in d.done.values()) > 1_000


@pytest.mark.parametrize("seed", range(3))
def test_random_operations_with_hundreds_of_keys_match_the_model(seed):
    """3,000 random steps over 300 keys (most keys idle most of the time) agree with the model."""
    run_random(100 + seed, 3_000, key_count=300, null_share=0.05)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([b"a", b"b", b"c", b"", None])),
        st.tuples(st.just("take"), st.integers(0, 4)),
        st.tuples(st.just("release"), st.integers(0, 1000)),
        st.tuples(st.just("requeue"), st.integers(0, 1000)),
    ),
    max_size=120,
)


@given(OPS)
@settings(max_examples=400, deadline=None)
def test_hypothesis_operation_sequences_match_the_model(ops):
    """Any operation sequence over keys a, b, c, b'' and null agrees with the model and drains in FIFO order."""
    d = Driver()
    for op, arg in ops:
        if op == "add":
            d.add(arg)
        elif op == "take":
            d.take(arg)
        elif d.out:
            rng = random.Random(arg)
            if op == "release":
                d.release(rng)
            else:
                d.requeue(rng)
        d.check()
    d.drain()


def test_a_requeued_record_goes_out_before_later_records_of_its_key_and_keeps_its_attempts():
    """k@0 taken and requeued: next take gives k@0 again (attempts kept), not k@2; other keys go meanwhile."""
    s = KeyScheduler()
    for offset, key in [(0, b"k"), (1, b"j"), (2, b"k"), (3, b"j")]:
        s.add(Waiting(offset, key, b""))
    first = s.take(10)
    assert [w.offset for w in first] == [0, 1]
    first[0].attempts = 1
    s.requeue(first[0])
    again = s.take(10)
    assert [(w.offset, w.attempts) for w in again] == [(0, 1)]
    s.release(b"j")
    assert [w.offset for w in s.take(10)] == [3]
    s.release(b"k")
    assert [w.offset for w in s.take(10)] == [2]


def test_a_busy_key_holds_back_only_its_own_records():
    """With key k out, take hands out every other key's oldest record (lowest first) and none of k's."""
    s = KeyScheduler()
    s.add(Waiting(0, b"k", b""))
    assert [w.offset for w in s.take(1)] == [0]
    for offset, key in [(1, b"k"), (2, b"k"), (3, b"a"), (4, b"b"), (5, b"a")]:
        s.add(Waiting(offset, key, b""))
    assert [w.offset for w in s.take(10)] == [3, 4]
    assert s.waiting == 3 and s.busy == 3
    assert s.is_busy(b"k") and s.is_busy(b"a") and s.is_busy(b"b")


def test_null_keys_are_not_ordered_among_themselves():
    """Five null-key records all go out in one take; an empty key b'' is a real key (one at a time)."""
    s = KeyScheduler()
    for offset in range(5):
        s.add(Waiting(offset, None, b""))
    for offset in range(5, 8):
        s.add(Waiting(offset, b"", b""))
    got = s.take(100)
    assert [w.offset for w in got] == [0, 1, 2, 3, 4, 5]
    assert s.busy == 6 and s.waiting == 2
    s.release(KeyScheduler.slot(got[2]))
    assert s.busy == 5


def test_release_and_requeue_of_records_not_out_are_refused():
    """release of an idle key and requeue of a record never taken raise FailedPrecondition, state intact."""
    s = KeyScheduler()
    w = Waiting(0, b"k", b"")
    s.add(w)
    with pytest.raises(FailedPrecondition):
        s.release(b"k")
    with pytest.raises(FailedPrecondition):
        s.requeue(Waiting(9, b"other", b""))
    assert s.waiting == 1 and s.busy == 0
    assert s.take(1) == [w]


def test_clear_forgets_waiting_and_busy_records():
    """clear() empties the scheduler: nothing waiting, no key busy, a later add goes out at once."""
    s = KeyScheduler()
    for offset in range(4):
        s.add(Waiting(offset, b"k" if offset % 2 else None, b""))
    s.take(2)
    s.clear()
    assert s.waiting == 0 and s.busy == 0 and s.take(10) == []
    s.add(Waiting(10, b"k", b""))
    assert [w.offset for w in s.take(10)] == [10]
