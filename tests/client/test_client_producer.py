"""Producer against a real broker: offsets, partitioning, flush/close, errors, futures."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from logstore import errors
from logstore.broker.partitioner import partition_for_key
from logstore.clock import ManualClock
from logstore.client import Admin, Producer, Reader, RecordMetadata


def _read_all(broker: str, topic: str) -> list:
    with Reader(broker, topic, start="earliest", follow=False) as reader:
        return list(reader)


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_futures_resolve_to_contiguous_offsets_per_partition(broker: str, make_topic, max_in_flight: int) -> None:
    """Records sent to each partition get offsets 0..n-1 in send order, across many pipelined batches."""
    topic = make_topic(3)
    with Producer(broker, linger_ms=1, batch_bytes=300, max_in_flight=max_in_flight) as producer:
        futures = {p: [] for p in range(3)}
        for i in range(600):
            p = i % 3
            futures[p].append(producer.send(topic, b"v%d" % i, partition=p))
        producer.flush()
        assert len(producer._streams) == 1  # every request went over one ProduceStream
        assert producer._next_request_id > 20  # ... as many pipelined requests
    for p, fs in futures.items():
        metas = [f.result(timeout=10) for f in fs]
        assert [m.offset for m in metas] == list(range(200))
        assert {(m.topic, m.partition) for m in metas} == {(topic, p)}
        assert all(isinstance(m, RecordMetadata) for m in metas)
    stored = _read_all(broker, topic)
    by_partition = {p: [m.value for m in stored if m.partition == p] for p in range(3)}
    assert by_partition[1] == [b"v%d" % i for i in range(1, 600, 3)]


def test_keyed_records_land_on_the_kafka_partition_in_order(broker: str, make_topic) -> None:
    """A keyed record goes to partition_for_key(key, n) and records of one key keep their send order."""
    topic = make_topic(5)
    keys = [b"user-%d" % k for k in range(20)]
    with Producer(broker, linger_ms=2, batch_bytes=500) as producer:
        futures = [(k, i, producer.send(topic, b"%s:%d" % (k, i), key=k)) for i in range(30) for k in keys]
    for key, _i, future in futures:
        assert future.result(timeout=10).partition == partition_for_key(key, 5)
    stored = _read_all(broker, topic)
    assert len(stored) == 600
    for key in keys:
        mine = [m for m in stored if m.key == key]
        assert {m.partition for m in mine} == {partition_for_key(key, 5)}
        assert [m.value for m in mine] == [b"%s:%d" % (key, i) for i in range(30)]


def test_keyless_records_stick_to_a_partition_per_batch_and_rotate(broker: str, make_topic) -> None:
    """Keyless records fill one partition per batch, then rotate: several partitions, few switches."""
    topic = make_topic(4)
    with Producer(broker, linger_ms=1000, batch_bytes=1000) as producer:
        futures = [producer.send(topic, b"x" * 50) for _ in range(200)]
    metas = [f.result(timeout=10) for f in futures]
    used = {m.partition for m in metas}
    assert len(used) >= 2
    # Consecutive sends share a partition until a batch is full (about 1000 bytes = ~16 records).
    switches = sum(1 for a, b in zip(metas, metas[1:]) if a.partition != b.partition)
    assert 5 <= switches <= 20
    assert sum(1 for m in _read_all(broker, topic)) == 200


def test_flush_sends_at_once_and_waits_for_every_answer(broker: str, make_topic) -> None:
    """flush() does not wait for linger_ms, returns 0, and every earlier future is then done."""
    topic = make_topic(2)
    with Producer(broker, linger_ms=60_000) as producer:
        futures = [producer.send(topic, b"r%d" % i, partition=i % 2) for i in range(50)]
        time.sleep(0.05)
        assert not any(f.done() for f in futures)  # lingering: nothing sent yet
        started = time.monotonic()
        assert producer.flush(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert all(f.done() for f in futures)
        assert sorted(f.result().offset for f in futures) == sorted(list(range(25)) * 2)


def test_close_delivers_pending_records_then_refuses_sends(broker: str, make_topic) -> None:
    """Leaving the with block sends what is queued; send() afterwards raises FailedPrecondition."""
    topic = make_topic()
    producer = Producer(broker, linger_ms=60_000)
    with producer:
        futures = [producer.send(topic, b"last-%d" % i) for i in range(10)]
    assert [f.result(timeout=0).offset for f in futures] == list(range(10))
    with pytest.raises(errors.FailedPrecondition):
        producer.send(topic, b"too late")
    producer.close()  # a second close is harmless


def test_acks_none_reports_no_offsets_but_records_arrive(broker: str, make_topic) -> None:
    """With acks='none' futures resolve to offset -1 and the records are still appended."""
    topic = make_topic()
    with Producer(broker, acks="none") as producer:
        futures = [producer.send(topic, b"n%d" % i) for i in range(20)]
    assert {f.result(timeout=10).offset for f in futures} == {-1}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        values = [m.value for m in _read_all(broker, topic)]
        if len(values) == 20:
            break
        time.sleep(0.05)
    assert values == [b"n%d" % i for i in range(20)]


def test_unknown_topic_fails_the_future_with_not_found(broker: str) -> None:
    """send() to a topic that does not exist resolves its future with NotFound."""
    with Producer(broker) as producer:
        future = producer.send("no-such-topic-here", b"x")
        with pytest.raises(errors.NotFound, match="no-such-topic-here"):
            future.result(timeout=10)


def test_partition_out_of_range_fails_then_works_after_growing(broker: str, make_topic, admin: Admin) -> None:
    """NotFound for a missing partition refreshes the cached count: after growing, keys follow the new count."""
    topic = make_topic(2)
    with Producer(broker) as producer:
        with pytest.raises(errors.NotFound):
            producer.send(topic, b"x", partition=3).result(timeout=10)
        admin.create_partitions(topic, 6)
        assert producer.send(topic, b"y", partition=3).result(timeout=10).offset == 0
        keyed = [producer.send(topic, b"k", key=b"key-%d" % i) for i in range(40)]
        for i, future in enumerate(keyed):
            assert future.result(timeout=10).partition == partition_for_key(b"key-%d" % i, 6)


def test_timestamps_default_to_now_and_explicit_ones_are_kept(broker: str, make_topic) -> None:
    """A record without a timestamp gets the send time; an explicit timestamp is stored as given."""
    topic = make_topic()
    before = time.time_ns() // 1_000_000
    with Producer(broker) as producer:
        now_future = producer.send(topic, b"now")
        explicit = producer.send(topic, b"then", timestamp_ms=1_234_567)
    after = time.time_ns() // 1_000_000
    assert before <= now_future.result().timestamp_ms <= after
    assert explicit.result().timestamp_ms == 1_234_567
    stored = _read_all(broker, topic)
    assert [m.timestamp_ms for m in stored] == [now_future.result().timestamp_ms, 1_234_567]


def test_default_timestamps_come_from_the_injected_clock(broker: str, make_topic) -> None:
    """With clock=ManualClock, records without a timestamp carry the clock's reading."""
    topic = make_topic()
    clock = ManualClock(1_600_000_000_000)
    with Producer(broker, clock=clock) as producer:
        first = producer.send(topic, b"a")
        clock.advance(250)
        second = producer.send(topic, b"b")
    assert [first.result().timestamp_ms, second.result().timestamp_ms] == [1_600_000_000_000, 1_600_000_000_250]
    assert [m.timestamp_ms for m in _read_all(broker, topic)] == [1_600_000_000_000, 1_600_000_000_250]


def test_null_and_empty_keys_values_and_headers_round_trip(broker: str, make_topic) -> None:
    """None and b'' stay distinct for key and value; headers keep order, repeats and str values."""
    topic = make_topic()
    with Producer(broker) as producer:
        producer.send(topic, None, key=None)
        producer.send(topic, b"", key=b"")
        producer.send(topic, "text é", key="k", headers=[("a", b"1"), ("a", "2"), ("", b"")])
        producer.send(topic, b"\xff\x00", headers={"h": b"\x01"})
    stored = _read_all(broker, topic)
    assert [(m.key, m.value, m.headers) for m in stored] == [
        (None, None, ()),
        (b"", b"", ()),
        (b"k", "text é".encode(), (("a", b"1"), ("a", b"2"), ("", b""))),
        (None, b"\xff\x00", (("h", b"\x01"),)),
    ]


def test_record_over_max_record_bytes_raises_and_others_go_through(broker: str, make_topic) -> None:
    """Over max_record_bytes (as the broker counts) raises RecordTooLarge; exactly the limit is appended."""
    topic = make_topic(max_record_bytes=1024)
    ts = 1_700_000_000_000  # a 7-byte timestamp field: 7 + 1 + 2 (value tag and length) + 1014 = 1024
    with Producer(broker) as producer:
        first = producer.send(topic, b"a" * 100)
        with pytest.raises(errors.RecordTooLarge, match="max_record_bytes"):
            producer.send(topic, b"b" * 1015, timestamp_ms=ts)
        with pytest.raises(errors.RecordTooLarge, match="max_record_bytes"):
            producer.send(topic, b"b" * 1000, key=b"k" * 20)
        exact = producer.send(topic, b"c" * 1014, timestamp_ms=ts)
        last = producer.send(topic, b"d" * 100)
    assert [f.result().offset for f in (first, exact, last)] == [0, 1, 2]


def test_bad_arguments_raise_from_send(broker: str, make_topic) -> None:
    """Negative timestamps or partitions and non-bytes values raise InvalidArgument at once."""
    topic = make_topic()
    with Producer(broker) as producer:
        with pytest.raises(errors.InvalidArgument):
            producer.send(topic, b"x", timestamp_ms=-1)
        with pytest.raises(errors.InvalidArgument):
            producer.send(topic, b"x", partition=-1)
        with pytest.raises(errors.InvalidArgument):
            producer.send(topic, 12345)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        Producer(broker, acks="sometimes")


def test_concurrent_senders_get_unique_contiguous_offsets(broker: str, make_topic) -> None:
    """Four threads sending to one partition get offsets 0..N-1 exactly once, each thread in order."""
    topic = make_topic()
    results: dict[int, list] = {}
    with Producer(broker, linger_ms=1, batch_bytes=4000) as producer:
        def worker(n: int) -> None:
            results[n] = [producer.send(topic, b"%d-%d" % (n, i)) for i in range(500)]

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    offsets = [f.result(timeout=10).offset for fs in results.values() for f in fs]
    assert sorted(offsets) == list(range(2000))
    for fs in results.values():
        mine = [f.result().offset for f in fs]
        assert mine == sorted(mine)


def test_futures_work_with_wait_as_completed_and_callbacks(broker: str, make_topic) -> None:
    """Producer futures are concurrent.futures.Future: wait(), as_completed() and done callbacks see them."""
    topic = make_topic()
    seen: list[int] = []
    with Producer(broker, linger_ms=50) as producer:
        futures = [producer.send(topic, b"%d" % i) for i in range(30)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        futures[3].add_done_callback(lambda f: seen.append(f.result().offset))
        done, not_done = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 30 and not not_done
        assert sorted(f.result().offset for f in concurrent.futures.as_completed(futures, timeout=10)) == list(range(30))
        assert futures[0].cancel() is False
    futures[5].add_done_callback(lambda f: seen.append(f.result().offset))  # already done: runs now
    assert seen == [3, 5]


def test_unreachable_broker_fails_futures_instead_of_hanging() -> None:
    """With no broker listening, a send fails with LogClosed (UNAVAILABLE) once max_block_ms is spent."""
    with Producer("127.0.0.1:1", max_block_ms=500) as producer:
        started = time.monotonic()
        with pytest.raises(errors.LogClosed, match="127.0.0.1:1"):
            producer.send("t", b"x").result(timeout=10)
        assert time.monotonic() - started < 5


def test_framing_cache_handles_changing_value_lengths_timestamps_and_key_types(broker: str, make_topic) -> None:
    """One key with varying value sizes, timestamps (0, small, now) and str/bytes spellings round-trips exactly."""
    topic = make_topic(3)
    sent = []
    with Producer(broker, linger_ms=1000) as producer:
        for i in range(40):
            key = b"key-%d" % (i % 3)
            value = b"x" * (i * 37 % 300)
            timestamp = (None, 0, 5, 1_234_567_890_123)[i % 4]
            spelled = key.decode() if i % 5 == 0 else key
            future = producer.send(topic, value, key=spelled, timestamp_ms=timestamp)
            sent.append((key, value, timestamp, future))
    stored = {(m.partition, m.offset): m for m in _read_all(broker, topic)}
    assert len(stored) == 40
    for key, value, timestamp, future in sent:
        meta = future.result(timeout=10)
        assert meta.partition == partition_for_key(key, 3)
        message = stored[(meta.partition, meta.offset)]
        assert (message.key, message.value) == (key, value)
        if timestamp:
            assert message.timestamp_ms == meta.timestamp_ms == timestamp
        else:
            assert message.timestamp_ms == meta.timestamp_ms > 0  # the producer's clock, or the broker's for 0


def test_send_many_matches_send_order_partitions_and_offsets(broker: str, make_topic) -> None:
    """send_many of keyed records: one future per record in order, Kafka partitions, offsets 0..n-1 per partition."""
    topic = make_topic(4)
    keys = [b"k%d" % (i % 10) for i in range(3000)]
    values = [b"v%d" % i for i in range(3000)]
    with Producer(broker, linger_ms=5, batch_bytes=2000) as producer:
        futures = producer.send_many(topic, values, keys=keys)
        assert producer.flush(10) == 0
    assert len(futures) == 3000
    metas = [f.result(timeout=10) for f in futures]
    for key, meta in zip(keys, metas):
        assert (meta.topic, meta.partition) == (topic, partition_for_key(key, 4))
    for p in range(4):
        offsets = [m.offset for m in metas if m.partition == p]
        assert offsets == list(range(len(offsets)))
    stored = _read_all(broker, topic)
    assert sorted((m.partition, m.offset, m.key, m.value) for m in stored) == sorted(
        (m.partition, m.offset, k, v) for m, k, v in zip(metas, keys, values)
    )


def test_send_many_handles_keyless_headers_timestamps_nulls_and_str(broker: str, make_topic) -> None:
    """send_many with per-record None items, headers, explicit timestamps and str values stores exactly what send would."""
    topic = make_topic(1)
    clock = ManualClock(1_600_000_000_000)
    with Producer(broker, clock=clock) as producer:
        futures = producer.send_many(
            topic,
            [b"a", None, "text é", b"", b"e"],
            keys=[None, b"k", "sk", b"", None],
            headers=[None, [("h", b"1"), ("h", "2")], None, {"x": b""}, None],
            timestamps_ms=[None, 0, 7, None, 1_234],
        )
    assert [f.result(timeout=10).offset for f in futures] == [0, 1, 2, 3, 4]
    assert futures[0].result().timestamp_ms == 1_600_000_000_000
    assert futures[1].result().timestamp_ms > 1_600_000_000_000  # 0: the broker's append time
    stored = _read_all(broker, topic)
    assert [(m.key, m.value, m.headers) for m in stored] == [
        (None, b"a", ()),
        (b"k", None, (("h", b"1"), ("h", b"2"))),
        (b"sk", "text é".encode(), ()),
        (b"", b"", (("x", b""),)),
        (None, b"e", ()),
    ]
    assert [m.timestamp_ms for m in stored][2:] == [7, 1_600_000_000_000, 1_234]


def test_send_many_spans_batches_and_slices_with_contiguous_offsets(broker: str, make_topic) -> None:
    """More records than one lock slice, to an explicit partition and keyless (sticky): every offset exactly once."""
    topic = make_topic(3)
    n = 20_000
    with Producer(broker, linger_ms=1, batch_bytes=5_000) as producer:
        fixed = producer.send_many(topic, [b"p%d" % i for i in range(n)], partition=2)
        sticky = producer.send_many(topic, (b"s%d" % i for i in range(n)))
        producer.flush(30)
    assert [f.result(timeout=10).offset for f in fixed] == list(range(n))
    sticky_metas = [f.result(timeout=10) for f in sticky]
    assert len({m.partition for m in sticky_metas}) == 3  # rotated over the partitions
    for p in range(3):
        offsets = [m.offset for m in sticky_metas if m.partition == p]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert len(_read_all(broker, topic)) == 2 * n


def test_send_many_checks_every_record_before_queueing_any(broker: str, make_topic) -> None:
    """A bad record anywhere in send_many raises and nothing is sent; an unknown topic fails every future."""
    topic = make_topic(max_record_bytes=100)
    with Producer(broker, linger_ms=0) as producer:
        with pytest.raises(errors.RecordTooLarge):
            producer.send_many(topic, [b"ok", b"x" * 200], keys=[b"a", b"b"])
        with pytest.raises(errors.InvalidArgument):
            producer.send_many(topic, [b"ok", 5])  # type: ignore[list-item]
        with pytest.raises(errors.InvalidArgument):
            producer.send_many(topic, [b"ok", b"ok"], keys=[b"k"])
        with pytest.raises(errors.InvalidArgument):
            producer.send_many(topic, [b"ok"], timestamps_ms=[-1])
        with pytest.raises(errors.InvalidArgument):
            producer.send_many(topic, b"one value")
        assert len(producer.send_many(topic, [])) == 0
        missing = producer.send_many("no-such-topic-for-many", [b"a", b"b"])
        for future in missing:
            with pytest.raises(errors.NotFound):
                future.result(timeout=10)
        assert producer.send(topic, b"last").result(timeout=10).offset == 0
    assert [m.value for m in _read_all(broker, topic)] == [b"last"]


def test_send_many_and_send_from_threads_share_one_offset_sequence(broker: str, make_topic) -> None:
    """Threads mixing send_many and send on one partition get offsets 0..N-1 once each, each thread in order."""
    topic = make_topic()
    results: dict[int, list] = {}
    with Producer(broker, linger_ms=1, batch_bytes=3000) as producer:
        def worker(n: int) -> None:
            futures: list = []
            for i in range(20):
                if n % 2:
                    futures.extend(producer.send_many(topic, [b"%d-%d-%d" % (n, i, j) for j in range(25)]))
                else:
                    futures.extend(producer.send(topic, b"%d-%d-%d" % (n, i, j)) for j in range(25))
            results[n] = futures

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    offsets = [f.result(timeout=10).offset for fs in results.values() for f in fs]
    assert sorted(offsets) == list(range(2000))
    for fs in results.values():
        mine = [f.result().offset for f in fs]
        assert mine == sorted(mine)


@pytest.mark.parametrize(("epoch", "first_sequence"), [(0, 0), (0, 17), (3, 0), (2, 1 << 30)])
def test_idempotent_requests_are_canonical_so_the_broker_reuses_their_record_bytes(
    broker: str, make_topic, epoch: int, first_sequence: int
) -> None:
    """The Producer's hand-built requests, with producer fields, encode exactly as protobuf would (zeros omitted)."""
    from logstore._proto.logstore.v1 import log_pb2
    from logstore.server.log_service import _received_records

    topic = make_topic(2)
    with Producer(broker, linger_ms=60_000) as producer:
        first = producer.send(topic, b"first", partition=1)
        producer.flush(10)
        first.result(timeout=1)  # the producer registered
        from logstore.client.producer import _T_PRODUCER_EPOCH, _T_PRODUCER_ID, _varint

        producer._producer_fields = _T_PRODUCER_ID + _varint(producer.producer_id) + (
            _T_PRODUCER_EPOCH + _varint(epoch) if epoch else b"")
        producer.send(topic, b"x" * 10, key=b"k", partition=1)
        with producer._lock:
            batch = producer._open[(topic, 1)]
            del producer._open[(topic, 1)]
            del batch.registry[1]
            producer._incomplete.discard(batch)
        batch.sequence = first_sequence
        raw_stream = producer._encode_request(batch, 99)
    request = log_pb2.ProduceStreamRequest.FromString(raw_stream)
    produce_raw = request.produce.SerializeToString()
    assert produce_raw == log_pb2.ProduceRequest.FromString(produce_raw).SerializeToString()
    assert request.produce.producer_epoch == epoch and request.produce.base_sequence == first_sequence
    assert request.produce.HasField("producer_id")
    assert _received_records(log_pb2.ProduceRequest.FromString(produce_raw), produce_raw) is not None


def test_an_idempotent_producer_keeps_working_after_its_topic_is_deleted_and_recreated(broker: str, make_topic, admin: Admin) -> None:
    """A recreated topic has no state for the producer: sends fail while it is gone, then number from 0 again."""
    topic = make_topic(1)
    with Producer(broker, linger_ms=0) as producer:
        assert [producer.send(topic, b"before-%d" % i, partition=0).result(10).offset for i in range(5)] == list(range(5))
        admin.delete_topic(topic)
        with pytest.raises(errors.NotFound):
            producer.send(topic, b"while-gone", partition=0).result(10)
        admin.create_topic(topic, 1)
        offsets = [producer.send(topic, b"after-%d" % i, partition=0).result(10).offset for i in range(5)]
    assert offsets == list(range(5))
    with Reader(broker, topic, start="earliest", follow=False) as reader:
        assert [m.value for m in reader] == [b"after-%d" % i for i in range(5)]
