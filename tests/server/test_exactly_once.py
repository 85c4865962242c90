"""Exactly-once into the log (issue 6): the idempotent Python Producer over a network that drops
answers, across a broker SIGKILLed between a write and its answer, and fenced by a newer instance.

Everything is real: a broker (in-process, or a child process that is SIGKILLed) on loopback, a TCP
proxy (``flaky_proxy``) between it and the producer that delays answers and cuts connections, and
the log read back directly from the broker afterwards.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2
from logstore.client import Admin, Producer
from logstore.errors import ProducerFenced
from logstore.server.app import serve

from flaky_proxy import FlakyProxy
from server_helpers import fetch_range, free_port, kill_process, start_broker_process

RECORDS = 100_000
PARTITIONS = 4
KEYS = 64


def _read_partitions(address: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """(offset, key, value) of every record of every partition, read straight from the broker."""
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)]) as channel:
        log = log_pb2_grpc.LogStub(channel)
        return {p: [(o, r.key, r.value) for o, r in fetch_range(log, topic, p)] for p in range(partitions)}


def _check_exactly_once(
    logged: dict[int, list[tuple[int, bytes, bytes]]], sent: dict[bytes, int], metadata: dict[bytes, tuple[int, int]]
) -> None:
    """Each sent value is in the log once, at the offset its future reported, in send order per key."""
    seen: dict[bytes, tuple[int, int]] = {}
    last_per_key: dict[bytes, int] = {}
    for partition, records in logged.items():
        for offset, key, value in records:
            assert value not in seen, f"{value!r} is in the log twice: {seen[value]} and {(partition, offset)}"
            seen[value] = (partition, offset)
            index = sent[value]
            assert last_per_key.get(key, -1) < index, f"key {key!r} out of order at {(partition, offset)}"
            last_per_key[key] = index
    missing = set(sent) - set(seen)
    assert not missing, f"{len(missing)} records never reached the log, e.g. {sorted(missing)[:3]}"
    wrong = {v: (seen[v], metadata[v]) for v in metadata if seen[v] != metadata[v]}
    assert not wrong, f"{len(wrong)} futures reported other offsets than the log holds, e.g. {list(wrong.items())[:3]}"


def test_a_hundred_thousand_records_through_a_flaky_network_arrive_exactly_once_and_in_order(tmp_path: Path) -> None:
    """With answers delayed and connections cut, every one of 100,000 records is appended once, in per-key order."""
    server = serve(tmp_path / "data", "127.0.0.1:0")
    proxy = FlakyProxy(server.port, seed=6, drop_rate=0.08, max_delay_s=0.005)
    try:
        Admin(server.address).create_topic("events", PARTITIONS)
        sent: dict[bytes, int] = {}
        futures = []
        with Producer(proxy.address, linger_ms=2, batch_bytes=2 << 10, request_timeout_ms=3_000,
                      retry_backoff_ms=20) as producer:
            for i in range(RECORDS):
                value = b"v%06d" % i
                sent[value] = i
                futures.append((value, producer.send("events", value, key=b"k%d" % (i % KEYS))))
            assert producer.flush(timeout=240) == 0
            metadata = {value: (f.result().partition, f.result().offset) for value, f in futures}
        assert proxy.cuts >= 5, f"the proxy cut only {proxy.cuts} connections: the test proved little"
        logged = _read_partitions(server.address, "events", PARTITIONS)
        assert sum(len(r) for r in logged.values()) == RECORDS
        _check_exactly_once(logged, sent, metadata)
    finally:
        proxy.stop()
        server.stop(grace=1.0)


def test_a_retry_after_the_broker_was_killed_between_write_and_answer_appends_nothing_twice(tmp_path: Path) -> None:
    """Records written but unanswered when the broker is SIGKILLed are answered as duplicates after the restart."""
    data, port = tmp_path / "data", free_port()
    broker = start_broker_process(data, port)
    direct = f"127.0.0.1:{port}"
    proxy = FlakyProxy(port, seed=1, drop_rate=0.0, max_delay_s=0.0)
    try:
        Admin(direct).create_topic("orders", 2)
        with Producer(proxy.address, acks="durable", linger_ms=1, request_timeout_ms=60_000,
                      retry_backoff_ms=50) as producer:
            first = [producer.send("orders", b"before-%d" % i, key=b"k%d" % (i % 5)) for i in range(200)]
            assert producer.flush(timeout=30) == 0
            proxy.hold_answers = True  # the broker appends, the producer never hears of it
            held = [producer.send("orders", b"held-%d" % i, key=b"k%d" % (i % 5)) for i in range(300)]
            deadline = time.monotonic() + 30
            while sum(len(r) for r in _read_partitions(direct, "orders", 2).values()) < 500:
                assert time.monotonic() < deadline, "the held records never reached the broker's log"
                time.sleep(0.05)
            assert not any(f.done() for f in held), "an answer got through the proxy"
            kill_process(broker)
            proxy.hold_answers = False
            broker = start_broker_process(data, port)
            assert producer.flush(timeout=60) == 0
            results = [f.result() for f in first + held]
        logged = _read_partitions(direct, "orders", 2)
        values = [v for records in logged.values() for _o, _k, v in records]
        assert len(values) == 500 and len(set(values)) == 500, f"{len(values)} records logged for 500 sent"
        where = {v: (p, o) for p, records in logged.items() for o, _k, v in records}
        expected = [b"before-%d" % i for i in range(200)] + [b"held-%d" % i for i in range(300)]
        assert [(r.partition, r.offset) for r in results] == [where[v] for v in expected]
    finally:
        proxy.stop()
        kill_process(broker)


def test_a_producer_fenced_by_a_newer_instance_with_its_client_id_cannot_write(tmp_path: Path) -> None:
    """Once a second Producer registers the same client_id, the first one's sends fail with ProducerFenced."""
    server = serve(tmp_path / "data", "127.0.0.1:0")
    try:
        Admin(server.address).create_topic("ledger", 2)
        with Producer(server.address, client_id="billing") as old:
            old.send("ledger", b"one", partition=0).result(timeout=10)
            with Producer(server.address, client_id="billing") as new:
                new.send("ledger", b"two", partition=1).result(timeout=10)
                for partition in (0, 1):  # also where the new instance never wrote
                    with pytest.raises(ProducerFenced, match="fenced"):
                        old.send("ledger", b"zombie", partition=partition).result(timeout=10)
                new.send("ledger", b"three", partition=0).result(timeout=10)
                assert (new.producer_id, new.producer_epoch) == (old.producer_id, old.producer_epoch + 1)
        logged = _read_partitions(server.address, "ledger", 2)
        assert [v for _o, _k, v in logged[0]] == [b"one", b"three"]
        assert [v for _o, _k, v in logged[1]] == [b"two"]
    finally:
        server.stop(grace=1.0)


def test_raw_stubs_see_duplicate_gap_and_fencing_statuses(tmp_path: Path) -> None:
    """Over plain stubs: a retry is flagged duplicate with the original offsets; a gap is OUT_OF_RANGE naming the
    expected sequence; a fenced epoch and an unknown id are FAILED_PRECONDITION; a multi-partition idempotent
    request is INVALID_ARGUMENT."""
    server = serve(tmp_path / "data", "127.0.0.1:0")
    try:
        Admin(server.address).create_topic("t", 2)
        with grpc.insecure_channel(server.address) as channel:
            log = log_pb2_grpc.LogStub(channel)
            me = log.InitProducer(log_pb2.InitProducerRequest(client_id="raw"))

            def produce(seq: int, n: int = 3, epoch: int | None = None, pid: int | None = None, partition=0):
                request = log_pb2.ProduceRequest(
                    topic="t", producer_id=me.producer_id if pid is None else pid,
                    producer_epoch=me.producer_epoch if epoch is None else epoch, base_sequence=seq,
                    records=[records_pb2.ProducerRecord(value=b"%d" % (seq + i)) for i in range(n)],
                )
                if partition is not None:
                    request.partition = partition
                return log.Produce(request)

            first = produce(0).partitions[0]
            again = produce(0).partitions[0]
            assert (again.duplicate, again.base_offset, again.log_append_time_ms) == (
                True, first.base_offset, first.log_append_time_ms)
            assert not first.duplicate and produce(3).partitions[0].base_offset == 3
            statuses = {}
            for name, call in {
                "gap": lambda: produce(9),
                "fenced": lambda: produce(6, epoch=me.producer_epoch - 1) if me.producer_epoch else None,
                "unknown": lambda: produce(0, pid=10_000),
                "routed": lambda: produce(6, partition=None),
            }.items():
                try:
                    call()
                except grpc.RpcError as exc:
                    statuses[name] = (exc.code(), exc.details())
            assert statuses["gap"][0] == grpc.StatusCode.OUT_OF_RANGE
            assert "out-of-order sequence" in statuses["gap"][1] and "next sequence expected is 6" in statuses["gap"][1]
            assert statuses["unknown"][0] == grpc.StatusCode.FAILED_PRECONDITION and "InitProducer" in statuses["unknown"][1]
            assert statuses["routed"][0] == grpc.StatusCode.INVALID_ARGUMENT and "partition" in statuses["routed"][1]
            newer = log.InitProducer(log_pb2.InitProducerRequest(client_id="raw"))
            assert newer.producer_epoch == me.producer_epoch + 1
            with pytest.raises(grpc.RpcError) as fenced:
                produce(6)
            assert fenced.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "fenced" in fenced.value.details()
            counts = defaultdict(int)
            for p in range(2):
                counts[p] = len(list(fetch_range(log, "t", p)))
            assert dict(counts) == {0: 6, 1: 0}
    finally:
        server.stop(grace=1.0)
