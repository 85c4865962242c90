"""AckFloor against an oracle: a plain set of acked offsets, under random ack runs.

As Kafka's OffsetIndexTest checks its index against a sorted map, every
operation here is applied both to a real ``AckFloor`` and to ``Oracle``
(everything below the start plus a Python set); floor, runs, ``is_acked``
and ``acked_above`` must agree after each step.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.broker.ackfloor import AckFloor
from logstore.errors import InvalidArgument


class Oracle:
    """The acked offsets as a set; everything below ``base`` counts as acked."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.acked: set[int] = set()

    def add(self, start: int, end: int) -> None:
        self.acked.update(range(max(start, self.base), end))

    def reset(self, base: int) -> None:
        self.base = base
        self.acked = set()

    def skip_to(self, offset: int) -> None:
        self.add(self.base, offset)

    def is_acked(self, offset: int) -> bool:
        return offset < self.base or offset in self.acked

    @property
    def floor(self) -> int:
        f = self.base
        while f in self.acked:
            f += 1
        return f

    @property
    def runs(self) -> list[tuple[int, int]]:
        floor = self.floor
        runs: list[tuple[int, int]] = []
        for o in sorted(x for x in self.acked if x > floor):
            if runs and runs[-1][1] == o:
                runs[-1] = (runs[-1][0], o + 1)
            else:
                runs.append((o, o + 1))
        return runs


def check(real: AckFloor, oracle: Oracle, probe: range) -> None:
    assert real.floor == oracle.floor
    assert real.runs == oracle.runs
    assert real.acked_above() == sum(b - a for a, b in oracle.runs)
    runs = real.runs
    for (a, b), (c, _d) in zip(runs, runs[1:]):
        assert a < b < c, f"runs must be sorted, disjoint and non-adjacent: {runs}"
    assert all(a > real.floor for a, _ in runs), f"a run touches the floor: {real!r}"
    for offset in probe:
        assert real.is_acked(offset) == oracle.is_acked(offset), offset


def random_run(rng: random.Random, span: int) -> tuple[int, int]:
    """Mostly short runs anywhere in [0, span), sometimes empty, reversed or long."""
    start = rng.randrange(span)
    shape = rng.random()
    if shape < 0.05:
        return start, start - rng.randrange(3)  # empty or reversed: ignored
    if shape < 0.15:
        return start, start + rng.randrange(span // 4 + 1)
    return start, start + 1 + rng.randrange(6)


@pytest.mark.parametrize("seed", range(8))
def test_random_add_runs_match_the_set_oracle(seed):
    """5,000 random add() runs (out of order, overlapping, below the floor): floor, runs, is_acked match a set."""
    rng = random.Random(seed)
    base = rng.choice([0, 1, 17, 10_000])
    span = 400
    real, oracle = AckFloor(base), Oracle(base)
    probe = range(max(0, base - 3), base + span + 10)
    for step in range(5_000):
        start, end = random_run(rng, span)
        start += base - 5  # some runs begin below the floor
        start = max(start, 0)
        end += base - 5
        returned = real.add(start, end)
        oracle.add(start, end)
        assert returned == real.floor
        if step % 25 == 0 or returned != oracle.floor:
            check(real, oracle, probe)
    check(real, oracle, probe)


@pytest.mark.parametrize("seed", range(4))
def test_random_mix_with_reset_and_skip_to_matches_the_set_oracle(seed):
    """3,000 random add/reset/skip_to steps: the floor only moves as the oracle says, reset forgets everything."""
    rng = random.Random(1000 + seed)
    real, oracle = AckFloor(0), Oracle(0)
    for _ in range(3_000):
        op = rng.random()
        low = max(0, oracle.base - 20)
        if op < 0.85:
            start, end = random_run(rng, 200)
            start, end = low + start, low + end
            real.add(start, end)
            oracle.add(start, end)
        elif op < 0.95:
            target = low + rng.randrange(250)
            oracle.skip_to(target)
            assert real.skip_to(target) == oracle.floor
            assert real.floor >= target
        else:
            target = rng.randrange(300)
            real.reset(target)
            oracle.reset(target)
            assert real.runs == [] and real.floor == target
        check(real, oracle, range(max(0, oracle.base - 5), oracle.base + 260))


@given(
    base=st.integers(0, 50),
    runs=st.lists(st.tuples(st.integers(0, 120), st.integers(-3, 25)), max_size=80),
)
@settings(max_examples=400, deadline=None)
def test_hypothesis_add_runs_match_the_set_oracle(base, runs):
    """Any sequence of [start, start+len) runs: AckFloor agrees with the set oracle after every add."""
    real, oracle = AckFloor(base), Oracle(base)
    probe = range(0, 170)
    for start, length in runs:
        oracle.add(start, start + length)
        assert real.add(start, start + length) == oracle.floor
        check(real, oracle, probe)


@given(n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_any_ack_order_of_a_partition_into_runs_ends_at_its_end(n, seed):
    """[0, n) cut into runs acked in any order ends at floor n with no runs; only the run at the floor moves it."""
    rng = random.Random(seed)
    cuts = sorted(set(rng.sample(range(1, n), min(n - 1, rng.randrange(n)))) if n > 1 else [])
    bounds = [0, *cuts, n]
    runs = list(zip(bounds, bounds[1:]))
    rng.shuffle(runs)
    real, oracle = AckFloor(0), Oracle(0)
    for a, b in runs:
        before = real.floor
        real.add(a, b)
        oracle.add(a, b)
        assert real.floor == oracle.floor
        assert (real.floor != before) == (a == before)
    assert real.floor == n
    assert real.runs == [] and real.acked_above() == 0


def test_a_run_landing_on_the_floor_swallows_every_run_it_touches():
    """Runs [5,7), [7,9), [10,12) wait above floor 0; [0,5) moves the floor to 9, [9,10) then to 12."""
    f = AckFloor(0)
    for a, b in [(10, 12), (5, 7), (7, 9)]:
        assert f.add(a, b) == 0
    assert f.runs == [(5, 9), (10, 12)]
    assert f.add(0, 5) == 9
    assert f.runs == [(10, 12)]
    assert f.add(9, 10) == 12
    assert f.runs == []


def test_acks_below_the_floor_and_empty_runs_change_nothing():
    """An ack wholly below the floor, an empty run and a reversed run leave floor and runs alone."""
    f = AckFloor(10)
    f.add(12, 14)
    for a, b in [(0, 10), (3, 7), (11, 11), (14, 12)]:
        assert f.add(a, b) == 10
    assert f.runs == [(12, 14)]
    assert not f.is_acked(10) and not f.is_acked(11) and f.is_acked(9) and f.is_acked(13)


def test_reset_forgets_runs_and_may_lower_the_floor():
    """reset(3) after acks up to 20 sets floor 3 with no runs; offsets from 3 are unacked again."""
    f = AckFloor(0)
    f.add(0, 20)
    f.add(25, 30)
    f.reset(3)
    assert f.floor == 3 and f.runs == [] and f.acked_above() == 0
    assert f.is_acked(2) and not f.is_acked(3) and not f.is_acked(26)


def test_skip_to_raises_the_floor_and_merges_runs_it_reaches():
    """skip_to(8) with a run [8,12) waiting lands the floor at 12; skip_to below the floor is a no-op."""
    f = AckFloor(2)
    f.add(8, 12)
    f.add(15, 16)
    assert f.skip_to(8) == 12
    assert f.runs == [(15, 16)]
    assert f.skip_to(5) == 12
    assert f.floor == 12


@pytest.mark.parametrize("bad", [-1, -100])
def test_negative_floors_are_refused(bad):
    """AckFloor(-1) and reset(-1) raise InvalidArgument; the floor is unchanged by the failed reset."""
    with pytest.raises(InvalidArgument):
        AckFloor(bad)
    f = AckFloor(4)
    with pytest.raises(InvalidArgument):
        f.reset(bad)
    assert f.floor == 4
