"""Health, reflection and the Admin service: pagination, descriptions, partition growth, deletion."""

from __future__ import annotations

import threading
import time

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from logstore._proto.logstore.v1 import admin_pb2, log_pb2
from logstore.broker.config import BrokerConfig
from logstore.broker.partitioner import partition_for_key

from server_helpers import expect_status, fetch_range, precord, rpc_error, values


def _reflect(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return response


def test_health_reports_serving(channel):
    """The gRPC health service says SERVING for the server ("") and both logstore services, NOT_FOUND for others."""
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "logstore.v1.Log", "logstore.v1.Admin"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    assert rpc_error(health.Check, health_pb2.HealthCheckRequest(service="no.such.Service")).code() == grpc.StatusCode.NOT_FOUND


def test_health_reports_not_serving_while_stopping(start_server):
    """Once stop() begins, the health service no longer reports SERVING (graceful shutdown)."""
    running = start_server()
    with grpc.insecure_channel(running.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="logstore.v1.Log"), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopper = threading.Thread(target=running.stop, args=(0.5,))
        stopper.start()
        try:
            statuses = []
            try:
                for update in watch:
                    statuses.append(update.status)
                    if update.status != health_pb2.HealthCheckResponse.SERVING:
                        break
            except grpc.RpcError:
                pass
        finally:
            stopper.join(10)
        assert statuses and statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, statuses


def test_reflection_lists_and_describes_the_services(channel):
    """Server reflection lists logstore.v1.Log and logstore.v1.Admin and serves their descriptors."""
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert {"logstore.v1.Log", "logstore.v1.Admin", "grpc.health.v1.Health"} <= names
    for service, methods in (
        ("logstore.v1.Log", {"InitProducer", "Produce", "ProduceStream", "Fetch", "Subscribe", "ListOffsets"}),
        ("logstore.v1.Admin", {"CreateTopic", "DeleteTopic", "ListTopics", "DescribeTopic", "CreatePartitions"}),
    ):
        response = _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in response.file_descriptor_response.file_descriptor_proto]
        found = {
            f"{f.package}.{s.name}": {m.name for m in s.method} for f in files for s in f.service
        }
        assert found.get(service) == methods


def test_list_topics_pages_in_name_order(server, admin_stub, create_topic):
    """ListTopics pages through every topic in name order with page_size/next_page_token; internal ones only on request."""
    names = [f"topic-{c}" for c in "gcaebfd"] + ["A-upper", "z.last", "m_mid"]
    for name in names:
        create_topic(name, 1 + len(name) % 3)
    server.broker.create_topic("__internal-offsets", 2, internal=True)  # only the broker can make internal topics

    def all_pages(page_size: int, include_internal: bool = False) -> list[list[admin_pb2.Topic]]:
        pages, token = [], ""
        while True:
            resp = admin_stub.ListTopics(
                admin_pb2.ListTopicsRequest(page_size=page_size, page_token=token, include_internal=include_internal), timeout=10
            )
            pages.append(list(resp.topics))
            token = resp.next_page_token
            if not token:
                return pages
            assert len(pages) < 50, "pagination does not end"

    pages = all_pages(3)
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    listed = [t.name for p in pages for t in p]
    assert listed == sorted(names)
    by_name = {t.name: t for p in pages for t in p}
    assert all(by_name[n].partition_count == 1 + len(n) % 3 for n in names)
    assert all(by_name[n].config.HasField("retention_ms") and by_name[n].config.max_record_bytes > 0 for n in names)
    # Default page size, and internal topics.
    [page] = all_pages(0)
    assert [t.name for t in page] == sorted(names)
    with_internal = [t.name for p in all_pages(4, include_internal=True) for t in p]
    assert with_internal == sorted(names + ["__consumer_offsets", "__group_policies", "__internal-offsets"])
    # A page size equal to the count: one full page and no token.
    [page] = all_pages(len(names))
    assert len(page) == len(names)
    # A topic deleted and one created between pages: the next page carries on after the token.
    first = admin_stub.ListTopics(admin_pb2.ListTopicsRequest(page_size=4), timeout=10)
    admin_stub.DeleteTopic(admin_pb2.DeleteTopicRequest(topic=first.topics[-1].name), timeout=10)
    create_topic("topic-bb")
    rest = admin_stub.ListTopics(admin_pb2.ListTopicsRequest(page_token=first.next_page_token), timeout=10)
    assert [t.name for t in rest.topics] == sorted(n for n in names + ["topic-bb"] if n > first.topics[-1].name)


def test_describe_topic_reports_offsets_sizes_and_segments(start_server, connect):
    """DescribeTopic reports config, log start/end offsets, sizes and segment counts as they change (incl. retention)."""
    admin, log = connect(start_server(config=BrokerConfig(scheduler_interval_ms=20)))
    admin.CreateTopic(
        admin_pb2.CreateTopicRequest(
            topic="described",
            partition_count=3,
            config=admin_pb2.TopicConfig(segment_bytes=2048, retention_ms=-1, durability=admin_pb2.DURABILITY_ALWAYS),
        ),
        timeout=10,
    )
    desc = admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic="described"), timeout=10)
    assert desc.topic.name == "described" and desc.topic.partition_count == 3
    assert desc.topic.config.segment_bytes == 2048 and desc.topic.config.retention_ms == -1
    assert desc.topic.config.durability == admin_pb2.DURABILITY_ALWAYS
    assert [(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes, p.segment_count) for p in desc.partitions] == [
        (0, 0, 0, 0, 1),
        (1, 0, 0, 0, 1),
        (2, 0, 0, 0, 1),
    ]
    for i in range(60):
        log.Produce(log_pb2.ProduceRequest(topic="described", partition=0, records=[precord(b"v" * 200)]), timeout=10)
    log.Produce(log_pb2.ProduceRequest(topic="described", partition=2, records=[precord(b"w")] * 7), timeout=10)
    desc = admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic="described"), timeout=10)
    p0, p1, p2 = desc.partitions
    assert (p0.log_start_offset, p0.log_end_offset) == (0, 60)
    assert p0.segment_count >= 5, "60 batches of ~250 bytes in 2 KiB segments must roll several times"
    assert 60 * 200 < p0.size_bytes < 60 * 400
    assert (p1.log_end_offset, p1.size_bytes, p1.segment_count) == (0, 0, 1)
    assert (p2.log_start_offset, p2.log_end_offset, p2.segment_count) == (0, 7, 1) and p2.size_bytes > 7

    # Size-based retention moves the log start; Describe, ListOffsets and Fetch agree on it.
    admin.CreateTopic(
        admin_pb2.CreateTopicRequest(
            topic="retained", partition_count=1, config=admin_pb2.TopicConfig(segment_bytes=2048, retention_bytes=4096)
        ),
        timeout=10,
    )
    for i in range(80):
        log.Produce(log_pb2.ProduceRequest(topic="retained", partition=0, records=[precord(f"{i:04d}".encode() * 50)]), timeout=10)
    deadline = time.monotonic() + 10
    while True:
        [p] = admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic="retained"), timeout=10).partitions
        settled = p.log_start_offset > 0 and p.size_bytes <= 4096 + 2048 + 512
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert 0 < p.log_start_offset < p.log_end_offset == 80
    assert p.size_bytes <= 4096 + 2048 + 512
    [lo] = log.ListOffsets(log_pb2.ListOffsetsRequest(topic="retained", position=log_pb2.LOG_POSITION_EARLIEST), timeout=10).partitions
    assert lo.offset == p.log_start_offset
    message = expect_status(grpc.StatusCode.OUT_OF_RANGE, log.Fetch, log_pb2.FetchRequest(topic="retained", partition=0, offset=0))
    assert str(lo.log_start_offset) in message and "80" in message
    kept = fetch_range(log, "retained", 0, lo.offset)
    assert [v[:4] for v in values(kept)] == [f"{i:04d}".encode() for i in range(lo.offset, 80)]


def test_create_partitions_grows_is_idempotent_and_reroutes_keys(log_stub, admin_stub, create_topic):
    """CreatePartitions raises the count, repeats harmlessly at the same count, keeps old records, and keyed routing uses the new count."""
    create_topic("growing", 2)
    keys = [f"user-{i}".encode() for i in range(40)]
    moved = [k for k in keys if partition_for_key(k, 2) != partition_for_key(k, 5)]
    assert moved, "test keys must include some whose partition changes"
    before = log_stub.Produce(log_pb2.ProduceRequest(topic="growing", records=[precord(b"old:" + k, key=k) for k in keys]), timeout=10)
    assert list(before.record_partitions) == [partition_for_key(k, 2) for k in keys]

    resp = admin_stub.CreatePartitions(admin_pb2.CreatePartitionsRequest(topic="growing", partition_count=5), timeout=10)
    assert resp.topic.name == "growing" and resp.topic.partition_count == 5
    again = admin_stub.CreatePartitions(admin_pb2.CreatePartitionsRequest(topic="growing", partition_count=5), timeout=10)
    assert again.topic == resp.topic
    desc = admin_stub.DescribeTopic(admin_pb2.DescribeTopicRequest(topic="growing"), timeout=10)
    assert desc.topic.partition_count == 5 and [p.partition for p in desc.partitions] == [0, 1, 2, 3, 4]
    assert [p.log_end_offset for p in desc.partitions][2:] == [0, 0, 0]
    lo = log_stub.ListOffsets(log_pb2.ListOffsetsRequest(topic="growing", position=log_pb2.LOG_POSITION_LATEST), timeout=10)
    assert [p.partition for p in lo.partitions] == [0, 1, 2, 3, 4]

    after = log_stub.Produce(log_pb2.ProduceRequest(topic="growing", records=[precord(b"new:" + k, key=k) for k in keys]), timeout=10)
    assert list(after.record_partitions) == [partition_for_key(k, 5) for k in keys]
    found: dict[bytes, dict[bytes, int]] = {b"old": {}, b"new": {}}
    for p in range(5):
        for _, rec in fetch_range(log_stub, "growing", p):
            era, key = rec.value.split(b":", 1)
            found[era][key] = p
    assert found[b"old"] == {k: partition_for_key(k, 2) for k in keys}, "old records moved"
    assert found[b"new"] == {k: partition_for_key(k, 5) for k in keys}
    # New partitions are usable directly too.
    log_stub.Produce(log_pb2.ProduceRequest(topic="growing", partition=4, records=[precord(b"direct")]), timeout=10)
    assert values(fetch_range(log_stub, "growing", 4))[-1] == b"direct"


def test_delete_topic_ends_subscribers_and_waiting_fetches_with_not_found(log_stub, admin_stub, create_topic):
    """Deleting a topic ends its Subscribe streams and waiting Fetch calls promptly with NOT_FOUND; a re-created topic starts empty."""
    create_topic("doomed", 2)
    log_stub.Produce(log_pb2.ProduceRequest(topic="doomed", partition=0, records=[precord(b"x")] * 3), timeout=10)
    sub = log_stub.Subscribe(
        log_pb2.SubscribeRequest(topic="doomed", partition=0, start_position=log_pb2.LOG_POSITION_EARLIEST), timeout=20
    )
    first = next(sub)
    assert first.start_offset == 0
    outcomes: dict[str, tuple[grpc.StatusCode, float]] = {}

    def drain_subscription() -> None:
        try:
            for _ in sub:
                pass
            outcomes["subscribe"] = (grpc.StatusCode.OK, time.monotonic())
        except grpc.RpcError as exc:
            outcomes["subscribe"] = (exc.code(), time.monotonic())

    def waiting_fetch() -> None:
        try:
            log_stub.Fetch(log_pb2.FetchRequest(topic="doomed", partition=1, offset=0, max_wait_ms=3_000), timeout=20)
            outcomes["fetch"] = (grpc.StatusCode.OK, time.monotonic())
        except grpc.RpcError as exc:
            outcomes["fetch"] = (exc.code(), time.monotonic())

    threads = [threading.Thread(target=drain_subscription), threading.Thread(target=waiting_fetch)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # let the Fetch reach its long-poll wait
    deleted_at = time.monotonic()
    admin_stub.DeleteTopic(admin_pb2.DeleteTopicRequest(topic="doomed"), timeout=10)
    for t in threads:
        t.join(15)
    assert outcomes["subscribe"][0] == grpc.StatusCode.NOT_FOUND
    assert outcomes["subscribe"][1] - deleted_at < 2.0
    code, ended = outcomes["fetch"]
    assert code == grpc.StatusCode.NOT_FOUND and ended - deleted_at < 2.0, (
        f"a Fetch waiting on the deleted topic ended with {code.name} {ended - deleted_at:.1f}s after the delete"
    )
    expect_status(grpc.StatusCode.NOT_FOUND, admin_stub.DescribeTopic, admin_pb2.DescribeTopicRequest(topic="doomed"))
    create_topic("doomed", 1)
    resp = log_stub.Produce(log_pb2.ProduceRequest(topic="doomed", partition=0, records=[precord(b"fresh")]), timeout=10)
    assert resp.partitions[0].base_offset == 0
    assert values(fetch_range(log_stub, "doomed", 0)) == [b"fresh"]

