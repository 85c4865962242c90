"""ProducerStates against a reference model under random idempotent-producer operations.

In the style of Kafka's OffsetIndexTest: a slow, obvious model runs next to
the real table and every answer must agree.  ``Model`` keeps, per producer
id, the full list of batches it ever appended (a dict of lists) and derives
everything from that list: the current epoch is the epoch of the last batch,
the expected sequence is the sum of the current epoch's record counts modulo
2^31 (each epoch starts at 0 and appends are contiguous), and a duplicate is
one of the last ``REMEMBERED`` batches of the current epoch.  The table
instead keeps only the last batches and a running "next" sequence, so the
two representations can only agree if the table's bookkeeping is right.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from logstore.broker.producerstate import (
    EXPIRE_MS,
    REMEMBERED,
    SEQUENCE_MODULUS,
    AppendedBatch,
    ProducerStates,
    next_sequence,
)
from logstore.errors import FailedPrecondition, OutOfOrderSequence, ProducerFenced

T0 = 1_700_000_000_000
MOD = SEQUENCE_MODULUS


@dataclass(frozen=True)
class Appended:
    epoch: int
    first_sequence: int
    count: int
    base_offset: int
    time_ms: int


class Model:
    """Every batch each producer appended, oldest first: ``{producer_id: [Appended, ...]}``."""

    def __init__(self) -> None:
        self.history: dict[int, list[Appended]] = {}

    def epoch(self, pid: int) -> int | None:
        h = self.history.get(pid)
        return h[-1].epoch if h else None

    def current(self, pid: int) -> list[Appended]:
        """The batches of the producer's current epoch (history epochs never decrease)."""
        h = self.history.get(pid, [])
        return [b for b in h if b.epoch == h[-1].epoch] if h else []

    def expected(self, pid: int) -> int:
        return sum(b.count for b in self.current(pid)) % MOD

    def last_write(self, pid: int) -> int:
        return max(b.time_ms for b in self.current(pid))

    def decide(self, pid: int, epoch: int, seq: int, count: int) -> tuple:
        """The answer the table must give: ("append",), ("dup", AppendedBatch), ("oos", expected), ("fenced",)."""
        current = self.epoch(pid)
        if current is None:
            return ("append",) if seq == 0 else ("oos", 0)
        if epoch < current:
            return ("fenced",)
        if epoch > current:
            return ("append",) if seq == 0 else ("oos", 0)
        for b in self.current(pid)[-REMEMBERED:]:
            if (b.first_sequence, b.count) == (seq, count):
                return ("dup", AppendedBatch(b.first_sequence, b.count, b.base_offset, b.time_ms))
        expected = self.expected(pid)
        return ("append",) if seq == expected else ("oos", expected)

    def append(self, pid: int, epoch: int, seq: int, count: int, base: int, time_ms: int) -> None:
        self.history.setdefault(pid, []).append(Appended(epoch, seq, count, base, time_ms))

    def expire(self, now_ms: int) -> int:
        idle = [pid for pid in self.history if now_ms - self.last_write(pid) >= EXPIRE_MS]
        for pid in idle:
            del self.history[pid]
        return len(idle)


def answer(table: ProducerStates, pid: int, epoch: int, seq: int, count: int) -> tuple:
    """The table's answer in the model's shape."""
    try:
        original = table.check(pid, epoch, seq, count)
    except OutOfOrderSequence as exc:
        assert exc.grpc_status == "OUT_OF_RANGE"
        assert exc.message.startswith(OutOfOrderSequence.MESSAGE_PREFIX)
        return ("oos", exc.expected)
    except ProducerFenced as exc:
        assert isinstance(exc, FailedPrecondition) and exc.grpc_status == "FAILED_PRECONDITION"
        return ("fenced",)
    return ("append",) if original is None else ("dup", original)


class Driver:
    """One real table, the model, a fake log end and clock; each op runs on both and compares."""

    PIDS = (0, 1, 2, 3, 7, 1 << 40)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.table = ProducerStates()
        self.model = Model()
        self.log_end = 0
        self.now = T0
        self.counts: dict[str, int] = {}

    # -- probes: candidate batches of every kind, for a given producer ----------------------

    def probe(self, pid: int) -> tuple[str, int, int, int]:
        """(kind, epoch, first sequence, count) of a random batch this producer could send."""
        rng = self.rng
        epoch = self.model.epoch(pid)
        current = self.model.current(pid)
        expected = self.model.expected(pid)
        kinds = ["next", "next", "next", "gap", "behind", "bump"]
        if current:
            kinds += ["retry", "retry", "retry", "overlap", "jump"]
            if len(current) > REMEMBERED:
                kinds += ["old"]
            if epoch:
                kinds += ["fenced"]
        kind = rng.choice(kinds)
        e = 0 if epoch is None else epoch
        count = rng.randint(1, 8)
        if kind == "next":
            return kind, e, expected, count
        if kind == "gap":
            return kind, e, (expected + rng.randint(1, 1000)) % MOD, count
        if kind == "behind":
            return kind, e, (expected - rng.randint(1, 50)) % MOD, count
        if kind == "bump":
            return kind, e + rng.randint(1, 3), rng.choice((0, 0, 0, rng.randint(1, 10))), count
        if kind == "retry":
            b = rng.choice(current[-REMEMBERED:])
            return kind, e, b.first_sequence, b.count
        if kind == "overlap":
            b = rng.choice(current[-REMEMBERED:])
            return kind, e, b.first_sequence, b.count + rng.randint(1, 3)
        if kind == "old":
            b = rng.choice(current[:-REMEMBERED])
            return kind, e, b.first_sequence, b.count
        if kind == "fenced":
            return kind, rng.randint(0, e - 1), rng.choice((0, expected)), count
        assert kind == "jump"
        # a batch at the expected sequence so large that the next one lands just before (or on) the wrap
        jump = (MOD - expected - rng.randint(0, 12)) % MOD
        return kind, e, expected, jump or count

    def check_agrees(self, table: ProducerStates, pid: int, epoch: int, seq: int, count: int) -> tuple:
        want = self.model.decide(pid, epoch, seq, count)
        got = answer(table, pid, epoch, seq, count)
        assert got == want, (pid, epoch, seq, count, self.model.history.get(pid))
        return want

    def check_table(self) -> None:
        assert len(self.table) == len(self.model.history)
        for pid in self.PIDS:
            assert self.table.epoch_of(pid) == self.model.epoch(pid)

    # -- operations ---------------------------------------------------------------------------

    def send(self) -> None:
        """One produce: check, and if allowed append (recorded live or observed from the log)."""
        pid = self.rng.choice(self.PIDS)
        kind, epoch, seq, count = self.probe(pid)
        decision = self.check_agrees(self.table, pid, epoch, seq, count)
        self.counts[f"{kind}:{decision[0]}"] = self.counts.get(f"{kind}:{decision[0]}", 0) + 1
        if decision[0] != "append":
            return
        self.now += self.rng.randint(0, 2000)
        if self.rng.random() < 0.3:
            # read back from the log: the time is the batch's max timestamp (the producer's clock, maybe behind)
            when = self.now - self.rng.choice((0, self.rng.randint(0, 10_000)))
            self.table.observe(pid, epoch, seq, count, self.log_end, when, when)
        else:
            when = self.now
            self.table.record(pid, epoch, seq, count, self.log_end, when)
        self.model.append(pid, epoch, seq, count, self.log_end, when)
        self.log_end += count

    def other_batch(self) -> None:
        """A batch read back from the log that must not change the table: no producer, or a zombie epoch."""
        count = self.rng.randint(1, 5)
        pid = self.rng.choice(self.PIDS)
        epoch = self.model.epoch(pid)
        if epoch and self.rng.random() < 0.5:
            self.table.observe(pid, self.rng.randint(0, epoch - 1), self.rng.randint(0, 100), count, self.log_end, self.now, self.now)
        else:
            self.table.observe(-1, -1, -1, count, self.log_end, self.now, self.now)
        self.log_end += count

    def snapshot_round_trip(self) -> None:
        """Continue with the table rebuilt from its own snapshot."""
        text = self.table.to_text(self.log_end)
        assert "\n" not in text
        restored, offset = ProducerStates.from_text(text)
        assert offset == self.log_end
        assert restored.to_text(self.log_end) == text
        self.table = restored

    def expire(self) -> None:
        """Move the clock (often right to a producer's expiry boundary, +-1 ms) and expire both."""
        if self.model.history and self.rng.random() < 0.6:
            pid = self.rng.choice(sorted(self.model.history))
            self.now = max(self.now, self.model.last_write(pid) + EXPIRE_MS + self.rng.choice((-1, 0)))
        else:
            self.now += self.rng.choice((0, self.rng.randint(0, EXPIRE_MS), EXPIRE_MS))
        assert self.table.expire(self.now) == self.model.expire(self.now)

    def step(self) -> None:
        r = self.rng.random()
        if r < 0.85:
            self.send()
        elif r < 0.93:
            self.other_batch()
        elif r < 0.98:
            self.snapshot_round_trip()
        else:
            self.expire()
        self.check_table()


@pytest.mark.parametrize("seed", range(12))
def test_table_agrees_with_the_model_under_random_operations(seed):
    """Every check answers as the full-history model does (duplicate with its original, append, expected sequence, fenced) under random operations."""
    driver = Driver(seed)
    for _ in range(3000):
        driver.step()
    # the run must have exercised every kind of answer, or it proved little
    seen = driver.counts
    for key in ("next:append", "retry:dup", "old:oos", "gap:oos", "behind:oos", "overlap:oos",
                "bump:append", "fenced:fenced", "jump:append"):
        assert seen.get(key, 0) > 0, (key, seen)


def test_random_runs_wrap_sequences_past_2_pow_31():
    """The random runs really cross the wrap: some appended batch straddles 2^31 and later ones restart low."""
    straddled = 0
    for seed in range(12):
        driver = Driver(seed)
        for _ in range(3000):
            driver.step()
            for h in driver.model.history.values():
                for a, b in zip(h, h[1:]):
                    if a.epoch == b.epoch and b.first_sequence < a.first_sequence:
                        straddled += 1
    assert straddled > 0


def test_snapshot_round_trip_answers_identically():
    """to_text/from_text gives back the offset and a table that answers every random probe like the original."""
    for seed in range(20):
        driver = Driver(1000 + seed)
        for _ in range(driver.rng.randint(0, 600)):
            driver.step()
        offset = driver.log_end
        restored, restored_offset = ProducerStates.from_text(driver.table.to_text(offset))
        assert restored_offset == offset
        assert len(restored) == len(driver.table)
        for _ in range(300):
            pid = driver.rng.choice(Driver.PIDS)
            _kind, epoch, seq, count = driver.probe(pid)
            assert answer(restored, pid, epoch, seq, count) == answer(driver.table, pid, epoch, seq, count)
            assert restored.epoch_of(pid) == driver.table.epoch_of(pid)
        now = driver.now + driver.rng.randint(0, 2 * EXPIRE_MS)
        assert restored.expire(now) == driver.table.expire(now)  # last write times survive too
        assert restored.to_text(offset) == driver.table.to_text(offset)


def test_empty_table_snapshot_round_trip():
    """An empty table snapshots and restores as empty, keeping the offset; a fresh producer must start at 0."""
    restored, offset = ProducerStates.from_text(ProducerStates().to_text(42))
    assert (len(restored), offset) == (0, 42)
    assert restored.check(5, 0, 0, 3) is None
    with pytest.raises(OutOfOrderSequence) as info:
        restored.check(5, 0, 1, 3)
    assert info.value.expected == 0


# -- sequences, duplicates and epochs, case by case ---------------------------------------------------


def test_next_sequence_wraps_at_2_pow_31():
    """next_sequence adds modulo 2^31: the sequence after 2^31-1 is 0."""
    assert next_sequence(0, 5) == 5
    assert next_sequence(MOD - 1, 1) == 0
    assert next_sequence(MOD - 2, 5) == 3
    assert next_sequence(MOD - 5, 5) == 0


def test_batch_straddling_the_wrap_is_deduplicated_and_followed():
    """A batch crossing 2^31 is deduplicated and followed at the wrapped sequence; gaps and old sequences across the wrap are refused."""
    table = ProducerStates()
    table.record(9, 0, 0, MOD - 2, 0, T0)  # brings the producer to sequence 2^31 - 2
    assert table.check(9, 0, MOD - 2, 5) is None
    table.record(9, 0, MOD - 2, 5, MOD - 2, T0 + 1)
    assert table.check(9, 0, MOD - 2, 5) == AppendedBatch(MOD - 2, 5, MOD - 2, T0 + 1)
    with pytest.raises(OutOfOrderSequence) as gap:
        table.check(9, 0, 13, 1)
    assert gap.value.expected == 3 and "a gap" in gap.value.message
    with pytest.raises(OutOfOrderSequence) as old:
        table.check(9, 0, MOD - 1, 1)
    assert old.value.expected == 3 and "no longer remembered" in old.value.message
    assert table.check(9, 0, 3, 1) is None


def test_only_the_last_five_batches_are_duplicates():
    """With 7 batches appended, retries of the last 5 return their originals; the 2 older ones are refused."""
    table = ProducerStates()
    seq = 0
    for i in range(7):
        assert table.check(1, 0, seq, 2) is None
        table.record(1, 0, seq, 2, 100 + 2 * i, T0 + i)
        seq += 2
    assert REMEMBERED == 5
    for i in range(2, 7):
        assert table.check(1, 0, 2 * i, 2) == AppendedBatch(2 * i, 2, 100 + 2 * i, T0 + i)
    for i in range(2):
        with pytest.raises(OutOfOrderSequence) as info:
            table.check(1, 0, 2 * i, 2)
        assert info.value.expected == 14


def test_epochs_fence_and_restart_at_zero():
    """A newer epoch must start at 0 and then fences the older one; a zombie batch read back changes nothing."""
    table = ProducerStates()
    table.record(4, 2, 0, 3, 0, T0)
    with pytest.raises(OutOfOrderSequence) as info:
        table.check(4, 3, 3, 1)
    assert info.value.expected == 0
    assert table.check(4, 3, 0, 1) is None
    table.record(4, 3, 0, 1, 3, T0 + 1)
    with pytest.raises(ProducerFenced):
        table.check(4, 2, 0, 3)  # even an exact retry of the old epoch's batch
    table.observe(4, 2, 3, 1, 4, T0 + 2, T0 + 2)
    assert table.epoch_of(4) == 3
    assert table.check(4, 3, 1, 1) is None
    assert table.check(4, 3, 0, 1) == AppendedBatch(0, 1, 3, T0 + 1)


def test_observe_ignores_batches_without_a_producer():
    """observe() of a plain batch (producer id -1) leaves the table empty."""
    table = ProducerStates()
    table.observe(-1, -1, -1, 10, 0, T0, T0)
    assert len(table) == 0 and table.epoch_of(-1) is None


# -- expiry -----------------------------------------------------------------------------------------


def test_expire_forgets_producers_idle_for_exactly_expire_ms():
    """A producer idle EXPIRE_MS - 1 is kept, idle EXPIRE_MS is forgotten and must start again at 0."""
    table = ProducerStates()
    table.record(1, 0, 0, 2, 0, T0)
    table.record(2, 0, 0, 2, 2, T0 + 10)
    assert table.expire(T0 + EXPIRE_MS - 1) == 0
    assert table.expire(T0 + EXPIRE_MS) == 1
    assert table.epoch_of(1) is None and table.epoch_of(2) == 0
    with pytest.raises(OutOfOrderSequence) as info:
        table.check(1, 0, 2, 1)  # its next batch: the state is gone
    assert info.value.expected == 0
    assert table.check(1, 0, 0, 2) is None  # no longer a duplicate: a restart at 0
    assert table.check(2, 0, 0, 2) == AppendedBatch(0, 2, 2, T0 + 10)


def test_expire_measures_from_the_latest_write_of_the_current_epoch():
    """The idle time counts from the newest append, and a new epoch's clock starts with its own batches."""
    table = ProducerStates()
    table.record(1, 0, 0, 1, 0, T0)
    table.record(1, 0, 1, 1, 1, T0 + 5000)
    assert table.expire(T0 + EXPIRE_MS) == 0
    assert table.expire(T0 + 5000 + EXPIRE_MS) == 1
    table.record(2, 0, 0, 1, 2, T0 + 9000)
    table.record(2, 1, 0, 1, 3, T0 + 8000)  # new epoch, older append time
    assert table.expire(T0 + 8000 + EXPIRE_MS) == 1


# -- malformed snapshots ------------------------------------------------------------------------------

MALFORMED = [
    "",
    "not json",
    "[]",
    "null",
    "42",
    '"text"',
    "{}",
    '{"offset": 3}',
    '{"producers": []}',
    '{"offset": null, "producers": []}',
    '{"offset": "x", "producers": []}',
    '{"offset": 3, "producers": 5}',
    '{"offset": 3, "producers": [null]}',
    '{"offset": 3, "producers": [[1, 0, 0]]}',
    '{"offset": 3, "producers": [[1, 0, 0, [[0, 1, 2]]]]}',
    '{"offset": 3, "producers": [[1, 0, 0, [[0, 1, 2, 3, 4]]]]}',
    '{"offset": 3, "producers": [["one", 0, 0, [[0, 1, 2, 3]]]]}',
    '{"offset": 3, "producers": [[1, 0, 0, [[0, null, 2, 3]]]]}',
    '{"offset": 3, "producers": [[1, 0, 0, 7]]}',
]


@pytest.mark.parametrize("text", MALFORMED)
def test_from_text_rejects_malformed_snapshots(text):
    """Malformed snapshot text raises ValueError (nothing else)."""
    with pytest.raises(ValueError):
        ProducerStates.from_text(text)


def test_from_text_rejects_every_truncation_of_a_valid_snapshot():
    """Every strict prefix of a real snapshot raises ValueError."""
    driver = Driver(77)
    for _ in range(300):
        driver.step()
    text = driver.table.to_text(driver.log_end)
    assert len(driver.table) > 0
    for cut in range(len(text)):
        with pytest.raises(ValueError):
            ProducerStates.from_text(text[:cut])


def test_from_text_on_random_corruption_raises_only_value_error():
    """One-character corruptions of a real snapshot either parse or raise ValueError, never another error."""
    driver = Driver(78)
    for _ in range(300):
        driver.step()
    text = driver.table.to_text(driver.log_end)
    rng = random.Random(5)
    rejected = 0
    for _ in range(3000):
        i = rng.randrange(len(text))
        corrupt = text[:i] + rng.choice('[]{},:"0123456789-ax ') + text[i + 1 :]
        try:
            table, _offset = ProducerStates.from_text(corrupt)
        except ValueError:
            rejected += 1
        else:
            assert isinstance(table, ProducerStates)
    assert rejected > 0


@pytest.mark.parametrize("text", ['{"offset": Infinity, "producers": []}', '{"offset": 1e400, "producers": []}'])
def test_from_text_rejects_infinite_numbers(text):
    """A snapshot whose offset is an infinite number raises ValueError like any other malformed one."""
    with pytest.raises(ValueError):
        ProducerStates.from_text(text)


def test_from_text_rejects_a_producer_without_batches():
    """A snapshot either is rejected with ValueError or yields a table whose check() answers normally."""
    text = json.dumps({"offset": 3, "producers": [[1, 0, T0, []]]})
    try:
        table, _ = ProducerStates.from_text(text)
    except ValueError:
        return
    try:
        table.check(1, 0, 0, 1)
    except OutOfOrderSequence:
        pass
