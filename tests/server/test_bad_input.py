"""Bad input to every RPC gets the status code its proto comment documents, with a useful
message, and leaves the broker serving."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc, records_pb2
from logstore.server.app import RunningServer, serve

from server_helpers import fetch_range, precord, values

C = grpc.StatusCode
BAD_NAMES = ["../x", "a/b", "", ".", "..", "x" * 250]
NAME_HINTS = {"../x": "'/'", "a/b": "'/'", "": "empty", ".": "not allowed", "..": "not allowed", "x" * 250: "249"}
INTERNAL = "__internal"
UNKNOWN = "no-such-topic"
MAX_RECORD = 1024
MAX_BATCH = 4096
P0_RECORDS = 10
PARTITION_RANGE = ("0 to 3", "4 partitions")
"""A NOT_FOUND for a partition of the 4-partition topic must give its partition count."""

UNARY = {
    "Produce": ("log", log_pb2.ProduceRequest),
    "Fetch": ("log", log_pb2.FetchRequest),
    "ListOffsets": ("log", log_pb2.ListOffsetsRequest),
    "CreateTopic": ("admin", admin_pb2.CreateTopicRequest),
    "DeleteTopic": ("admin", admin_pb2.DeleteTopicRequest),
    "ListTopics": ("admin", admin_pb2.ListTopicsRequest),
    "DescribeTopic": ("admin", admin_pb2.DescribeTopicRequest),
    "CreatePartitions": ("admin", admin_pb2.CreatePartitionsRequest),
}
ALL_METHODS = [
    "/logstore.v1.Log/Produce",
    "/logstore.v1.Log/ProduceStream",
    "/logstore.v1.Log/Fetch",
    "/logstore.v1.Log/Subscribe",
    "/logstore.v1.Log/ListOffsets",
    "/logstore.v1.Admin/CreateTopic",
    "/logstore.v1.Admin/DeleteTopic",
    "/logstore.v1.Admin/ListTopics",
    "/logstore.v1.Admin/DescribeTopic",
    "/logstore.v1.Admin/CreatePartitions",
]


@dataclass
class Served:
    running: RunningServer
    channel: grpc.Channel
    log: log_pb2_grpc.LogStub
    admin: admin_pb2_grpc.AdminStub


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One broker for the module: topic t4 (4 partitions, 10 records in p0) and
    topic small (2 partitions, max_record_bytes 1024, max_batch_bytes 4096)."""
    running = serve(Path(tmp_path_factory.mktemp("bad-input")) / "data")
    channel = grpc.insecure_channel(running.address)
    b = Served(running, channel, log_pb2_grpc.LogStub(channel), admin_pb2_grpc.AdminStub(channel))
    b.admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="t4", partition_count=4), timeout=10)
    b.admin.CreateTopic(
        admin_pb2.CreateTopicRequest(
            topic="small",
            partition_count=2,
            config=admin_pb2.TopicConfig(max_record_bytes=MAX_RECORD, max_batch_bytes=MAX_BATCH),
        ),
        timeout=10,
    )
    b.log.Produce(log_pb2.ProduceRequest(topic="t4", partition=0, records=[precord(b"r")] * P0_RECORDS), timeout=10)
    yield b
    channel.close()
    running.stop(0.5)


@dataclass
class Outcome:
    code: grpc.StatusCode
    message: str
    responses_before_error: list = field(default_factory=list)


def invoke(b: Served, rpc: str, request) -> Outcome:  # noqa: ANN001
    """Call one RPC with one request and report how it ended."""
    if rpc == "ProduceStream":
        call = b.log.ProduceStream(iter([log_pb2.ProduceStreamRequest(request_id=42, produce=request)]), timeout=10)
        responses = list(call)
        assert call.code() == C.OK, "a failed request must not end the stream"
        assert [r.request_id for r in responses] == [42]
        [r] = responses
        if r.WhichOneof("result") == "response":
            return Outcome(C.OK, "")
        assert r.error.code != 0, "an error Status is never OK"
        return Outcome(_code(r.error.code), r.error.message)
    if rpc == "Subscribe":
        call = b.log.Subscribe(request, timeout=10)
        got = []
        try:
            for resp in call:
                got.append(resp)
        except grpc.RpcError as exc:
            return Outcome(exc.code(), exc.details() or "", got)
        return Outcome(C.OK, "", got)
    service, _ = UNARY[rpc]
    stub = b.log if service == "log" else b.admin
    try:
        getattr(stub, rpc)(request, timeout=10)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(C.OK, "")


def _code(number: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == number)


# -- the table of bad requests ------------------------------------------------------------


def _produce(**kw) -> log_pb2.ProduceRequest:  # noqa: ANN003
    kw.setdefault("records", [precord(b"x")])
    return log_pb2.ProduceRequest(**kw)


def _subscribe(**kw) -> log_pb2.SubscribeRequest:  # noqa: ANN003
    if not {"start_position", "start_offset", "start_timestamp_ms", "no_start"} & set(kw):
        kw["start_position"] = log_pb2.LOG_POSITION_EARLIEST
    kw.pop("no_start", None)
    return log_pb2.SubscribeRequest(**kw)


def _cases() -> list:
    cases = []

    def add(case_id, rpc, request, codes, *hints):  # noqa: ANN001, ANN202
        codes = codes if isinstance(codes, tuple) else (codes,)
        cases.append(pytest.param(rpc, request, codes, hints, id=f"{rpc}-{case_id}"))
        if rpc == "Produce":  # ProduceStream answers each request as Produce would.
            cases.append(pytest.param("ProduceStream", request, codes, hints, id=f"ProduceStream-{case_id}"))

    for name in BAD_NAMES:
        nid = f"name={name[:8]!r}{'...' if len(name) > 8 else ''}"
        hints = ("topic name", NAME_HINTS[name])
        add(nid, "Produce", _produce(topic=name, partition=0), C.INVALID_ARGUMENT, *hints)
        add(nid + "-keyed", "Produce", _produce(topic=name, records=[precord(b"x", key=b"k")]), C.INVALID_ARGUMENT, *hints)
        add(nid, "Fetch", log_pb2.FetchRequest(topic=name), C.INVALID_ARGUMENT, *hints)
        add(nid, "Subscribe", _subscribe(topic=name), C.INVALID_ARGUMENT, *hints)
        add(nid, "ListOffsets", log_pb2.ListOffsetsRequest(topic=name, position=log_pb2.LOG_POSITION_LATEST), C.INVALID_ARGUMENT, *hints)
        add(nid, "CreateTopic", admin_pb2.CreateTopicRequest(topic=name, partition_count=1), C.INVALID_ARGUMENT, *hints)
        add(nid, "DeleteTopic", admin_pb2.DeleteTopicRequest(topic=name), C.INVALID_ARGUMENT, *hints)
        add(nid, "DescribeTopic", admin_pb2.DescribeTopicRequest(topic=name), C.INVALID_ARGUMENT, *hints)
        add(nid, "CreatePartitions", admin_pb2.CreatePartitionsRequest(topic=name, partition_count=2), C.INVALID_ARGUMENT, *hints)

    # A reserved name: creating it is refused; elsewhere it is a well-formed name of no existing topic.
    add("reserved", "CreateTopic", admin_pb2.CreateTopicRequest(topic=INTERNAL, partition_count=1), C.INVALID_ARGUMENT, "reserved", "'__'")
    add("reserved", "Produce", _produce(topic=INTERNAL, partition=0), C.NOT_FOUND, INTERNAL)
    add("reserved", "Fetch", log_pb2.FetchRequest(topic=INTERNAL), C.NOT_FOUND, INTERNAL)
    add("reserved", "Subscribe", _subscribe(topic=INTERNAL), C.NOT_FOUND, INTERNAL)
    add("reserved", "ListOffsets", log_pb2.ListOffsetsRequest(topic=INTERNAL, position=log_pb2.LOG_POSITION_LATEST), C.NOT_FOUND, INTERNAL)
    add("reserved", "DeleteTopic", admin_pb2.DeleteTopicRequest(topic=INTERNAL), (C.NOT_FOUND, C.INVALID_ARGUMENT), INTERNAL)
    add("reserved", "DescribeTopic", admin_pb2.DescribeTopicRequest(topic=INTERNAL), C.NOT_FOUND, INTERNAL)
    add("reserved", "CreatePartitions", admin_pb2.CreatePartitionsRequest(topic=INTERNAL, partition_count=2), (C.NOT_FOUND, C.INVALID_ARGUMENT), INTERNAL)

    # Unknown topics.
    add("unknown-topic", "Produce", _produce(topic=UNKNOWN, partition=0), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic-keyed", "Produce", _produce(topic=UNKNOWN, records=[precord(b"x", key=b"k")]), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "Fetch", log_pb2.FetchRequest(topic=UNKNOWN), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "Subscribe", _subscribe(topic=UNKNOWN), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "ListOffsets", log_pb2.ListOffsetsRequest(topic=UNKNOWN, position=log_pb2.LOG_POSITION_LATEST), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "DeleteTopic", admin_pb2.DeleteTopicRequest(topic=UNKNOWN), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "DescribeTopic", admin_pb2.DescribeTopicRequest(topic=UNKNOWN), C.NOT_FOUND, UNKNOWN)
    add("unknown-topic", "CreatePartitions", admin_pb2.CreatePartitionsRequest(topic=UNKNOWN, partition_count=2), C.NOT_FOUND, UNKNOWN)

    # Partitions outside [0, 4).
    for p in (4, -1, 1 << 30):
        add(f"partition={p}", "Produce", _produce(topic="t4", partition=p), C.NOT_FOUND, PARTITION_RANGE)
        add(f"record-partition={p}", "Produce", _produce(topic="t4", records=[precord(b"x", partition=p)]), C.NOT_FOUND, PARTITION_RANGE)
        add(f"partition={p}", "Fetch", log_pb2.FetchRequest(topic="t4", partition=p), C.NOT_FOUND, PARTITION_RANGE)
        add(f"partition={p}", "Subscribe", _subscribe(topic="t4", partition=p), C.NOT_FOUND, PARTITION_RANGE)
        add(
            f"partition={p}", "ListOffsets",
            log_pb2.ListOffsetsRequest(topic="t4", partitions=[0, p], position=log_pb2.LOG_POSITION_LATEST),
            C.NOT_FOUND, PARTITION_RANGE,
        )
    add("partition-twice", "ListOffsets", log_pb2.ListOffsetsRequest(topic="t4", partitions=[1, 2, 1], position=log_pb2.LOG_POSITION_LATEST), C.INVALID_ARGUMENT, "twice")

    # Offsets outside [0, 10] of t4/0.
    for offset in (-1, P0_RECORDS + 1, 1 << 62):
        add(f"offset={offset}", "Fetch", log_pb2.FetchRequest(topic="t4", partition=0, offset=offset), C.OUT_OF_RANGE, str(P0_RECORDS), "0")
        add(f"offset={offset}", "Subscribe", log_pb2.SubscribeRequest(topic="t4", partition=0, start_offset=offset), C.OUT_OF_RANGE, str(P0_RECORDS))

    # Sizes: one record over max_record_bytes, one partition's share over max_batch_bytes.
    big = precord(b"v" * (2 * MAX_RECORD))
    add("record-too-large", "Produce", _produce(topic="small", partition=0, records=[big]), C.INVALID_ARGUMENT, "max_record_bytes", str(MAX_RECORD))
    add(
        "record-too-large-keyed", "Produce",
        _produce(topic="small", records=[precord(b"ok", key=b"a"), precord(b"v" * (2 * MAX_RECORD), key=b"b")]),
        C.INVALID_ARGUMENT, "max_record_bytes", str(MAX_RECORD),
    )
    add(
        "record-above-both-limits", "Produce",
        _produce(topic="small", partition=0, records=[precord(b"v" * (2 * MAX_BATCH))]),
        C.INVALID_ARGUMENT, "max_record_bytes", str(MAX_RECORD),
    )
    add(
        "batch-too-large", "Produce",
        _produce(topic="small", partition=1, records=[precord(b"v" * 900)] * 8),
        C.INVALID_ARGUMENT, "max_batch_bytes", str(MAX_BATCH),
    )

    # Empty batches, negative timestamps, unknown enum values.
    add("empty-batch", "Produce", log_pb2.ProduceRequest(topic="t4", partition=0), C.INVALID_ARGUMENT, "record")
    add("empty-batch-keyed", "Produce", log_pb2.ProduceRequest(topic="t4"), C.INVALID_ARGUMENT, "record")
    add("negative-timestamp", "Produce", _produce(topic="t4", partition=0, records=[precord(b"x", timestamp_ms=-1)]), C.INVALID_ARGUMENT, "negative")
    add(
        "negative-timestamp-keyed", "Produce",
        _produce(topic="t4", records=[precord(b"x", key=b"k", timestamp_ms=5), precord(b"y", key=b"k", timestamp_ms=-7)]),
        C.INVALID_ARGUMENT, "negative",
    )
    add("acks=99", "Produce", _produce(topic="t4", partition=0, acks=99), C.INVALID_ARGUMENT, "acks")
    add("acks-none-bad-partition", "Produce", _produce(topic="t4", partition=4, acks=log_pb2.ACKS_NONE), C.NOT_FOUND, PARTITION_RANGE)
    add("acks=-1", "Produce", _produce(topic="t4", partition=0, acks=-1), C.INVALID_ARGUMENT, "acks")
    add("start_timestamp=-1", "Subscribe", log_pb2.SubscribeRequest(topic="t4", start_timestamp_ms=-1), C.INVALID_ARGUMENT, "negative")
    add("stop_timestamp=-5", "Subscribe", _subscribe(topic="t4", stop_timestamp_ms=-5), C.INVALID_ARGUMENT, "negative")
    add("stop_offset=-1", "Subscribe", _subscribe(topic="t4", stop_offset=-1), C.INVALID_ARGUMENT, "stop_offset")
    add("max_bytes=-1", "Subscribe", _subscribe(topic="t4", max_bytes=-1), C.INVALID_ARGUMENT, "max_bytes")
    add("no-start", "Subscribe", _subscribe(topic="t4", no_start=True), C.INVALID_ARGUMENT, "start")
    add("start_position=UNSPECIFIED", "Subscribe", log_pb2.SubscribeRequest(topic="t4", start_position=0), C.INVALID_ARGUMENT, "start_position")
    add("start_position=99", "Subscribe", log_pb2.SubscribeRequest(topic="t4", start_position=99), C.INVALID_ARGUMENT, "start_position")
    add("max_bytes=-1", "Fetch", log_pb2.FetchRequest(topic="t4", max_bytes=-1), C.INVALID_ARGUMENT, "max_bytes")
    add("max_wait_ms=-1", "Fetch", log_pb2.FetchRequest(topic="t4", max_wait_ms=-1), C.INVALID_ARGUMENT, "max_wait_ms")
    add("timestamp=-1", "ListOffsets", log_pb2.ListOffsetsRequest(topic="t4", timestamp_ms=-1), C.INVALID_ARGUMENT, "negative")
    add("no-spec", "ListOffsets", log_pb2.ListOffsetsRequest(topic="t4"), C.INVALID_ARGUMENT, "position")
    add("position=UNSPECIFIED", "ListOffsets", log_pb2.ListOffsetsRequest(topic="t4", position=0), C.INVALID_ARGUMENT, "position")
    add("position=99", "ListOffsets", log_pb2.ListOffsetsRequest(topic="t4", position=99), C.INVALID_ARGUMENT, "position")

    # Admin: partition counts and configuration ranges.
    for count in (0, -1, 10_001):
        add(f"count={count}", "CreateTopic", admin_pb2.CreateTopicRequest(topic="fresh", partition_count=count), C.INVALID_ARGUMENT, "partition")
        add(f"count={count}", "CreatePartitions", admin_pb2.CreatePartitionsRequest(topic="t4", partition_count=count), C.INVALID_ARGUMENT, "partition")
    add("decrease", "CreatePartitions", admin_pb2.CreatePartitionsRequest(topic="t4", partition_count=2), C.INVALID_ARGUMENT, "4 partitions")
    add("exists", "CreateTopic", admin_pb2.CreateTopicRequest(topic="t4", partition_count=4), C.ALREADY_EXISTS, "t4")
    add("exists-other-config", "CreateTopic", admin_pb2.CreateTopicRequest(topic="small", partition_count=7), C.ALREADY_EXISTS, "small")
    for config_id, config, hint in (
        ("durability=99", dict(durability=99), "durability"),
        ("segment_bytes=10", dict(segment_bytes=10), "segment_bytes"),
        ("retention_ms=0", dict(retention_ms=0), "retention_ms"),
        ("retention_bytes=-7", dict(retention_bytes=-7), "retention_bytes"),
        ("max_record_bytes=0", dict(max_record_bytes=0), "max_record_bytes"),
        ("record>batch", dict(max_record_bytes=8192, max_batch_bytes=4096), "max_batch_bytes"),
        ("max_batch_bytes=1GiB", dict(max_batch_bytes=1 << 30), "max_batch_bytes"),
        ("durability_interval_ms=0", dict(durability=2, durability_interval_ms=0), "durability_interval_ms"),
    ):
        add(
            config_id, "CreateTopic",
            admin_pb2.CreateTopicRequest(topic="fresh", partition_count=1, config=admin_pb2.TopicConfig(**config)),
            C.INVALID_ARGUMENT, hint,
        )
    add("page_size=-1", "ListTopics", admin_pb2.ListTopicsRequest(page_size=-1), C.INVALID_ARGUMENT, "page_size")
    add("bogus-page_token", "ListTopics", admin_pb2.ListTopicsRequest(page_token="not a token!"), C.INVALID_ARGUMENT, "page_token")
    return cases


@pytest.mark.parametrize("rpc, request_, codes, hints", _cases())
def test_bad_request_gets_documented_status(broker: Served, rpc, request_, codes, hints):
    """Each bad request gets the status its proto comment documents, with a message that says what was wrong."""
    outcome = invoke(broker, rpc, request_)
    assert outcome.code in codes, f"{rpc}: expected {[c.name for c in codes]}, got {outcome.code.name}: {outcome.message!r}"
    assert outcome.message.strip(), "the error carries no message"
    assert "internal error" not in outcome.message
    for hint in hints:
        alternatives = hint if isinstance(hint, tuple) else (hint,)
        assert any(a in outcome.message for a in alternatives), f"message {outcome.message!r} lacks any of {alternatives}"
    assert not any(fragment in outcome.message for fragment in ("Traceback", str(broker.running.broker.data_dir))), (
        f"message leaks internals: {outcome.message!r}"
    )


def test_bad_requests_appended_nothing(broker: Served):
    """After the rejected produce requests above (and a few mixed ones), no partition grew."""
    before = {
        t: [p.log_end_offset for p in broker.admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic=t), timeout=10).partitions]
        for t in ("t4", "small")
    }
    mixed = [
        # One record too large among good ones for two partitions: the whole request fails.
        (_produce(topic="small", records=[precord(b"a", key=b"a"), precord(b"b", key=b"b"), precord(b"v" * 2000, key=b"c")]), C.INVALID_ARGUMENT),
        # One record naming a missing partition among good ones.
        (_produce(topic="t4", records=[precord(b"a", partition=0), precord(b"b", partition=1), precord(b"c", partition=9)]), C.NOT_FOUND),
        # One negative timestamp among good ones for several partitions.
        (_produce(topic="t4", records=[precord(b"a", key=b"x"), precord(b"b", key=b"y", timestamp_ms=-3), precord(b"c", key=b"z")]), C.INVALID_ARGUMENT),
    ]
    for request, code in mixed:
        assert invoke(broker, "Produce", request).code == code
        assert invoke(broker, "ProduceStream", request).code == code
    after = {
        t: [p.log_end_offset for p in broker.admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic=t), timeout=10).partitions]
        for t in ("t4", "small")
    }
    assert after == before
    assert after["t4"] == [P0_RECORDS, 0, 0, 0] and after["small"] == [0, 0]


def test_subscribe_out_of_range_start_fails_before_any_response(broker: Served):
    """A Subscribe whose start_offset is out of range ends with OUT_OF_RANGE and never announces that start as resolved."""
    outcome = invoke(broker, "Subscribe", log_pb2.SubscribeRequest(topic="t4", partition=0, start_offset=P0_RECORDS + 5))
    assert outcome.code == C.OUT_OF_RANGE
    announced = [r.start_offset for r in outcome.responses_before_error if r.HasField("start_offset")]
    assert not announced, f"the stream announced start_offset={announced} before failing with OUT_OF_RANGE"


def test_produce_stream_keeps_going_after_a_bad_request(broker: Served):
    """A ProduceStream answers a bad request with an error Status and still answers later requests, in order, with their ids."""
    broker.admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="stream-bad", partition_count=2), timeout=10)
    good = lambda i: log_pb2.ProduceRequest(topic="stream-bad", partition=0, records=[precord(f"g{i}".encode())])  # noqa: E731
    plan = [
        (11, good(0), None),
        (12, log_pb2.ProduceRequest(topic="stream-bad", partition=5, records=[precord(b"x")]), C.NOT_FOUND),
        (13, good(1), None),
        (14, log_pb2.ProduceRequest(topic="stream-bad", partition=0), C.INVALID_ARGUMENT),
        (15, log_pb2.ProduceRequest(topic="stream-bad", partition=0, records=[precord(b"x", timestamp_ms=-1)]), C.INVALID_ARGUMENT),
        (16, None, C.INVALID_ARGUMENT),  # no `produce` at all
        (17, log_pb2.ProduceRequest(topic="../etc", partition=0, records=[precord(b"x")]), C.INVALID_ARGUMENT),
        (18, log_pb2.ProduceRequest(topic="stream-bad", partition=0, acks=7, records=[precord(b"x")]), C.INVALID_ARGUMENT),
        (19, good(2), None),
    ]
    requests = [
        log_pb2.ProduceStreamRequest(request_id=rid) if req is None else log_pb2.ProduceStreamRequest(request_id=rid, produce=req)
        for rid, req, _ in plan
    ]
    call = broker.log.ProduceStream(iter(requests), timeout=10)
    responses = list(call)
    assert call.code() == C.OK
    assert [r.request_id for r in responses] == [rid for rid, _, _ in plan]
    good_offsets = []
    for resp, (rid, _, code) in zip(responses, plan):
        if code is None:
            assert resp.WhichOneof("result") == "response", f"request {rid}: {resp.error.message}"
            good_offsets.append(resp.response.partitions[0].base_offset)
        else:
            assert resp.WhichOneof("result") == "error", f"request {rid} should have failed"
            assert _code(resp.error.code) == code and resp.error.message, f"request {rid}: {resp.error}"
    assert good_offsets == [0, 1, 2]
    assert values(fetch_range(broker.log, "stream-bad", 0)) == [b"g0", b"g1", b"g2"]


def _garbage_payloads(method: str) -> list[bytes]:
    """Bytes that are not a valid request message for ``method``."""
    string_field = b"\x12" if method.endswith(("/Produce", "/ListTopics")) else b"\x0a"
    bad_utf8 = string_field + b"\x02\xff\xfe"  # a string field holding invalid UTF-8
    if method.endswith("/ProduceStream"):
        bad_utf8 = b"\x12\x04" + b"\x12\x02\xff\xfe"
    return [
        b"\xff" * 11,  # a tag varint longer than 10 bytes
        b"\x0a\x7fabc",  # a length-delimited field cut short
        b"\x0b\x00",  # a start-group tag (wire type 3) with no end
        bad_utf8,
    ]


def _raw_call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError | None:
    try:
        if method.endswith("/Subscribe"):
            list(channel.unary_stream(method, request_serializer=None, response_deserializer=None)(payload, timeout=10))
        elif method.endswith("/ProduceStream"):
            list(channel.stream_stream(method, request_serializer=None, response_deserializer=None)(iter([payload]), timeout=10))
        else:
            channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc
    return None


@pytest.mark.parametrize("method", ALL_METHODS)
def test_garbage_bytes_get_invalid_argument(broker: Served, method: str):
    """Bytes that do not parse as the request message get INVALID_ARGUMENT naming the message type; random bytes never INTERNAL."""
    request_type = "logstore.v1." + method.rsplit("/", 1)[1] + "Request"
    for payload in _garbage_payloads(method):
        err = _raw_call(broker.channel, method, payload)
        assert err is not None, f"{method} accepted {payload!r}"
        assert err.code() == C.INVALID_ARGUMENT, f"{method} {payload!r}: {err.code().name} {err.details()!r}"
        assert request_type in (err.details() or ""), err.details()
    rng = random.Random(method)
    for _ in range(25):
        payload = rng.randbytes(rng.randint(1, 64))
        err = _raw_call(broker.channel, method, payload)
        if err is not None:
            assert err.code() not in (C.INTERNAL, C.UNKNOWN, C.UNAVAILABLE), f"{method} {payload!r}: {err.code().name} {err.details()!r}"


def test_server_still_serves_after_bad_input(broker: Served):
    """After bad input of every kind the broker still produces, fetches and reports SERVING."""
    for method in ALL_METHODS:  # one more round of abuse, so this test stands on its own
        _raw_call(broker.channel, method, b"\xff" * 11)
    invoke(broker, "Produce", _produce(topic="t4", partition=9))
    resp = broker.log.Produce(log_pb2.ProduceRequest(topic="t4", partition=3, records=[precord(b"still-alive")]), timeout=10)
    [result] = resp.partitions
    got = fetch_range(broker.log, "t4", 3, result.base_offset)
    assert values(got) == [b"still-alive"]
    health = health_pb2_grpc.HealthStub(broker.channel)
    for service in ("", "logstore.v1.Log", "logstore.v1.Admin"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    names = [t.name for t in broker.admin.ListTopics(admin_pb2.ListTopicsRequest(), timeout=10).topics]
    assert {"t4", "small"} <= set(names)
    assert not any(n in names for n in ("fresh", INTERNAL, UNKNOWN)), "a rejected CreateTopic left a topic behind"


def test_clients_cannot_write_internal_topics(server, log_stub):
    """A produce to a `__` topic is PERMISSION_DENIED, even when the topic exists."""
    from logstore.broker.config import TopicConfig

    server.broker.create_topic("__internal_test", 1, TopicConfig(), internal=True)
    request = log_pb2.ProduceRequest(
        topic="__internal_test", partition=0, records=[records_pb2.ProducerRecord(value=b"forged")]
    )
    with pytest.raises(grpc.RpcError) as info:
        log_stub.Produce(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "internal" in info.value.details()
    assert server.broker.partition("__internal_test", 0).log.log_end_offset == 0
