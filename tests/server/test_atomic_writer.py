"""The Python ``AtomicWriter`` (Groups.ProduceAndCommit) over real gRPC: a read-process-write loop through a
network that cuts connections stays exactly-once; zombies are fenced; an unknown outcome stops the writer."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from logstore._proto.logstore.v1 import log_pb2_grpc
from logstore.client import Admin, AtomicWriter, Producer
from logstore.errors import FailedPrecondition, ProducerFenced
from logstore.server.app import serve

from flaky_proxy import FlakyProxy
from server_helpers import fetch_range

INPUT = 1_000
CHUNK = 50


@pytest.fixture
def server(tmp_path: Path):
    running = serve(tmp_path / "data", "127.0.0.1:0")
    yield running
    running.stop(grace=1.0)


def _values(address: str, topic: str) -> list[bytes]:
    with grpc.insecure_channel(address) as channel:
        return [r.value for _o, r in fetch_range(log_pb2_grpc.LogStub(channel), topic, 0)]


def test_a_read_process_write_loop_through_a_flaky_network_writes_each_result_exactly_once(server) -> None:
    """Chunks written with AtomicWriter through a proxy that cuts answers land once each, with the offsets committed."""
    Admin(server.address).create_topic("orders", 1)
    Admin(server.address).create_topic("invoices", 1)
    with Producer(server.address) as producer:
        for i in range(INPUT):
            producer.send("orders", b"order-%d" % i, partition=0)
    inputs = _values(server.address, "orders")
    proxy = FlakyProxy(server.port, seed=11, drop_rate=0.2, max_delay_s=0.002)
    try:
        with AtomicWriter(proxy.address, group="billing", client_id="billing-0", request_timeout_ms=2_000) as writer:
            position = max(writer.committed("orders", 0), 0)
            while position < INPUT:
                chunk = inputs[position : position + CHUNK]
                writer.write("invoices", 0, [v.replace(b"order", b"invoice") for v in chunk],
                             commit={("orders", 0): position + len(chunk)},
                             if_committed={("orders", 0): position or -1})
                position += len(chunk)
            assert writer.committed("orders", 0) == INPUT
        assert proxy.cuts >= 1, "no connection was cut: the network was not flaky enough to prove anything"
    finally:
        proxy.stop()
    assert _values(server.address, "invoices") == [b"invoice-%d" % i for i in range(INPUT)]


def test_a_zombie_is_fenced_by_client_id_and_by_if_committed(server) -> None:
    """A writer superseded by a new one with its client_id gets ProducerFenced; stale if_committed is FailedPrecondition."""
    Admin(server.address).create_topic("in", 1)
    Admin(server.address).create_topic("out", 1)
    old = AtomicWriter(server.address, group="g", client_id="w")
    old.write("out", 0, [b"a"], commit={("in", 0): 5}, if_committed={("in", 0): -1})
    new = AtomicWriter(server.address, group="g", client_id="w")
    with pytest.raises(ProducerFenced):
        old.write("out", 0, [b"zombie"], commit={("in", 0): 9}, if_committed={("in", 0): 5})
    with pytest.raises(FailedPrecondition, match="committed offset 5"):
        new.write("out", 0, [b"stale"], commit={("in", 0): 9}, if_committed={("in", 0): 3})
    new.write("out", 0, [b"b"], commit={("in", 0): 9}, if_committed={("in", 0): 5})
    assert _values(server.address, "out") == [b"a", b"b"] and new.committed("in", 0) == 9
    old.close()
    new.close()


def test_a_write_whose_outcome_is_unknown_stops_the_writer(server) -> None:
    """When every retry goes unanswered, write raises and the writer refuses more writes until replaced."""
    Admin(server.address).create_topic("in", 1)
    Admin(server.address).create_topic("out", 1)
    proxy = FlakyProxy(server.port, seed=3, drop_rate=0.0, max_delay_s=0.0)
    try:
        writer = AtomicWriter(proxy.address, group="g", client_id="w", request_timeout_ms=300, retry_timeout_ms=1_000)
        proxy.hold_answers = True
        with pytest.raises(Exception) as first:
            writer.write("out", 0, [b"maybe"], commit={("in", 0): 1})
        assert getattr(first.value, "grpc_status", "") in ("DEADLINE_EXCEEDED", "UNAVAILABLE")
        proxy.hold_answers = False
        with pytest.raises(FailedPrecondition, match="outcome of an earlier write is unknown"):
            writer.write("out", 0, [b"next"], commit={("in", 0): 2})
        writer.close()
    finally:
        proxy.stop()
    replacement = AtomicWriter(server.address, group="g", client_id="w")
    done = replacement.committed("in", 0)
    assert done in (-1, 1)
    assert _values(server.address, "out") == ([b"maybe"] if done == 1 else [])
    replacement.close()
