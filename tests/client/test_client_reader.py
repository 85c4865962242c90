"""Reader and fetch against a real broker: exact records from every kind of start, stops, tailing."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from logstore import errors
from logstore.client import Message, Producer, Reader, fetch


def _produce(broker: str, topic: str, values: list[bytes], **kw: object) -> list:
    with Producer(broker, linger_ms=1000) as producer:  # lingering: one batch per partition
        futures = [producer.send(topic, v, **kw) for v in values]
    return [f.result() for f in futures]


def test_earliest_without_follow_reads_exactly_what_is_there(broker: str, make_topic) -> None:
    """start='earliest', follow=False yields every record once, per partition in offset order, then ends."""
    topic = make_topic(3)
    with Producer(broker, linger_ms=1, batch_bytes=300) as producer:
        futures = [producer.send(topic, b"m%03d" % i, partition=i % 3) for i in range(90)]
    expected = {(f.result().partition, f.result().offset): b"m%03d" % i for i, f in enumerate(futures)}
    with Reader(broker, topic, start="earliest", follow=False) as reader:
        got = list(reader)
    assert all(isinstance(m, Message) for m in got)
    assert {(m.partition, m.offset): m.value for m in got} == expected
    assert len(got) == 90
    for p in range(3):
        offsets = [m.offset for m in got if m.partition == p]
        assert offsets == list(range(30))


def test_start_offset_inside_a_batch_drops_the_records_before_it(broker: str, make_topic) -> None:
    """Starting at offset 5 of a 10-record batch yields offsets 5..9 only."""
    topic = make_topic()
    _produce(broker, topic, [b"%d" % i for i in range(10)])
    with Reader(broker, topic, start=5, follow=False) as reader:
        assert [(m.offset, m.value) for m in reader] == [(i, b"%d" % i) for i in range(5, 10)]


def test_stop_offset_inside_a_batch_drops_the_records_from_it(broker: str, make_topic) -> None:
    """stop=7 yields offsets below 7 only, even though the batch runs to 9, and ends without follow."""
    topic = make_topic()
    _produce(broker, topic, [b"%d" % i for i in range(10)])
    with Reader(broker, topic, start=2, stop=7) as reader:
        assert [m.offset for m in reader] == [2, 3, 4, 5, 6]


def test_start_by_timestamp_tuple_and_datetime(broker: str, make_topic) -> None:
    """A ('timestamp', ms) or datetime start begins at the first record at or after that time."""
    topic = make_topic()
    with Producer(broker, linger_ms=1000) as producer:
        for i in range(1, 6):
            producer.send(topic, b"t%d" % i, timestamp_ms=i * 1000)
    with Reader(broker, topic, start=("timestamp", 2500), follow=False) as reader:
        assert [m.value for m in reader] == [b"t3", b"t4", b"t5"]
    when = datetime.fromtimestamp(4.0, tz=timezone.utc)
    with Reader(broker, topic, start=when, follow=False) as reader:
        assert [(m.value, m.timestamp_ms) for m in reader] == [(b"t4", 4000), (b"t5", 5000)]


def test_stop_by_timestamp_while_following_ends_the_stream(broker: str, make_topic) -> None:
    """With follow=True and stop=('timestamp', 3000) the reader ends before the first record at 3000."""
    topic = make_topic()
    with Producer(broker, linger_ms=1000) as producer:
        for i in range(1, 6):
            producer.send(topic, b"t%d" % i, timestamp_ms=i * 1000)
    with Reader(broker, topic, start="earliest", stop=("timestamp", 3000), follow=True) as reader:
        assert [m.value for m in reader] == [b"t1", b"t2"]


def test_latest_sees_only_records_appended_after_the_reader_opened(broker: str, make_topic) -> None:
    """start='latest': records already there are skipped, records produced after poll(0) arrive in order."""
    topic = make_topic(2)
    _produce(broker, topic, [b"old-%d" % i for i in range(10)])
    with Reader(broker, topic, start="latest") as reader:
        assert reader.poll(0) is None  # opens the streams at the current log ends
        assert set(reader.start_offsets) == {0, 1}
        _produce(broker, topic, [b"new-%d" % i for i in range(5)], partition=1)
        got = [reader.poll(10) for _ in range(5)]
        assert [m.value for m in got if m] == [b"new-%d" % i for i in range(5)]
        assert reader.poll(0.2) is None


def test_reader_tails_records_as_they_are_produced(broker: str, make_topic) -> None:
    """A following reader started at the beginning delivers records produced later, live, without ending."""
    topic = make_topic(2)
    received: list[Message] = []
    reader = Reader(broker, topic, start="earliest")
    reader.poll(0)

    def consume() -> None:
        for message in reader:
            received.append(message)

    thread = threading.Thread(target=consume)
    thread.start()
    with Producer(broker, linger_ms=0) as producer:
        for i in range(20):
            producer.send(topic, b"live-%d" % i, key=b"k").result(timeout=10)
    deadline = time.monotonic() + 10
    while len(received) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m.value for m in received] == [b"live-%d" % i for i in range(20)]
    assert thread.is_alive()  # still following
    reader.close()
    thread.join(timeout=5)
    assert not thread.is_alive()  # close() ended the iteration


def test_partition_selection_reads_only_those_partitions(broker: str, make_topic) -> None:
    """partitions=[1] yields only partition 1's records; a start dict names partitions and offsets."""
    topic = make_topic(3)
    _produce(broker, topic, [b"a", b"b", b"c"], partition=1)
    _produce(broker, topic, [b"x", b"y"], partition=2)
    with Reader(broker, topic, partitions=[1], follow=False) as reader:
        assert [(m.partition, m.value) for m in reader] == [(1, b"a"), (1, b"b"), (1, b"c")]
    with Reader(broker, topic, start={1: 2, 2: 1}, follow=False) as reader:
        assert sorted((m.partition, m.offset, m.value) for m in reader) == [(1, 2, b"c"), (2, 1, b"y")]


def test_unknown_topic_raises_not_found_on_first_read(broker: str) -> None:
    """Iterating a reader of a missing topic raises NotFound (not a gRPC error)."""
    with Reader(broker, "missing-topic-xyz") as reader:
        with pytest.raises(errors.NotFound, match="missing-topic-xyz"):
            next(reader)


def test_start_offset_past_the_end_raises_offset_out_of_range(broker: str, make_topic) -> None:
    """A start offset beyond the log end raises OffsetOutOfRange with the valid range."""
    topic = make_topic()
    _produce(broker, topic, [b"1", b"2", b"3"])
    with Reader(broker, topic, start=50) as reader:
        with pytest.raises(errors.OffsetOutOfRange) as caught:
            reader.poll(5)
    assert (caught.value.start, caught.value.end) == (0, 3)


def test_fetch_trims_to_the_requested_offset(broker: str, make_topic) -> None:
    """fetch(offset=3) returns records 3.. of the batch; at the log end it returns [] after max_wait_ms."""
    topic = make_topic()
    _produce(broker, topic, [b"%d" % i for i in range(6)], key=b"k")
    got = fetch(broker, topic, 0, 3)
    assert [(m.offset, m.key, m.value) for m in got] == [(3, b"k", b"3"), (4, b"k", b"4"), (5, b"k", b"5")]
    with Reader(broker, topic) as reader:
        started = time.monotonic()
        assert reader.fetch(topic, 0, 6, max_wait_ms=100) == []
        assert time.monotonic() - started < 5


def test_batches_yield_each_record_once_trimmed_to_the_range(broker: str, make_topic) -> None:
    """batches() over [2, 8) of one 10-record batch yields offsets 2..7 as one MessageBatch, then ends."""
    topic = make_topic()
    _produce(broker, topic, [b"%d" % i for i in range(10)], key=b"k")
    with Reader(broker, topic, start=2, stop=8) as reader:
        got = list(reader.batches())
    assert [(b.partition, b.offset, b.next_offset) for b in got] == [(0, 2, 8)]
    assert [(r.key, r.value) for r in got[0].records] == [(b"k", b"%d" % i) for i in range(2, 8)]
    assert [(m.offset, m.value) for m in got[0]] == [(i, b"%d" % i) for i in range(2, 8)]


def test_messages_then_batches_share_one_position(broker: str, make_topic) -> None:
    """Taking 3 messages, then batches(), then messages again delivers every offset exactly once, in order."""
    topic = make_topic()
    _produce(broker, topic, [b"a%d" % i for i in range(10)])
    _produce(broker, topic, [b"b%d" % i for i in range(5)])
    with Reader(broker, topic, follow=False) as reader:
        first = [next(reader).offset for _ in range(3)]
        batches = reader.batches()
        rest_of_first = next(batches)
        rest = [m.offset for m in reader]
    assert first == [0, 1, 2]
    assert (rest_of_first.offset, rest_of_first.next_offset) == (3, 10)
    assert [r.value for r in rest_of_first.records] == [b"a%d" % i for i in range(3, 10)]
    assert rest == list(range(10, 15))


def test_a_failed_reader_keeps_raising_its_error(broker: str) -> None:
    """After a stream error, next(), poll(), iteration and batches() all raise it again."""
    with Reader(broker, "missing-topic-again") as reader:
        with pytest.raises(errors.NotFound):
            next(reader)
        with pytest.raises(errors.NotFound):
            next(reader)
        with pytest.raises(errors.NotFound):
            reader.poll(0)
        with pytest.raises(errors.NotFound):
            list(reader)
        with pytest.raises(errors.NotFound):
            list(reader.batches())


def test_poll_reports_finished_only_after_the_last_message(broker: str, make_topic) -> None:
    """With follow=False, poll() returns every record, then None with finished True; close() keeps it so."""
    topic = make_topic(2)
    _produce(broker, topic, [b"x", b"y", b"z"], partition=1)
    reader = Reader(broker, topic, follow=False)
    got = []
    while not reader.finished:
        message = reader.poll(5)
        if message is not None:
            got.append(message.value)
    assert got == [b"x", b"y", b"z"]
    assert reader.poll(0) is None and next(reader, None) is None
    reader.close()
    assert reader.finished and reader.poll(0) is None
