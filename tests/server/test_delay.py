"""Delayed delivery over real gRPC: groups never see a record before its time, other records never wait."""

from __future__ import annotations

import time

import grpc
import pytest

from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2
from logstore.client import Admin
from logstore.server.app import RunningServer
from group_helpers import AutoAcker, RawMember, wait_all
from server_helpers import expect_status


def send(channel: grpc.Channel, topic: str, records: list[records_pb2.ProducerRecord]) -> log_pb2.ProduceResponse:
    return log_pb2_grpc.LogStub(channel).Produce(
        log_pb2.ProduceRequest(topic=topic, records=records, acks=log_pb2.ACKS_DURABLE), timeout=10)


def test_delayed_records_wait_and_others_flow(server: RunningServer, channel: grpc.Channel) -> None:
    """A record with deliver_after_ms reaches the group no earlier and at most 10% + 200 ms later;
    records without a delay, before and after it in the same partition, are delivered at once."""
    Admin(server.address).create_topic("mail", 1)
    acks = AutoAcker()
    arrived: dict[bytes, float] = {}

    def record(member: RawMember, batch) -> None:
        for x in batch:
            arrived.setdefault(x.value, time.monotonic())
        acks(member, batch)

    m = RawMember(channel, "g", ["mail"], on_delivery=record)
    m.wait_for(lambda m: bool(m.responses))
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    send(channel, "mail", [
        records_pb2.ProducerRecord(value=b"now-1"),
        records_pb2.ProducerRecord(value=b"later", deliver_after_ms=800, timestamp_ms=now_ms),
        records_pb2.ProducerRecord(value=b"at", deliver_at_ms=now_ms + 1500),
        records_pb2.ProducerRecord(value=b"now-2"),
    ])
    wait_all([m], lambda: {b"now-1", b"now-2"} <= set(arrived), what="undelayed records")
    assert max(arrived[b"now-1"], arrived[b"now-2"]) - t0 < 0.5
    wait_all([m], lambda: {b"later", b"at"} <= set(arrived), what="delayed records")
    later, at = arrived[b"later"] - t0, arrived[b"at"] - t0
    assert 0.8 - 0.05 <= later <= 0.8 * 1.1 + 0.2, f"deliver_after 800 ms arrived after {later:.3f}s"
    assert 1.5 - 0.05 <= at <= 1.5 * 1.1 + 0.2, f"deliver_at +1.5 s arrived after {at:.3f}s"
    # The raw log shows every record at its offset at once.
    fetched = log_pb2_grpc.LogStub(channel).Fetch(log_pb2.FetchRequest(topic="mail", partition=0, offset=0))
    values = [r.value for b in fetched.batches for r in b.records]
    assert values == [b"now-1", b"later", b"at", b"now-2"]
    assert fetched.batches[0].records[1].deliver_after_ms == 800
    m.leave()


def test_negative_delivery_times_are_refused(server: RunningServer, channel: grpc.Channel) -> None:
    """deliver_after_ms or deliver_at_ms below 0 gets INVALID_ARGUMENT naming the field."""
    Admin(server.address).create_topic("mail", 1)
    for bad in (records_pb2.ProducerRecord(value=b"x", deliver_after_ms=-1),
                records_pb2.ProducerRecord(value=b"x", deliver_at_ms=-5)):
        field = bad.WhichOneof("delivery_time")
        details = expect_status(grpc.StatusCode.INVALID_ARGUMENT, log_pb2_grpc.LogStub(channel).Produce,
                                log_pb2.ProduceRequest(topic="mail", records=[bad]))
        assert field in details


def test_a_delayed_record_survives_a_restart_before_its_time(start_server) -> None:
    """A record set aside for later is still delivered, on time, after a broker restart."""
    server = start_server()
    Admin(server.address).create_topic("mail", 1)
    with grpc.insecure_channel(server.address) as ch:
        m = RawMember(ch, "g", ["mail"], on_delivery=AutoAcker())
        m.wait_for(lambda m: bool(m.responses))
        due = int(time.time() * 1000) + 1500
        send(ch, "mail", [records_pb2.ProducerRecord(value=b"later", deliver_at_ms=due),
                          records_pb2.ProducerRecord(value=b"now")])
        m.wait_for(lambda m: any(x.value == b"now" for x in m.received))
        time.sleep(0.2)
        assert all(x.value != b"later" for x in m.received)
        m.leave()
        m.wait_ended()
    start_server.stop_all()
    server = start_server()
    with grpc.insecure_channel(server.address) as ch:
        m = RawMember(ch, "g", ["mail"], on_delivery=AutoAcker())
        m.wait_for(lambda m: any(x.value == b"later" for x in m.received), timeout=10)
        got = time.time() * 1000
        assert due - 50 <= got <= due + 0.1 * 1500 + 200
        m.leave()


def test_key_ordered_group_sets_delayed_records_aside_too(server: RunningServer, channel: grpc.Channel) -> None:
    """KEY_ORDERED: a delayed record waits; the other records, of its key too, are not held behind it."""
    Admin(server.address).create_topic("mail", 1)
    m = RawMember(channel, "g", ["mail"], on_delivery=AutoAcker(),
                  delivery_mode=2)
    m.wait_for(lambda m: bool(m.responses))
    send(channel, "mail", [records_pb2.ProducerRecord(key=b"k", value=b"later", deliver_after_ms=600),
                           records_pb2.ProducerRecord(key=b"k", value=b"next")])
    m.wait_for(lambda m: any(x.value == b"next" for x in m.received), timeout=5)
    assert all(x.value != b"later" for x in m.received)
    m.wait_for(lambda m: any(x.value == b"later" for x in m.received), timeout=5)
    m.leave()


def test_python_producer_sends_delivery_times(server: RunningServer, channel: grpc.Channel) -> None:
    """Producer.send(deliver_after_ms=...) and (deliver_at=datetime) reach the log; bad values are refused."""
    from datetime import datetime, timezone

    from logstore.client import Producer
    from logstore.errors import InvalidArgument

    Admin(server.address).create_topic("mail", 1)
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    with Producer(server.address) as producer:
        producer.send("mail", b"a", key=b"k", deliver_after_ms=250).result(10)
        producer.send("mail", b"b", deliver_at=at).result(10)
        producer.send("mail", b"c", key=b"k").result(10)
        for bad in ({"deliver_after_ms": -1}, {"deliver_at": "soon"}, {"deliver_after_ms": 1, "deliver_at": 5}):
            with pytest.raises(InvalidArgument):
                producer.send("mail", b"x", **bad)
    fetched = log_pb2_grpc.LogStub(channel).Fetch(log_pb2.FetchRequest(topic="mail", partition=0, offset=0))
    records = [r for b in fetched.batches for r in b.records]
    assert [r.WhichOneof("delivery_time") for r in records] == ["deliver_after_ms", "deliver_at_ms", None]
    assert records[0].deliver_after_ms == 250 and records[1].deliver_at_ms == int(at.timestamp() * 1000)
    assert records[0].key == b"k" and records[2].value == b"c"
