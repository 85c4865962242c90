"""Idempotent produce on a real Broker in tmp_path: producer ids and epochs, fencing, exactly-once
appends across close/reopen (snapshot path), a deleted or stale snapshot (log-scan path), threads
racing on one retry, and a producer process SIGKILLed mid-stream.

Records carry ``"<pid>/<epoch>/<sequence>"`` as their value, so the log can be read back and every
acknowledged sequence must appear exactly once, in order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logstore.broker.broker import Acks, Broker, ProduceResult
from logstore.broker.config import BrokerConfig
from logstore.broker.idempotence import PRODUCERS_TOPIC, SNAPSHOT_FILE, ProducerStamp
from logstore.broker.producerstate import REMEMBERED, AppendedBatch, ProducerStates
from logstore.clock import ManualClock
from logstore.errors import (
    FailedPrecondition,
    InvalidArgument,
    OutOfOrderSequence,
    ProducerFenced,
    UnknownProducer,
)
from logstore.storage.batch import HEADER
from logstore.storage.checkpoint import read_checkpoint, write_checkpoint
from logstore.storage.records import EncodedRecords, Record, encode_records

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
TOPIC = "events"
DAY_MS = 24 * 3600 * 1000


def open_broker(data_dir: Path, clock: ManualClock | None = None) -> Broker:
    return Broker.open(data_dir, clock=clock or ManualClock(T0), start_scheduler=False)


def records_for(pid: int, epoch: int, seq: int, count: int, ts: int = T0) -> EncodedRecords:
    return encode_records(
        [Record(b"k", f"{pid}/{epoch}/{seq + i}".encode(), (), ts) for i in range(count)]
    )


def produce(broker: Broker, partition: int, pid: int, epoch: int, seq: int, count: int, *,
            topic: str = TOPIC, ts: int = T0, acks: Acks = Acks.LEADER) -> ProduceResult:
    [result] = broker.produce(
        topic, [(partition, records_for(pid, epoch, seq, count, ts))], acks,
        producer=ProducerStamp(pid, epoch, seq),
    )
    assert isinstance(result, ProduceResult)
    return result


def log_end(broker: Broker, partition: int = 0, topic: str = TOPIC) -> int:
    return broker.partition(topic, partition).log.log_end_offset


def all_records(broker: Broker, partition: int = 0, topic: str = TOPIC) -> list[tuple[int, bytes]]:
    log = broker.partition(topic, partition).log
    out: list[tuple[int, bytes]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        got = log.read_records(offset)
        out.extend((o, r.value) for o, r in got)
        offset = got[-1][0] + 1
    return out


def snapshot_path(broker_or_dir: Broker | Path, partition: int = 0) -> Path:
    data_dir = broker_or_dir.data_dir if isinstance(broker_or_dir, Broker) else broker_or_dir
    return data_dir / "topics" / TOPIC / str(partition) / SNAPSHOT_FILE


@dataclass
class Sent:
    seq: int
    count: int
    base: int
    append_time: int


@dataclass
class Producer:
    """A test-side idempotent producer on one partition: its id, epoch, next sequence, acked batches."""

    pid: int
    epoch: int
    partition: int = 0
    next_seq: int = 0
    acked: list[Sent] = field(default_factory=list)

    def send(self, broker: Broker, count: int, ts: int = T0) -> ProduceResult:
        result = produce(broker, self.partition, self.pid, self.epoch, self.next_seq, count, ts=ts)
        assert not result.duplicate
        self.acked.append(Sent(self.next_seq, count, result.base_offset, result.append_time_ms))
        self.next_seq += count
        return result

    def retry(self, broker: Broker, sent: Sent) -> ProduceResult:
        return produce(broker, self.partition, self.pid, self.epoch, sent.seq, sent.count)


def assert_retries_behave(broker: Broker, producer: Producer, *, check_time: bool = True) -> None:
    """Retrying each remembered acked batch is a duplicate with its original offsets; older ones get
    OutOfOrderSequence naming the next sequence; nothing is appended either way."""
    end = log_end(broker, producer.partition)
    for sent in producer.acked[-REMEMBERED:]:
        result = producer.retry(broker, sent)
        assert result.duplicate, sent
        assert result.base_offset == sent.base and result.record_count == sent.count
        if check_time:
            assert result.append_time_ms == sent.append_time
    for sent in producer.acked[:-REMEMBERED]:
        with pytest.raises(OutOfOrderSequence) as info:
            producer.retry(broker, sent)
        assert info.value.expected == producer.next_seq
    assert log_end(broker, producer.partition) == end


def assert_log_holds_each_sequence_once(broker: Broker, producer: Producer) -> None:
    """The producer's records in the partition are its sequences 0.. next, each exactly once, in order,
    at the offsets it was told."""
    mine = [(o, v) for o, v in all_records(broker, producer.partition)
            if v.startswith(f"{producer.pid}/{producer.epoch}/".encode())]
    assert [v for _, v in mine] == [f"{producer.pid}/{producer.epoch}/{s}".encode() for s in range(producer.next_seq)]
    told = {s.base + i: s.seq + i for s in producer.acked for i in range(s.count)}
    assert {o: int(v.rsplit(b"/", 1)[1]) for o, v in mine} == told


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory holding topic 'events' (2 partitions) and 'other' (1)."""
    path = tmp_path / "data"
    broker = open_broker(path)
    broker.create_topic(TOPIC, 2)
    broker.create_topic("other", 1)
    broker.close()
    return path


@pytest.fixture
def broker(data_dir: Path):
    b = open_broker(data_dir)
    yield b
    b.close()


# -- the registry: InitProducer, fencing, unknown producers --------------------------------------------


def test_init_producer_without_client_id_gives_fresh_ids(broker):
    """Anonymous InitProducer hands out a new id at epoch 0 each time, never the same twice."""
    issued = [broker.init_producer() for _ in range(5)]
    assert [p.epoch for p in issued] == [0] * 5
    assert len({p.producer_id for p in issued}) == 5
    assert all(p.producer_id >= 0 for p in issued)


def test_init_producer_with_client_id_bumps_epoch_and_shares_the_id_space(broker):
    """A known client id keeps its id and gets the next epoch; other registrations never get that id."""
    a0 = broker.init_producer("app-a")
    anon = broker.init_producer()
    a1 = broker.init_producer("app-a")
    b0 = broker.init_producer("app-b")
    a2 = broker.init_producer("app-a")
    assert (a1.producer_id, a1.epoch) == (a0.producer_id, 1)
    assert (a2.producer_id, a2.epoch) == (a0.producer_id, 2)
    assert b0.epoch == 0
    assert len({a0.producer_id, anon.producer_id, b0.producer_id}) == 3


def test_bumped_epoch_fences_the_old_one_everywhere(broker):
    """A re-registered client's old epoch is fenced on every partition and topic (written or not), appending nothing; the new epoch starts at 0."""
    old = broker.init_producer("svc")
    for seq in range(3):
        produce(broker, 0, old.producer_id, old.epoch, seq, 1)
    new = broker.init_producer("svc")
    ends = (log_end(broker, 0), log_end(broker, 1), log_end(broker, 0, "other"))
    with pytest.raises(ProducerFenced) as info:
        produce(broker, 0, old.producer_id, old.epoch, 3, 1)  # its next batch
    assert isinstance(info.value, FailedPrecondition) and info.value.grpc_status == "FAILED_PRECONDITION"
    with pytest.raises(ProducerFenced):
        produce(broker, 0, old.producer_id, old.epoch, 2, 1)  # a retry of its last batch: no duplicate answer
    with pytest.raises(ProducerFenced):
        produce(broker, 1, old.producer_id, old.epoch, 0, 1)  # a partition it never wrote
    with pytest.raises(ProducerFenced):
        produce(broker, 0, old.producer_id, old.epoch, 0, 1, topic="other")
    assert (log_end(broker, 0), log_end(broker, 1), log_end(broker, 0, "other")) == ends

    with pytest.raises(OutOfOrderSequence) as oos:
        produce(broker, 0, new.producer_id, new.epoch, 3, 1)  # the new epoch does not continue the old one
    assert oos.value.expected == 0
    first = produce(broker, 0, new.producer_id, new.epoch, 0, 1)
    assert not first.duplicate and first.base_offset == ends[0]


def test_unknown_producer_ids_and_epochs_are_refused(broker):
    """A producer id never issued, or an epoch above the latest issued, gets UnknownProducer and appends nothing."""
    with pytest.raises(UnknownProducer) as info:
        produce(broker, 0, 0, 0, 0, 1)  # nothing registered yet at all
    assert isinstance(info.value, FailedPrecondition) and info.value.grpc_status == "FAILED_PRECONDITION"
    issued = broker.init_producer("x")
    with pytest.raises(UnknownProducer):
        produce(broker, 0, issued.producer_id + 1000, 0, 0, 1)
    with pytest.raises(UnknownProducer):
        produce(broker, 0, issued.producer_id, issued.epoch + 1, 0, 1)
    assert log_end(broker, 0) == 0
    assert not produce(broker, 0, issued.producer_id, issued.epoch, 0, 1).duplicate


def test_registry_survives_close_and_reopen(data_dir):
    """After a restart ids are never reused, client ids keep their id and epoch, old epochs stay fenced."""
    broker = open_broker(data_dir)
    a0 = broker.init_producer("app-a")
    a1 = broker.init_producer("app-a")
    anon = [broker.init_producer() for _ in range(3)]
    broker.close()

    broker = open_broker(data_dir)
    try:
        with pytest.raises(ProducerFenced):
            produce(broker, 0, a0.producer_id, a0.epoch, 0, 1)
        assert not produce(broker, 0, a1.producer_id, a1.epoch, 0, 1).duplicate  # epoch 1 still current
        assert not produce(broker, 1, anon[0].producer_id, 0, 0, 1).duplicate
        fresh = broker.init_producer()
        assert fresh.producer_id not in {a0.producer_id, *(p.producer_id for p in anon)}
        a2 = broker.init_producer("app-a")
        assert (a2.producer_id, a2.epoch) == (a0.producer_id, 2)
        with pytest.raises(ProducerFenced):
            produce(broker, 0, a1.producer_id, a1.epoch, 1, 1)
        assert broker.topic(PRODUCERS_TOPIC).metadata.config.retention_ms == -1
    finally:
        broker.close()


def test_anonymous_ids_are_reserved_in_blocks_and_never_reissued_after_a_restart(data_dir):
    """2,500 anonymous registrations write 3 registry records, not 2,500; after a restart every issued id still
    produces at epoch 0, new ids come after every id handed out, and ids past them are unknown."""
    broker = open_broker(data_dir)
    issued = [broker.init_producer() for _ in range(2_500)]
    named = broker.init_producer("named")
    assert len({p.producer_id for p in issued}) == 2_500 and named.producer_id not in {p.producer_id for p in issued}
    assert broker.topic(PRODUCERS_TOPIC).partitions[0].log.log_end_offset == 3 + 1  # 3 blocks + the named one
    broker.close()

    broker = open_broker(data_dir)
    try:
        for p in (issued[0], issued[1_234], issued[-1]):
            assert not produce(broker, 0, p.producer_id, 0, 0, 1).duplicate
        with pytest.raises(UnknownProducer):
            produce(broker, 0, issued[5].producer_id, 1, 0, 1)  # anonymous ids only ever have epoch 0
        fresh = broker.init_producer()
        assert fresh.producer_id > max(p.producer_id for p in issued) and fresh.producer_id != named.producer_id
        with pytest.raises(UnknownProducer):
            produce(broker, 0, fresh.producer_id + 10 * 1000, 0, 0, 1)
        again = broker.init_producer("named")
        assert (again.producer_id, again.epoch) == (named.producer_id, 1)
    finally:
        broker.close()


def test_stamp_and_request_shape_are_validated(broker):
    """Out-of-range stamps and an idempotent produce to two partitions are InvalidArgument; nothing appended."""
    with pytest.raises(InvalidArgument):
        ProducerStamp(-1, 0, 0)
    with pytest.raises(InvalidArgument):
        ProducerStamp(0, 1 << 15, 0)
    with pytest.raises(InvalidArgument):
        ProducerStamp(0, 0, 1 << 31)
    p = broker.init_producer()
    with pytest.raises(InvalidArgument):
        broker.produce(TOPIC, [(0, records_for(p.producer_id, 0, 0, 1)), (1, records_for(p.producer_id, 0, 1, 1))],
                       producer=ProducerStamp(p.producer_id, 0, 0))
    assert log_end(broker, 0) == log_end(broker, 1) == 0


# -- exactly-once appends on a live broker -------------------------------------------------------------------


def test_stored_batch_header_carries_the_stamp(broker):
    """An idempotent append stores the producer id, epoch and base sequence in the batch header."""
    p = broker.init_producer()
    produce(broker, 0, p.producer_id, p.epoch, 0, 3)
    result = produce(broker, 0, p.producer_id, p.epoch, 3, 2)
    [raw] = broker.partition(TOPIC, 0).log.read(result.base_offset)
    header = HEADER.unpack_from(raw, 0)
    assert (header[0], header[5]) == (3, 2)  # base offset, record count
    assert header[8:11] == (p.producer_id, p.epoch, 3)


def test_duplicates_return_original_offsets_and_append_nothing(broker):
    """Retries of the last 5 batches are duplicates at their original offsets; older retries, gaps, overlaps get the next sequence; nothing appended."""
    other = Producer(broker.init_producer().producer_id, 0)
    p = Producer(broker.init_producer().producer_id, 0)
    for i in range(8):
        p.send(broker, 1 + i % 3)
        other.send(broker, 2)  # interleaved, so offsets differ from sequences
    assert_retries_behave(broker, p)
    end = log_end(broker)
    for seq, count in ((p.next_seq + 1, 1), (p.acked[-1].seq, p.acked[-1].count + 1), (p.acked[-1].seq + 1, 1)):
        with pytest.raises(OutOfOrderSequence) as info:
            produce(broker, 0, p.pid, p.epoch, seq, count)
        assert info.value.expected == p.next_seq and info.value.grpc_status == "OUT_OF_RANGE"
    assert log_end(broker) == end
    p.send(broker, 2)
    assert p.acked[-1].base == end
    assert_log_holds_each_sequence_once(broker, p)
    assert_log_holds_each_sequence_once(broker, other)


def test_duplicate_with_durable_acks_is_still_a_duplicate(broker):
    """acks=DURABLE on a retry answers the original offsets and appends nothing."""
    p = Producer(broker.init_producer().producer_id, 0)
    p.send(broker, 3)
    result = produce(broker, 0, p.pid, p.epoch, 0, 3, acks=Acks.DURABLE)
    assert result.duplicate and result.base_offset == 0 and log_end(broker) == 3


def test_sequences_are_per_partition(broker):
    """Each partition of a producer starts at 0 and deduplicates on its own."""
    p0 = Producer(broker.init_producer().producer_id, 0, partition=0)
    p1 = Producer(p0.pid, 0, partition=1)
    p0.send(broker, 2)
    p1.send(broker, 1)
    p0.send(broker, 1)
    p1.send(broker, 4)
    assert_retries_behave(broker, p0)
    assert_retries_behave(broker, p1)
    assert_log_holds_each_sequence_once(broker, p0)
    assert_log_holds_each_sequence_once(broker, p1)


# -- across restarts: snapshot path, log-scan path, stale snapshot ------------------------------------------------


def fill(data_dir: Path, batches: int = 9) -> tuple[Producer, Producer]:
    """Open, run two producers on partition 0 (records stamped a day behind the broker clock), close."""
    broker = open_broker(data_dir)
    try:
        p = Producer(broker.init_producer("filler").producer_id, 0)
        q = Producer(broker.init_producer().producer_id, 0)
        for i in range(batches):
            p.send(broker, 1 + i % 4, ts=T0 - DAY_MS)
            if i % 2:
                q.send(broker, 1, ts=T0 - DAY_MS)
            broker.append(TOPIC, 0, encode_records([Record(None, b"plain", (), T0)]))  # not idempotent
    finally:
        broker.close()
    return p, q


def test_duplicates_after_close_and_reopen_use_the_snapshot(data_dir):
    """After close+reopen the snapshot answers retries with the original offsets and append times; the next sequence is accepted."""
    p, q = fill(data_dir)
    text = read_checkpoint(snapshot_path(data_dir))
    assert text is not None
    snap, offset = ProducerStates.from_text(text)
    broker = open_broker(data_dir)
    try:
        assert offset == log_end(broker)
        last = p.acked[-1]
        assert snap.check(p.pid, 0, last.seq, last.count) == AppendedBatch(last.seq, last.count, last.base, T0)
        # the append time answered is the broker's time of the original append, which only the snapshot
        # keeps (a log scan would answer the records' max timestamp, a day earlier)
        assert_retries_behave(broker, p)
        assert_retries_behave(broker, q)
        end = log_end(broker)
        assert p.send(broker, 1).base_offset == end
        assert_log_holds_each_sequence_once(broker, p)
        assert_log_holds_each_sequence_once(broker, q)
    finally:
        broker.close()


def test_duplicates_after_reopen_without_snapshot_use_the_log_scan(data_dir):
    """With producers.snapshot deleted, the log scan answers retries with the original offsets; the next sequence is accepted."""
    p, q = fill(data_dir)
    snapshot_path(data_dir).unlink()
    broker = open_broker(data_dir)
    try:
        end = log_end(broker)
        assert_retries_behave(broker, p, check_time=False)
        assert_retries_behave(broker, q, check_time=False)
        assert log_end(broker) == end
        assert p.send(broker, 2).base_offset == end
        assert q.send(broker, 1).base_offset == end + 2
        assert_log_holds_each_sequence_once(broker, p)
        assert_log_holds_each_sequence_once(broker, q)
    finally:
        broker.close()
    assert ProducerStates.from_text(read_checkpoint(snapshot_path(data_dir)))[1] == end + 3


def test_snapshot_past_the_log_end_is_ignored_and_the_log_is_scanned(data_dir):
    """A snapshot whose offset is past the log end is ignored: answers come from the log scan, not from its claims."""
    p, _q = fill(data_dir)
    broker = open_broker(data_dir)
    end = log_end(broker)
    broker.close()
    lying = ProducerStates()
    for i, sent in enumerate(p.acked):  # the real batches, at wrong offsets...
        lying.record(p.pid, 0, sent.seq, sent.count, 10_000 + i, T0)
    lying.record(p.pid, 0, p.next_seq, 3, 20_000, T0)  # ...plus a batch the log does not have
    write_checkpoint(snapshot_path(data_dir), lying.to_text(end + 50))

    broker = open_broker(data_dir)
    try:
        assert_retries_behave(broker, p, check_time=False)  # original offsets, not 10_000 + i
        result = produce(broker, 0, p.pid, 0, p.next_seq, 3)
        assert not result.duplicate and result.base_offset == end
    finally:
        broker.close()


def test_snapshot_is_written_by_the_scheduler_at_checkpoint_intervals(data_dir):
    """With the scheduler running, producers.snapshot appears without a close, at the log end, holding the producer's batches."""
    broker = Broker.open(data_dir, BrokerConfig(scheduler_interval_ms=10, checkpoint_interval_ms=0),
                         clock=ManualClock(T0))
    try:
        p = Producer(broker.init_producer().producer_id, 0)
        for _ in range(3):
            p.send(broker, 2)
        path = snapshot_path(broker)
        for _ in range(1000):  # waits for the scheduler thread (at most ~10 s), not for a deadline
            text = read_checkpoint(path)
            if text is not None and ProducerStates.from_text(text)[1] == 6:
                break
            time.sleep(0.01)
        snap, offset = ProducerStates.from_text(read_checkpoint(path))
        assert offset == 6
        assert snap.check(p.pid, 0, 4, 2) == AppendedBatch(4, 2, 4, T0)
    finally:
        broker.close()


# -- concurrency -------------------------------------------------------------------------------------------


def test_threads_retrying_the_same_batch_append_it_once(broker):
    """Threads racing to send the same stamped batch append it exactly once; every answer names the same offsets."""
    threads_per_batch = 8
    producers = [Producer(broker.init_producer().producer_id, 0) for _ in range(2)]
    for round_ in range(25):
        count = 1 + round_ % 3
        barrier = threading.Barrier(threads_per_batch * len(producers))
        results: list[tuple[int, ProduceResult | BaseException]] = []
        lock = threading.Lock()

        def send(i: int, p: Producer) -> None:
            barrier.wait()
            try:
                r: ProduceResult | BaseException = produce(broker, 0, p.pid, 0, p.next_seq, count)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
                r = exc
            with lock:
                results.append((i, r))

        threads = [threading.Thread(target=send, args=(i, p)) for i, p in enumerate(producers)
                   for _ in range(threads_per_batch)]
        end = log_end(broker)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, p in enumerate(producers):
            mine = [r for j, r in results if j == i]
            assert all(isinstance(r, ProduceResult) for r in mine), mine
            assert sum(not r.duplicate for r in mine) == 1
            assert len({r.base_offset for r in mine}) == 1
            first = next(r for r in mine if not r.duplicate)
            p.acked.append(Sent(p.next_seq, count, first.base_offset, first.append_time_ms))
            p.next_seq += count
        assert log_end(broker) == end + count * len(producers)
    for p in producers:
        assert_log_holds_each_sequence_once(broker, p)


# -- a real crash ------------------------------------------------------------------------------------------

CHILD = """
import json, os, signal, sys
from logstore.broker.broker import Broker
from logstore.broker.idempotence import ProducerStamp
from logstore.storage.records import Record, encode_records

data_dir, pid, epoch, seq, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
broker = Broker.open(data_dir, start_scheduler=False)
anonymous = broker.init_producer()
print(json.dumps({"anonymous": anonymous.producer_id}), flush=True)
for i in range(batches):
    n = 1 + i % 3
    records = encode_records([Record(b"k", f"{pid}/{epoch}/{seq + j}".encode(), (), 1_700_000_000_000) for j in range(n)])
    [r] = broker.produce("events", [(0, records)], producer=ProducerStamp(pid, epoch, seq))
    assert not r.duplicate
    print(json.dumps({"seq": seq, "count": n, "base": r.base_offset, "time": r.append_time_ms}), flush=True)
    seq += n
os.kill(os.getpid(), signal.SIGKILL)
"""
"""``python -c`` body: ``CHILD DATA_DIR PID EPOCH FIRST_SEQ BATCHES`` registers an anonymous producer,
produces BATCHES idempotent batches to events/0 printing each acknowledgement, then SIGKILLs itself."""


def run_child_until_killed(data_dir: Path, p: Producer, batches: int, stderr_path: Path) -> tuple[int, list[Sent]]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(stderr_path, "wb") as err:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(data_dir), str(p.pid), str(p.epoch), str(p.next_seq), str(batches)],
            stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO_ROOT), timeout=60,
        )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, stderr_path.read_text())
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    anonymous = lines[0]["anonymous"]
    acked = [Sent(d["seq"], d["count"], d["base"], d["time"]) for d in lines[1:]]
    assert len(acked) == batches
    return anonymous, acked


@pytest.mark.parametrize(
    ("before", "in_child"),
    [(0, 9), (3, 3), (7, 12)],
    ids=["no-snapshot", "window-spans-snapshot-and-tail", "snapshot-then-long-tail"],
)
def test_sigkilled_producer_retries_are_duplicates_after_recovery(data_dir, tmp_path, before, in_child):
    """After SIGKILL, remembered acknowledged batches are duplicates at their acked offsets, older ones refused, the next accepted, registrations kept."""
    broker = open_broker(data_dir)
    p = Producer(broker.init_producer("crash-client").producer_id, 0)
    for i in range(before):
        p.send(broker, 1 + i % 2)
    broker.close()
    assert snapshot_path(data_dir).exists() == (before > 0)

    anonymous, acked = run_child_until_killed(data_dir, p, in_child, tmp_path / "child.stderr")
    for sent in acked:
        assert sent.seq == p.next_seq
        p.acked.append(sent)
        p.next_seq += sent.count

    broker = open_broker(data_dir)
    try:
        assert not broker.partition(TOPIC, 0).log.last_recovery.clean  # it really was a crash
        end = log_end(broker)
        assert end == p.acked[-1].base + p.acked[-1].count
        assert_retries_behave(broker, p, check_time=False)  # the scan answers the records' timestamp
        assert log_end(broker) == end
        assert p.send(broker, 2).base_offset == end
        assert_log_holds_each_sequence_once(broker, p)

        # the registry kept what the child registered before dying
        assert not produce(broker, 1, anonymous, 0, 0, 1).duplicate
        assert broker.init_producer().producer_id not in (p.pid, anonymous)
        again = broker.init_producer("crash-client")
        assert (again.producer_id, again.epoch) == (p.pid, 1)
    finally:
        broker.close()


# -- regressions (bugs found while writing these tests) --------------------------------------------------------------------------------------------


def test_a_stale_snapshot_is_never_trusted_even_after_plain_appends_pass_its_offset(data_dir):
    """A snapshot past the log end at startup is never trusted, even if plain appends later pass its offset."""
    broker = open_broker(data_dir)
    p = Producer(broker.init_producer().producer_id, 0)
    p.send(broker, 1)  # seq 0 at offset 0
    broker.close()
    # The table had also seen seq 1 at offset 1 and was snapshotted, then the log lost that tail.
    lost = ProducerStates()
    lost.record(p.pid, 0, 0, 1, 0, T0)
    lost.record(p.pid, 0, 1, 1, 1, T0)
    write_checkpoint(snapshot_path(data_dir), lost.to_text(2))

    broker = open_broker(data_dir)
    try:
        assert log_end(broker) == 1  # the snapshot is past the log end now
        broker.append(TOPIC, 0, encode_records([Record(None, b"someone else", (), T0)]))  # offset 1
        result = produce(broker, 0, p.pid, 0, 1, 1)  # the producer (re)sends seq 1
        stored = dict(all_records(broker))
        assert stored[result.base_offset] == f"{p.pid}/0/1".encode(), (result, stored)
    finally:
        broker.close()


def test_a_producer_with_old_record_timestamps_does_not_expire_after_a_log_scan(data_dir):
    """A producer that wrote a moment ago (broker clock) stays remembered across restarts, whatever its records' timestamps."""
    clock = ManualClock(T0)
    broker = open_broker(data_dir, clock)
    p = Producer(broker.init_producer().producer_id, 0)
    for _ in range(3):
        p.send(broker, 1, ts=T0 - 30 * DAY_MS)  # backfilled events: a month old
    broker.close()
    live_snapshot, _ = ProducerStates.from_text(read_checkpoint(snapshot_path(data_dir)))
    assert live_snapshot.epoch_of(p.pid) == 0  # live appends count idleness by the broker clock

    snapshot_path(data_dir).unlink()  # e.g. a crash before any snapshot was written
    broker = open_broker(data_dir, clock)
    assert produce(broker, 0, p.pid, 0, 2, 1).duplicate  # the rebuilt table knows the producer...
    broker.close()  # ...but the snapshot at close expires it: "idle" since its records' timestamps
    broker = open_broker(data_dir, clock)
    try:
        result = produce(broker, 0, p.pid, 0, 2, 1)
        assert result.duplicate and result.base_offset == p.acked[-1].base
    finally:
        broker.close()
