"""Conditional append (expected_offset) over real gRPC: optimistic concurrency on one partition."""

from __future__ import annotations

import threading

import grpc

from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2
from logstore.client import Admin
from logstore.server.app import RunningServer
from server_helpers import expect_status


def _request(value: bytes, expected: int | None, partition: int | None = 0) -> log_pb2.ProduceRequest:
    request = log_pb2.ProduceRequest(topic="ledger", records=[records_pb2.ProducerRecord(value=value)])
    if partition is not None:
        request.partition = partition
    if expected is not None:
        request.expected_offset = expected
    return request


def test_append_succeeds_only_at_the_expected_log_end(server: RunningServer, log_stub) -> None:
    """expected_offset equal to the log end appends; any other value is FAILED_PRECONDITION naming the end."""
    Admin(server.address).create_topic("ledger", 2)
    assert log_stub.Produce(_request(b"a", 0)).partitions[0].base_offset == 0
    assert log_stub.Produce(_request(b"b", 1)).partitions[0].base_offset == 1
    details = expect_status(grpc.StatusCode.FAILED_PRECONDITION, log_stub.Produce, _request(b"late", 1))
    assert "log end 2" in details and "ledger/0" in details
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, log_stub.Produce, _request(b"ahead", 5))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, log_stub.Produce, _request(b"x", -1))
    details = expect_status(grpc.StatusCode.INVALID_ARGUMENT, log_stub.Produce, _request(b"x", 0, partition=None))
    assert "partition" in details
    fetched = log_stub.Fetch(log_pb2.FetchRequest(topic="ledger", partition=0, offset=0))
    assert [r.value for b in fetched.batches for r in b.records] == [b"a", b"b"], "refused appends left no trace"


def test_racing_writers_each_win_distinct_offsets(server: RunningServer, channel: grpc.Channel) -> None:
    """Writers racing with expected_offset: exactly one wins each offset, and the log holds exactly the winners."""
    Admin(server.address).create_topic("ledger", 1)
    wins: dict[int, bytes] = {}
    lock = threading.Lock()
    refused = [0]

    def writer(name: str) -> None:
        stub = log_pb2_grpc.LogStub(channel)
        mine = 0
        while mine < 40:
            end = stub.ListOffsets(log_pb2.ListOffsetsRequest(
                topic="ledger", position=log_pb2.LOG_POSITION_LATEST), timeout=10).partitions[0].log_end_offset
            value = f"{name}-{mine}".encode()
            try:
                offset = stub.Produce(_request(value, end), timeout=10).partitions[0].base_offset
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
                with lock:
                    refused[0] += 1
                continue
            assert offset == end
            with lock:
                assert offset not in wins, f"offset {offset} won twice"
                wins[offset] = value
            mine += 1

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(wins) == list(range(160))
    fetched = log_pb2_grpc.LogStub(channel).Fetch(log_pb2.FetchRequest(topic="ledger", partition=0, offset=0, max_bytes=1 << 20))
    values = [r.value for b in fetched.batches for r in b.records]
    assert values == [wins[o] for o in range(160)], "the log is exactly the winning appends, in order"
    assert refused[0] > 0, "the writers really raced"
