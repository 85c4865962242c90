"""Limits that protect the broker, on a real broker: an oversized request gets
RESOURCE_EXHAUSTED, too many records INVALID_ARGUMENT naming the limit (Produce,
each ProduceStream message, ProduceAndCommit), streams beyond the per-connection
limit wait instead of failing once the connection is set up, unparseable
requests stay INVALID_ARGUMENT with the interceptor in place, and the broker
keeps serving after all of it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, groups_pb2, groups_pb2_grpc, log_pb2, log_pb2_grpc
from logstore.client import Producer
from logstore.errors import InvalidArgument
from logstore.server.app import RunningServer
from security_helpers import make_tokens, security_config, security_toml
from server_helpers import expect_status, precord

LIMITS = "[limits]\nmax_request_bytes = 65536\nmax_records_per_request = 10\n"


@pytest.fixture
def limited(start_server: Callable[..., RunningServer], tmp_path: Path) -> RunningServer:
    """A broker taking requests of up to 64 KiB and 10 records, with topic t."""
    return _with_topic(start_server(security=security_config(tmp_path / "s.toml", LIMITS)))


def _with_topic(running: RunningServer) -> RunningServer:
    with grpc.insecure_channel(running.address) as channel:
        admin_pb2_grpc.AdminStub(channel).CreateTopic(admin_pb2.CreateTopicRequest(topic="t", partition_count=1), timeout=10)
    return running


def produce(count: int, value: bytes = b"v") -> log_pb2.ProduceRequest:
    return log_pb2.ProduceRequest(topic="t", partition=0, records=[precord(value) for _ in range(count)])


def still_serving(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert log_pb2_grpc.LogStub(channel).Produce(produce(1), timeout=10).partitions[0].base_offset >= 0


def test_oversized_request_is_resource_exhausted(limited: RunningServer) -> None:
    """A request above max_request_bytes is refused by gRPC with RESOURCE_EXHAUSTED naming both sizes."""
    with grpc.insecure_channel(limited.address) as channel:
        message = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, log_pb2_grpc.LogStub(channel).Produce,
                                produce(1, b"x" * 70_000))
    assert "65536" in message
    still_serving(limited.address)


def test_too_many_records_are_invalid_argument_on_every_produce_rpc(limited: RunningServer) -> None:
    """11 records against a limit of 10: Produce and ProduceAndCommit fail, ProduceStream ends after earlier answers."""
    with grpc.insecure_channel(limited.address) as channel:
        log, groups = log_pb2_grpc.LogStub(channel), groups_pb2_grpc.GroupsStub(channel)
        assert log.Produce(produce(10), timeout=10).partitions[0].record_count == 10
        message = expect_status(grpc.StatusCode.INVALID_ARGUMENT, log.Produce, produce(11))
        assert "11 records" in message and "at most 10" in message and "max_records_per_request" in message
        commit = groups_pb2.ProduceAndCommitRequest(group="g", produce=produce(11))
        assert "max_records_per_request" in expect_status(grpc.StatusCode.INVALID_ARGUMENT, groups.ProduceAndCommit, commit)
        stream = log.ProduceStream(iter([
            log_pb2.ProduceStreamRequest(request_id=1, produce=produce(3)),
            log_pb2.ProduceStreamRequest(request_id=2, produce=produce(11)),
            log_pb2.ProduceStreamRequest(request_id=3, produce=produce(4)),
        ]), timeout=10)
        answers = list(stream)  # the stream goes on after the refused request
        assert [a.request_id for a in answers] == [1, 2, 3]
        assert [a.WhichOneof("result") for a in answers] == ["response", "error", "response"]
        assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "at most 10" in answers[1].error.message
        assert answers[2].response.partitions[0].record_count == 4
    still_serving(limited.address)


def test_producer_client_sees_the_record_limit(limited: RunningServer) -> None:
    """The Python Producer's batch above the record limit fails its futures with InvalidArgument naming the limit."""
    with Producer(limited.address, linger_ms=50, idempotent=False) as producer:
        futures = [producer.send("t", b"r", partition=0) for _ in range(20)]
        producer.flush()
        errors = [f.exception() for f in futures]
    assert any(isinstance(e, InvalidArgument) and "max_records_per_request" in e.message for e in errors)


def test_streams_beyond_the_connection_limit_wait_rather_than_fail(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """With max_concurrent_streams = 2 a third call on the connection waits; another connection is served at once."""
    limited = _with_topic(start_server(security=security_config(tmp_path / "s.toml", "[limits]\nmax_concurrent_streams = 2\n")))
    private = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    with grpc.insecure_channel(limited.address, options=private) as busy:
        log = log_pb2_grpc.LogStub(busy)
        follows = [log.Subscribe(log_pb2.SubscribeRequest(topic="t", partition=0, start_position=log_pb2.LOG_POSITION_LATEST))
                   for _ in range(2)]
        for follow in follows:
            next(follow)  # both streams are open
        expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, log.ListOffsets,
                      log_pb2.ListOffsetsRequest(topic="t", position=log_pb2.LOG_POSITION_LATEST), timeout=1)
        with grpc.insecure_channel(limited.address, options=private) as other:
            other_log = log_pb2_grpc.LogStub(other)
            assert other_log.ListOffsets(log_pb2.ListOffsetsRequest(topic="t", position=log_pb2.LOG_POSITION_LATEST),
                                         timeout=5).partitions
        follows[0].cancel()
        assert log.ListOffsets(log_pb2.ListOffsetsRequest(topic="t", position=log_pb2.LOG_POSITION_LATEST), timeout=5).partitions
        follows[1].cancel()


def test_unparseable_requests_stay_invalid_argument_behind_the_interceptor(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Garbage bytes to Produce, ProduceStream and Consume get INVALID_ARGUMENT (not INTERNAL) with tokens and limits on."""
    tokens = make_tokens("ops")
    text = security_toml(tokens, {"ops": 'topics = { "*" = ["produce", "consume", "admin"] }\ngroups = { "*" = ["consume"] }'},
                         extra="[quotas]\nproduce_bytes_per_second = 1000000\n")
    running = start_server(security=security_config(tmp_path / "s.toml", text))
    metadata = [("authorization", f"Bearer {tokens['ops']}")]
    garbage = b"\xff\xff\xff\xff"
    with grpc.insecure_channel(running.address) as channel:
        for method, streaming in (("/logstore.v1.Log/Produce", False), ("/logstore.v1.Log/ProduceStream", True),
                                  ("/logstore.v1.Groups/Consume", True)):
            if streaming:
                call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
                expect_status(grpc.StatusCode.INVALID_ARGUMENT, lambda **kw: list(call(iter([garbage]), **kw)),
                              metadata=metadata)
            else:
                call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
                expect_status(grpc.StatusCode.INVALID_ARGUMENT, call, garbage, metadata=metadata)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_many_refused_calls_at_once_leave_the_broker_serving(limited: RunningServer) -> None:
    """Dozens of concurrent oversized and over-count requests all get their status; the broker serves on."""
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def hammer(request: log_pb2.ProduceRequest) -> None:
        with grpc.insecure_channel(limited.address) as channel:
            try:
                log_pb2_grpc.LogStub(channel).Produce(request, timeout=20)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
        with lock:
            codes.append(code)

    requests = [produce(1, b"x" * 100_000) if i % 2 else produce(50) for i in range(40)]
    threads = [threading.Thread(target=hammer, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(c.name for c in codes) == sorted(["RESOURCE_EXHAUSTED"] * 20 + ["INVALID_ARGUMENT"] * 20)
    still_serving(limited.address)
