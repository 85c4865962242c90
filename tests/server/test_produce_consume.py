"""Produce and consume over real gRPC: routing, offsets, replay, tailing, record fidelity, long-poll."""

from __future__ import annotations

import queue
import random
import threading
import time

import grpc

from logstore._proto.logstore.v1 import log_pb2, records_pb2
from logstore.broker.partitioner import partition_for_key

from server_helpers import (
    batch_records,
    collect_subscription,
    fetch_range,
    precord,
    record_offsets,
    values,
)

PARTITIONS = 4
KEYS = 200
PER_KEY = 20
TS0 = 1_700_000_000_000
APPEND_TIME_ROUNDS = 400
"""Enough single-record produces that a clock tick between stamping and answering shows up."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def test_keyed_records_go_to_the_murmur2_partition_in_order(log_stub, create_topic):
    """Keyed records land on Kafka's murmur2 partition, in produce order, at the offsets ProduceResponse reports."""
    create_topic("keyed", PARTITIONS)
    rng = random.Random(7)
    keys = [f"key-{i}".encode() for i in range(KEYS)]
    all_records = [(k, seq) for seq in range(PER_KEY) for k in keys]  # round by round
    expected: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
    pos = 0
    mode = 0
    while pos < len(all_records):
        chunk = all_records[pos : pos + rng.randint(50, 400)]
        pos += len(chunk)
        mode = (mode + 1) % 3
        if mode == 0:
            # Broker routes by key.
            requests = [(None, [precord(f"{k.decode()}:{s}".encode(), key=k) for k, s in chunk])]
        elif mode == 1:
            # Client routes by key: one request per partition, naming it at request level.
            by_partition: dict[int, list] = {}
            for k, s in chunk:
                by_partition.setdefault(partition_for_key(k, PARTITIONS), []).append(
                    precord(f"{k.decode()}:{s}".encode(), key=k)
                )
            requests = sorted(by_partition.items())
        else:
            # Record-level partition names, equal to the key's partition.
            requests = [
                (None, [precord(f"{k.decode()}:{s}".encode(), key=k, partition=partition_for_key(k, PARTITIONS)) for k, s in chunk])
            ]
        for partition, recs in requests:
            req = log_pb2.ProduceRequest(topic="keyed", records=recs)
            if partition is not None:
                req.partition = partition
            resp = log_stub.Produce(req, timeout=10)
            assert [p.partition for p in resp.partitions] == sorted(p.partition for p in resp.partitions)
            if partition is not None:
                assert not resp.record_partitions
                assert [p.partition for p in resp.partitions] == [partition]
            for (p, offset), rec in zip(record_offsets(resp, len(recs)), recs):
                assert (p, offset) not in expected, f"two records reported at {p}/{offset}"
                expected[(p, offset)] = rec.value

    assert len(expected) == KEYS * PER_KEY
    actual: dict[tuple[int, int], bytes] = {}
    seqs_by_key: dict[bytes, list[int]] = {}
    partition_of_key: dict[bytes, set[int]] = {}
    for p in range(PARTITIONS):
        for offset, rec in fetch_range(log_stub, "keyed", p):
            actual[(p, offset)] = rec.value
            key_text, seq = rec.value.decode().split(":")
            assert rec.key == key_text.encode()
            seqs_by_key.setdefault(rec.key, []).append(int(seq))
            partition_of_key.setdefault(rec.key, set()).add(p)
    assert actual == expected, "ProduceResponse offsets disagree with where Fetch finds the records"
    for k in keys:
        assert partition_of_key[k] == {partition_for_key(k, PARTITIONS)}, f"key {k!r} not on its murmur2 partition"
        assert seqs_by_key[k] == list(range(PER_KEY)), f"records of key {k!r} out of produce order"


def test_produce_response_offsets_for_mixed_partitions(log_stub, create_topic):
    """record_partitions and per-partition base_offset give each record's offset when a request spans partitions."""
    create_topic("mixed", 3)
    log_stub.Produce(log_pb2.ProduceRequest(topic="mixed", partition=1, records=[precord(b"pre")] * 5), timeout=10)
    targets = [2, 0, 1, 1, 2, 0, 0, 1, 2, 2]
    recs = [precord(f"m{i}".encode(), partition=t) for i, t in enumerate(targets)]
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="mixed", records=recs), timeout=10)
    assert list(resp.record_partitions) == targets
    assert [(p.partition, p.base_offset, p.record_count) for p in resp.partitions] == [(0, 0, 3), (1, 5, 3), (2, 0, 4)]
    for (p, offset), rec in zip(record_offsets(resp, len(recs)), recs):
        [(got_offset, got)] = fetch_range(log_stub, "mixed", p, offset, offset + 1)
        assert got_offset == offset and got.value == rec.value


def test_request_partition_overrides_record_partitions_and_keys(log_stub, create_topic):
    """With ProduceRequest.partition set, every record goes there, whatever its own partition field or key says."""
    create_topic("override", 4)
    recs = [precord(b"a", partition=3), precord(b"b", key=b"key-b"), precord(b"c", partition=99), precord(b"d")]
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="override", partition=1, records=recs), timeout=10)
    assert not resp.record_partitions
    assert [(p.partition, p.base_offset, p.record_count) for p in resp.partitions] == [(1, 0, 4)]
    assert values(fetch_range(log_stub, "override", 1)) == [b"a", b"b", b"c", b"d"]
    assert all(not fetch_range(log_stub, "override", p) for p in (0, 2, 3))


def test_keyless_records_of_a_request_are_placed_and_reported(log_stub, create_topic):
    """Keyless records without a partition go to valid partitions, at the offsets the response reports."""
    create_topic("keyless", 3)
    placed: dict[tuple[int, int], bytes] = {}
    for i in range(12):
        recs = [precord(f"n{i}-{j}".encode()) for j in range(5)] + [precord(f"k{i}".encode(), key=f"k{i}".encode())]
        resp = log_stub.Produce(log_pb2.ProduceRequest(topic="keyless", records=recs), timeout=10)
        for (p, offset), rec in zip(record_offsets(resp, len(recs)), recs):
            assert 0 <= p < 3
            placed[(p, offset)] = rec.value
        if resp.record_partitions:
            assert resp.record_partitions[-1] == partition_for_key(f"k{i}".encode(), 3)
    stored = {(p, o): r.value for p in range(3) for o, r in fetch_range(log_stub, "keyless", p)}
    assert stored == placed


def test_replay_by_fetch_subscribe_and_timestamp(log_stub, create_topic):
    """Fetch, Subscribe (EARLIEST, offset, timestamp) and ListOffsets replay exactly the expected records."""
    create_topic("replay", 2)
    rng = random.Random(11)
    produced: list[tuple[int, bytes]] = []  # (timestamp, value) in offset order on partition 1
    n = 0
    while n < 300:
        size = rng.randint(1, 17)
        recs = [precord(f"r{n + i}".encode(), timestamp_ms=TS0 + 10 * (n + i)) for i in range(size)]
        resp = log_stub.Produce(log_pb2.ProduceRequest(topic="replay", partition=1, records=recs), timeout=10)
        assert resp.partitions[0].base_offset == n
        produced.extend((r.timestamp_ms, r.value) for r in recs)
        n += size
    end = len(produced)
    all_values = [v for _, v in produced]

    # Fetch from an offset inside a batch.
    for start in (0, 1, 137, end - 1, end):
        assert values(fetch_range(log_stub, "replay", 1, start)) == all_values[start:]

    # max_bytes is a soft limit: at least one whole batch, even when it is larger.
    resp = log_stub.Fetch(log_pb2.FetchRequest(topic="replay", partition=1, offset=5, max_bytes=1), timeout=10)
    assert len(resp.batches) == 1 and resp.batches[0].base_offset <= 5 < resp.batches[0].base_offset + resp.batches[0].record_count
    assert (resp.log_start_offset, resp.log_end_offset) == (0, end)

    # Subscribe from EARLIEST to the end.
    call = log_stub.Subscribe(
        log_pb2.SubscribeRequest(topic="replay", partition=1, start_position=log_pb2.LOG_POSITION_EARLIEST, stop_offset=end),
        timeout=10,
    )
    sub = collect_subscription(call)
    assert call.code() == grpc.StatusCode.OK
    assert sub.start_offset == 0 and sub.stop_offset == end
    assert values(sub.records) == all_values
    assert [o for o, _ in sub.records] == list(range(end))

    # Subscribe from an offset to a stop offset, both inside batches; small max_bytes forces many responses.
    sub = collect_subscription(
        log_stub.Subscribe(
            log_pb2.SubscribeRequest(topic="replay", partition=1, start_offset=41, stop_offset=233, max_bytes=200),
            timeout=10,
        )
    )
    assert sub.start_offset == 41 and sub.stop_offset == 233
    assert values(sub.records) == all_values[41:233]
    assert len(sub.responses) > 3

    # ListOffsets and Subscribe by timestamp: between records, exactly on one, before all, after all.
    for ts, want in ((TS0 + 10 * 150 - 3, 150), (TS0 + 10 * 77, 77), (0, 0), (TS0 + 10 * end + 1, end)):
        lo = log_stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="replay", partitions=[1], timestamp_ms=ts), timeout=10)
        [entry] = lo.partitions
        assert entry.partition == 1 and entry.offset == want
        assert (entry.log_start_offset, entry.log_end_offset) == (0, end)
        if want < end:
            assert entry.timestamp_ms == produced[want][0]
        else:
            assert not entry.HasField("timestamp_ms"), "no record at/after the time: timestamp_ms must be absent"
        sub = collect_subscription(
            log_stub.Subscribe(
                log_pb2.SubscribeRequest(topic="replay", partition=1, start_timestamp_ms=ts, stop_offset=end), timeout=10
            )
        )
        assert sub.start_offset == want
        assert values(sub.records) == all_values[want:]

    # Subscribe up to a stop timestamp: the stop is the first record at or after it.
    sub = collect_subscription(
        log_stub.Subscribe(
            log_pb2.SubscribeRequest(topic="replay", partition=1, start_offset=10, stop_timestamp_ms=TS0 + 10 * 200 - 5),
            timeout=10,
        )
    )
    assert sub.stop_offset == 200
    assert values(sub.records) == all_values[10:200]

    # ListOffsets answers in ascending partition order, whatever the request's order.
    lo = log_stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="replay", partitions=[1, 0], timestamp_ms=TS0), timeout=10)
    assert [(p.partition, p.offset, p.HasField("timestamp_ms")) for p in lo.partitions] == [(0, 0, False), (1, 0, True)]

    # ListOffsets by position, for every partition when none is listed.
    lo = log_stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="replay", position=log_pb2.LOG_POSITION_LATEST), timeout=10)
    assert [(p.partition, p.offset) for p in lo.partitions] == [(0, 0), (1, end)]
    assert not any(p.HasField("timestamp_ms") for p in lo.partitions)
    lo = log_stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="replay", position=log_pb2.LOG_POSITION_EARLIEST), timeout=10)
    assert [(p.partition, p.offset) for p in lo.partitions] == [(0, 0), (1, 0)]


def test_subscribe_stop_offset_waits_for_records_then_ends_ok(log_stub, create_topic):
    """A stop_offset past the log end waits for the records, then the stream ends OK with stop_offset in its last response."""
    create_topic("stopper")
    log_stub.Produce(log_pb2.ProduceRequest(topic="stopper", partition=0, records=[precord(b"a"), precord(b"b")]), timeout=10)
    call = log_stub.Subscribe(log_pb2.SubscribeRequest(topic="stopper", partition=0, start_offset=1, stop_offset=4), timeout=15)
    first = next(call)
    assert first.start_offset == 1
    log_stub.Produce(log_pb2.ProduceRequest(topic="stopper", partition=0, records=[precord(b"c")]), timeout=10)
    log_stub.Produce(
        log_pb2.ProduceRequest(topic="stopper", partition=0, records=[precord(b"d"), precord(b"e"), precord(b"f")]), timeout=10
    )
    sub = collect_subscription([first, *call])
    assert call.code() == grpc.StatusCode.OK
    assert sub.stop_offset == 4
    assert values(sub.records) == [b"b", b"c", b"d"]

    # A stop at or below the start ends the stream at once.
    sub = collect_subscription(
        log_stub.Subscribe(log_pb2.SubscribeRequest(topic="stopper", partition=0, start_offset=3, stop_offset=2), timeout=5)
    )
    assert sub.stop_offset == 2 and sub.records == []


def test_latest_subscriber_sees_new_records_as_they_arrive(log_stub, create_topic):
    """A LATEST subscriber gets only records produced after it subscribed, each soon after it is produced."""
    create_topic("tail")
    log_stub.Produce(log_pb2.ProduceRequest(topic="tail", partition=0, records=[precord(b"old")] * 3), timeout=10)
    call = log_stub.Subscribe(
        log_pb2.SubscribeRequest(topic="tail", partition=0, start_position=log_pb2.LOG_POSITION_LATEST), timeout=30
    )
    first = next(call)
    assert first.start_offset == 3 and first.log_end_offset == 3
    assert not any(o >= 3 for b in first.batches for o, _ in batch_records(b))
    arrived: queue.Queue = queue.Queue()

    def reader() -> None:
        try:
            for resp in call:
                for batch in resp.batches:
                    for offset, rec in batch_records(batch):
                        if offset >= first.start_offset:
                            arrived.put((offset, rec.value))
        except grpc.RpcError as exc:
            arrived.put(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(10):
            value = f"new-{i}".encode()
            log_stub.Produce(log_pb2.ProduceRequest(topic="tail", partition=0, records=[precord(value)]), timeout=10)
            got = arrived.get(timeout=3)  # each record must reach the subscriber promptly
            assert got == (3 + i, value)
    finally:
        call.cancel()
        thread.join(5)
    assert call.code() == grpc.StatusCode.CANCELLED


def test_null_and_empty_keys_values_and_headers_are_preserved(log_stub, create_topic):
    """Null and empty keys/values stay distinct, and headers keep their order, duplicates and empties."""
    create_topic("fidelity")
    headers = [("b", b"2"), ("a", b"1"), ("b", b""), ("", b"x"), ("\u00e9t\u00e9", b"\x00\xff")]
    cases = [
        dict(),
        dict(key=b"", value=b""),
        dict(key=b"k"),
        dict(value=b"v"),
        dict(key=b"", value=None),
        dict(key=None, value=b""),
        dict(key=b"k", value=b"v", headers=headers),
        dict(value=b"\x00" * 100, headers=[("same", b"1"), ("same", b"1")]),
    ]
    recs = [precord(**c) for c in cases]
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="fidelity", partition=0, records=recs), timeout=10)
    got = fetch_range(log_stub, "fidelity", 0)
    assert len(got) == len(cases) and resp.partitions[0].base_offset == 0
    for (offset, rec), sent in zip(got, recs):
        assert rec.HasField("key") == sent.HasField("key"), f"offset {offset}: key presence lost"
        assert rec.HasField("value") == sent.HasField("value"), f"offset {offset}: value presence lost"
        assert rec.key == sent.key and rec.value == sent.value
        assert [(h.name, h.value) for h in rec.headers] == [(h.name, h.value) for h in sent.headers]
    # The same through Subscribe, which uses its own encoder.
    sub = collect_subscription(
        log_stub.Subscribe(log_pb2.SubscribeRequest(topic="fidelity", partition=0, start_offset=0, stop_offset=len(cases)), timeout=10)
    )
    assert [r for _, r in sub.records] == [r for _, r in got]


def test_timestamp_zero_gets_the_broker_clock(log_stub, create_topic):
    """Records sent with timestamp 0 get the broker's clock at append; explicit timestamps are kept."""
    create_topic("clock", 2)
    before = _wall_ms()
    recs = [precord(b"zero"), precord(b"explicit", timestamp_ms=TS0), precord(b"zero-too")]
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="clock", partition=1, records=recs), timeout=10)
    after = _wall_ms()
    [result] = resp.partitions
    assert before <= result.log_append_time_ms <= after
    got = fetch_range(log_stub, "clock", 1)
    stamps = [r.timestamp_ms for _, r in got]
    assert before <= stamps[0] <= after and before <= stamps[2] <= after
    assert stamps[1] == TS0
    batch = log_stub.Fetch(log_pb2.FetchRequest(topic="clock", partition=1, offset=0), timeout=10).batches[0]
    assert batch.max_timestamp_ms == max(stamps)
    assert batch.timestamp_type == records_pb2.TIMESTAMP_TYPE_CREATE_TIME
    # Keyed routing (the broker builds each partition's share) stamps the same way.
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="clock", records=[precord(b"k", key=b"some-key")]), timeout=10)
    [result] = resp.partitions
    [(_, rec)] = fetch_range(log_stub, "clock", result.partition, result.base_offset, result.base_offset + 1)
    assert before <= rec.timestamp_ms <= _wall_ms()


def test_log_append_time_is_the_timestamp_given_to_zero_timestamps(log_stub, create_topic):
    """PartitionProduceResult.log_append_time_ms equals the timestamp stored for records sent with timestamp 0."""
    create_topic("append-time")
    reported = {}
    for i in range(APPEND_TIME_ROUNDS):
        resp = log_stub.Produce(
            log_pb2.ProduceRequest(topic="append-time", partition=0, records=[precord(f"{i}".encode())]), timeout=10
        )
        [result] = resp.partitions
        reported[result.base_offset] = result.log_append_time_ms
    stored = {offset: rec.timestamp_ms for offset, rec in fetch_range(log_stub, "append-time", 0)}
    assert set(stored) == set(reported)
    mismatches = [(o, stored[o], reported[o]) for o in sorted(reported) if stored[o] != reported[o]]
    assert not mismatches, (
        f"{len(mismatches)}/{APPEND_TIME_ROUNDS} (offset, stored timestamp, log_append_time_ms) differ: {mismatches[:5]}"
    )


def test_acks_none_answers_without_offsets(log_stub, create_topic):
    """ACKS_NONE answers with base_offset -1 and log_append_time_ms 0; the records are still appended."""
    create_topic("fire-and-forget")
    resp = log_stub.Produce(
        log_pb2.ProduceRequest(topic="fire-and-forget", partition=0, acks=log_pb2.ACKS_NONE, records=[precord(b"x")] * 4),
        timeout=10,
    )
    [result] = resp.partitions
    assert (result.partition, result.base_offset, result.record_count, result.log_append_time_ms) == (0, -1, 4, 0)
    # The append is not acknowledged, so wait for it with a long-poll rather than assuming it is done.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = fetch_range(log_stub, "fire-and-forget", 0)
        if len(got) == 4:
            break
        time.sleep(0.02)
    assert values(got) == [b"x"] * 4


def test_produce_stream_answers_in_order_with_request_ids(log_stub, create_topic):
    """ProduceStream answers every request in order with its request_id, at increasing offsets, then ends OK."""
    create_topic("stream", 2)
    ids = [(1 << 64) - 1, 0] + list(range(100, 160))
    requests = [
        log_pb2.ProduceStreamRequest(
            request_id=rid,
            produce=log_pb2.ProduceRequest(topic="stream", partition=i % 2, records=[precord(f"s{i}".encode())] * (1 + i % 3)),
        )
        for i, rid in enumerate(ids)
    ]
    call = log_stub.ProduceStream(iter(requests), timeout=20)
    responses = list(call)
    assert call.code() == grpc.StatusCode.OK
    assert [r.request_id for r in responses] == ids
    next_offset = {0: 0, 1: 0}
    for i, r in enumerate(responses):
        assert r.WhichOneof("result") == "response"
        [result] = r.response.partitions
        assert result.partition == i % 2 and result.base_offset == next_offset[i % 2]
        next_offset[i % 2] += result.record_count
    for p in (0, 1):
        assert len(fetch_range(log_stub, "stream", p)) == next_offset[p]


def test_fetch_long_poll_returns_early_when_data_arrives(log_stub, create_topic):
    """A Fetch waiting at the log end returns as soon as a record is appended, well before max_wait_ms."""
    create_topic("poll")
    timer = threading.Timer(
        0.3, lambda: log_stub.Produce(log_pb2.ProduceRequest(topic="poll", partition=0, records=[precord(b"late")]), timeout=10)
    )
    start = time.monotonic()
    timer.start()
    try:
        resp = log_stub.Fetch(log_pb2.FetchRequest(topic="poll", partition=0, offset=0, max_wait_ms=10_000), timeout=15)
    finally:
        timer.join()
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 3.0, f"long-poll answered after {elapsed:.2f}s"
    assert [r.value for b in resp.batches for _, r in batch_records(b)] == [b"late"]
    assert resp.log_end_offset == 1


def test_fetch_long_poll_times_out_after_max_wait(log_stub, create_topic):
    """A Fetch at the log end with no new records answers empty after about max_wait_ms; max_wait_ms 0 answers at once."""
    create_topic("idle")
    log_stub.Produce(log_pb2.ProduceRequest(topic="idle", partition=0, records=[precord(b"only")]), timeout=10)
    start = time.monotonic()
    resp = log_stub.Fetch(log_pb2.FetchRequest(topic="idle", partition=0, offset=1, max_wait_ms=600), timeout=15)
    elapsed = time.monotonic() - start
    assert 0.55 <= elapsed < 2.5, f"long-poll of 600 ms answered after {elapsed:.2f}s"
    assert len(resp.batches) == 0 and (resp.log_start_offset, resp.log_end_offset) == (0, 1)
    start = time.monotonic()
    resp = log_stub.Fetch(log_pb2.FetchRequest(topic="idle", partition=0, offset=1), timeout=15)
    assert time.monotonic() - start < 0.5 and len(resp.batches) == 0


def test_fetch_long_poll_answers_before_the_call_deadline(log_stub, create_topic):
    """A Fetch whose deadline is shorter than max_wait_ms is answered (empty, OK) before the deadline, not DEADLINE_EXCEEDED."""
    create_topic("deadline")
    start = time.monotonic()
    try:
        resp = log_stub.Fetch(log_pb2.FetchRequest(topic="deadline", partition=0, offset=0, max_wait_ms=5_000), timeout=1.0)
    except grpc.RpcError as exc:
        raise AssertionError(
            f"Fetch with max_wait_ms=5000 and a 1 s deadline failed with {exc.code().name} after "
            f"{time.monotonic() - start:.2f}s instead of answering before the deadline"
        ) from None
    assert len(resp.batches) == 0 and resp.log_end_offset == 0
