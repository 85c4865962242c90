"""Tokens and permissions on a real broker over real gRPC on loopback: who gets
UNAUTHENTICATED, who gets PERMISSION_DENIED, and that permitted principals work
through the Python client, for produce, consume (the Groups.Consume join) and
admin; internal topics stay unwritable; a group's retry and dead-letter topics
follow the group's permissions."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, groups_pb2, groups_pb2_grpc, log_pb2, log_pb2_grpc
from logstore.client import Admin, Consumer, Producer, Reader, RetryPolicy
from logstore.errors import PermissionDenied, Unauthenticated
from logstore.server.app import RunningServer
from security_helpers import Tokens, make_tokens, security_config, security_toml
from server_helpers import expect_status, precord

GRANTS = {
    "producer": 'topics = { "orders" = ["produce"] }',
    "consumer": 'topics = { "orders" = ["consume"] }\ngroups = { "email" = ["consume"] }',
    "billing": 'topics = { "orders" = ["consume"] }\ngroups = { "billing" = ["consume"] }',
    "ops": 'topics = { "*" = ["produce", "consume", "admin"] }\ngroups = { "*" = ["consume", "admin"] }',
    "nobody": "",
}
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def tokens() -> Tokens:
    return make_tokens(*GRANTS)


@pytest.fixture
def secured(start_server: Callable[..., RunningServer], tmp_path: Path, tokens: Tokens) -> RunningServer:
    """A broker that requires tokens, with topics orders (2 partitions) and secret made by ops."""
    running = start_server(security=security_config(tmp_path / "security.toml", security_toml(tokens, GRANTS)))
    with Admin(running.address, token=tokens["ops"]) as admin:
        admin.create_topic("orders", 2)
        admin.create_topic("secret", 1)
    return running


@pytest.fixture
def stubs(secured: RunningServer) -> Iterator[tuple[log_pb2_grpc.LogStub, admin_pb2_grpc.AdminStub, groups_pb2_grpc.GroupsStub]]:
    with grpc.insecure_channel(secured.address) as channel:
        yield log_pb2_grpc.LogStub(channel), admin_pb2_grpc.AdminStub(channel), groups_pb2_grpc.GroupsStub(channel)


def produce_request(topic: str = "orders", *values: bytes) -> log_pb2.ProduceRequest:
    return log_pb2.ProduceRequest(topic=topic, partition=0, records=[precord(v) for v in values or (b"x",)])


def join(group: str, *topics: str, metadata: list | None = None, stub: groups_pb2_grpc.GroupsStub) -> grpc.RpcError | groups_pb2.ConsumeResponse:
    """Open a Consume stream with a join; the first response, or the error that ended the stream."""
    done = threading.Event()

    def requests() -> Iterator[groups_pb2.ConsumeRequest]:
        yield groups_pb2.ConsumeRequest(join=groups_pb2.Join(group=group, topics=list(topics)))
        done.wait(10)

    call = stub.Consume(requests(), metadata=metadata, timeout=10)
    try:
        return next(call)
    except grpc.RpcError as exc:
        return exc
    finally:
        done.set()
        call.cancel()


# -- authentication ------------------------------------------------------------------------


def test_calls_without_a_valid_token_are_unauthenticated(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """No token, a token of another scheme, or an unknown token: UNAUTHENTICATED on every service, even a join."""
    log, admin, groups = stubs
    message = expect_status(UNAUTHENTICATED, log.Produce, produce_request())
    assert "requires a token" in message and "authorization: Bearer" in message
    assert "not valid" in expect_status(UNAUTHENTICATED, log.Produce, produce_request(), metadata=md("lst_guess"))
    assert "Bearer" in expect_status(
        UNAUTHENTICATED, admin.ListTopics, admin_pb2.ListTopicsRequest(), metadata=[("authorization", tokens["ops"])]
    )
    expect_status(UNAUTHENTICATED, log.Subscribe, log_pb2.SubscribeRequest(topic="orders", start_offset=0))
    refused = join("email", "orders", stub=groups)
    assert isinstance(refused, grpc.RpcError) and refused.code() == UNAUTHENTICATED
    with Admin(secured.address) as anonymous, pytest.raises(Unauthenticated):
        anonymous.list_topics()


def test_health_is_open_and_reflection_needs_a_token(secured: RunningServer, tokens: Tokens) -> None:
    """Health checks answer without a token (load balancers); reflection needs a valid one, no permission."""
    with grpc.insecure_channel(secured.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        expect_status(UNAUTHENTICATED, lambda **kw: list(refl.ServerReflectionInfo(iter([ask]), **kw)))
        answer = list(refl.ServerReflectionInfo(iter([ask]), metadata=md(tokens["nobody"]), timeout=10))
        names = {s.name for s in answer[0].list_services_response.service}
        assert "logstore.v1.Log" in names


# -- produce ---------------------------------------------------------------------------------


def test_produce_needs_produce_on_the_topic(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """The producer appends to orders with the Python client; others get PERMISSION_DENIED naming who, what and where."""
    log, _, _ = stubs
    with Producer(secured.address, token=tokens["producer"], acks="durable") as producer:
        assert producer.send("orders", b"hello", partition=1).result(timeout=10).offset == 0
    message = expect_status(DENIED, log.Produce, produce_request(), metadata=md(tokens["consumer"]))
    assert "'consumer'" in message and "produce on topic 'orders'" in message
    assert "'secret'" in expect_status(DENIED, log.Produce, produce_request("secret"), metadata=md(tokens["producer"]))
    with Producer(secured.address, token=tokens["nobody"], idempotent=False) as producer:
        with pytest.raises(PermissionDenied, match="'nobody'"):
            producer.send("orders", b"no").result(timeout=10)


def test_produce_stream_answers_a_forbidden_message_with_its_error_and_goes_on(stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """On ProduceStream each message is checked: a forbidden one is answered PERMISSION_DENIED in its place, the rest are appended."""
    log, _, _ = stubs
    requests = [
        log_pb2.ProduceStreamRequest(request_id=1, produce=produce_request("orders", b"a")),
        log_pb2.ProduceStreamRequest(request_id=2, produce=produce_request("secret", b"b")),
        log_pb2.ProduceStreamRequest(request_id=3, produce=produce_request("orders", b"c")),
    ]
    answers = list(log.ProduceStream(iter(requests), metadata=md(tokens["producer"]), timeout=10))
    assert [a.request_id for a in answers] == [1, 2, 3]
    assert [a.WhichOneof("result") for a in answers] == ["response", "error", "response"]
    assert answers[1].error.code == DENIED.value[0] and "topic 'secret'" in answers[1].error.message
    assert answers[2].response.partitions[0].base_offset == answers[0].response.partitions[0].base_offset + 1


def test_init_producer_needs_produce_somewhere(stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """InitProducer works for a principal that may produce to some topic, not for a pure consumer."""
    log, _, _ = stubs
    assert log.InitProducer(log_pb2.InitProducerRequest(), metadata=md(tokens["producer"]), timeout=10).producer_id >= 0
    assert "at least one topic" in expect_status(DENIED, log.InitProducer, log_pb2.InitProducerRequest(),
                                                  metadata=md(tokens["consumer"]))


# -- consume ---------------------------------------------------------------------------------


def test_consume_join_needs_consume_on_group_and_topics(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """The consumer joins group email on orders and gets records; joins on other groups or topics are refused."""
    _, _, groups = stubs
    with Producer(secured.address, token=tokens["ops"]) as producer:
        producer.send("orders", b"v1", partition=0).result(timeout=10)
    with Consumer(secured.address, "email", ["orders"], start="earliest", token=tokens["consumer"]) as consumer:
        message = consumer.poll(10)
        assert message is not None and message.value == b"v1"
        message.ack()
    for group, topics, who, what in (
        ("billing", ["orders"], "consumer", "group 'billing'"),
        ("email", ["orders", "secret"], "consumer", "topic 'secret'"),
        ("email", ["orders"], "producer", "group 'email'"),
    ):
        refused = join(group, *topics, metadata=md(tokens[who]), stub=groups)
        assert isinstance(refused, grpc.RpcError), (group, topics, who)
        assert refused.code() == DENIED and what in refused.details() and f"'{who}'" in refused.details()
    with pytest.raises(PermissionDenied):
        Consumer(secured.address, "billing", ["orders"], token=tokens["consumer"], timeout=10)


def test_reading_needs_consume_on_the_topic(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """Fetch and Subscribe need consume; the Reader works for the consumer and is refused to the producer."""
    log, _, _ = stubs
    with Producer(secured.address, token=tokens["producer"]) as producer:
        producer.send("orders", b"r", partition=0).result(timeout=10)
    with Reader(secured.address, "orders", partitions=0, follow=False, token=tokens["consumer"]) as reader:
        assert [m.value for m in reader] == [b"r"]
    expect_status(DENIED, log.Fetch, log_pb2.FetchRequest(topic="orders"), metadata=md(tokens["producer"]))
    expect_status(DENIED, log.Subscribe, log_pb2.SubscribeRequest(topic="orders", start_offset=0),
                  metadata=md(tokens["producer"]))


def test_group_rpcs_follow_group_permissions(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """Committing and describing need consume on the group; seeking and deleting need admin on it."""
    _, _, groups = stubs
    commit = groups_pb2.CommitOffsetsRequest(group="email", offsets=[groups_pb2.OffsetCommit(topic="orders", partition=0, offset=0)])
    groups.CommitOffsets(commit, metadata=md(tokens["consumer"]), timeout=10)
    assert "group 'email'" in expect_status(DENIED, groups.CommitOffsets, commit, metadata=md(tokens["billing"]))
    describe = groups_pb2.DescribeGroupRequest(group="email")
    assert groups.DescribeGroup(describe, metadata=md(tokens["consumer"]), timeout=10).group == "email"
    seek = groups_pb2.SeekGroupRequest(group="email", topic="orders",
                                       target=groups_pb2.SeekTarget(offset_position=groups_pb2.OFFSET_POSITION_EARLIEST))
    assert "admin on group 'email'" in expect_status(DENIED, groups.SeekGroup, seek, metadata=md(tokens["consumer"]))
    groups.SeekGroup(seek, metadata=md(tokens["ops"]), timeout=10)
    expect_status(DENIED, groups.DeleteGroup, groups_pb2.DeleteGroupRequest(group="email"), metadata=md(tokens["consumer"]))
    listed = groups.ListGroups(groups_pb2.ListGroupsRequest(), metadata=md(tokens["billing"]), timeout=10)
    assert [g.name for g in listed.groups] == []  # billing may not see group email
    listed = groups.ListGroups(groups_pb2.ListGroupsRequest(), metadata=md(tokens["consumer"]), timeout=10)
    assert [g.name for g in listed.groups] == ["email"]


# -- admin -----------------------------------------------------------------------------------


def test_admin_needs_admin_on_the_topic(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """Only ops creates and deletes topics; describe needs any permission; ListTopics shows only what one may see."""
    _, admin, _ = stubs
    with Admin(secured.address, token=tokens["ops"]) as ops:
        ops.create_topic("made-by-ops", 1)
        ops.delete_topic("made-by-ops")
    create = admin_pb2.CreateTopicRequest(topic="mine", partition_count=1)
    assert "admin on topic 'mine'" in expect_status(DENIED, admin.CreateTopic, create, metadata=md(tokens["producer"]))
    expect_status(DENIED, admin.DeleteTopic, admin_pb2.DeleteTopicRequest(topic="orders"), metadata=md(tokens["producer"]))
    expect_status(DENIED, admin.CreatePartitions, admin_pb2.CreatePartitionsRequest(topic="orders", partition_count=4),
                  metadata=md(tokens["consumer"]))
    with Admin(secured.address, token=tokens["producer"]) as producer_admin:
        assert producer_admin.describe_topic("orders").partition_count == 2
        assert [t.name for t in producer_admin.list_topics()] == ["orders"]
        with pytest.raises(PermissionDenied):
            producer_admin.describe_topic("secret")
    with Admin(secured.address, token=tokens["ops"]) as ops:
        assert [t.name for t in ops.list_topics()] == ["orders", "secret"]
    with Admin(secured.address, token=tokens["nobody"]) as nobody:
        assert nobody.list_topics() == []


def test_internal_topics_are_unwritable_even_for_ops(stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """Produce, ProduceAndCommit, create, delete and add-partitions on __ topics are refused to a principal with '*'."""
    log, admin, groups = stubs
    ops = md(tokens["ops"])
    internal = "__consumer_offsets"
    for call, request in (
        (log.Produce, produce_request(internal)),
        (groups.ProduceAndCommit, groups_pb2.ProduceAndCommitRequest(group="g", produce=produce_request(internal))),
        (admin.CreateTopic, admin_pb2.CreateTopicRequest(topic="__mine", partition_count=1)),
        (admin.DeleteTopic, admin_pb2.DeleteTopicRequest(topic=internal)),
        (admin.CreatePartitions, admin_pb2.CreatePartitionsRequest(topic=internal, partition_count=100)),
    ):
        assert "internal" in expect_status(DENIED, call, request, metadata=ops)
    described = admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic=internal), metadata=ops, timeout=10)
    assert described.topic.name == internal


def test_internal_topics_are_unwritable_without_authentication(start_server: Callable[..., RunningServer]) -> None:
    """With no tokens at all, no RPC writes or reshapes a __ topic either (the broker refuses each)."""
    running = start_server()
    with grpc.insecure_channel(running.address) as channel:
        log, admin = log_pb2_grpc.LogStub(channel), admin_pb2_grpc.AdminStub(channel)
        groups = groups_pb2_grpc.GroupsStub(channel)
        internal = "__consumer_offsets"
        expect_status(DENIED, log.Produce, produce_request(internal))
        expect_status(DENIED, groups.ProduceAndCommit,
                      groups_pb2.ProduceAndCommitRequest(group="g", produce=produce_request(internal)))
        stream = log.ProduceStream(iter([log_pb2.ProduceStreamRequest(request_id=1, produce=produce_request(internal))]),
                                   timeout=10)
        assert [r.error.code for r in stream] == [DENIED.value[0]]
        for call, request in (
            (admin.CreateTopic, admin_pb2.CreateTopicRequest(topic="__mine", partition_count=1)),
            (admin.DeleteTopic, admin_pb2.DeleteTopicRequest(topic=internal)),
            (admin.CreatePartitions, admin_pb2.CreatePartitionsRequest(topic=internal, partition_count=100)),
        ):
            err = expect_status(grpc.StatusCode.INVALID_ARGUMENT, call, request)
            assert "reserved" in err or "internal" in err
        assert admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic=internal), timeout=10).topic.partition_count >= 1


# -- a group's retry and dead-letter topics ----------------------------------------------


def test_dead_letter_and_retry_topics_follow_the_group(secured: RunningServer, stubs, tokens: Tokens) -> None:  # noqa: ANN001
    """Group email's tiers and DLQ are readable by email's consumer, not by billing's, and writable by neither."""
    log, _, groups = stubs
    with Admin(secured.address, token=tokens["ops"]) as ops:
        ops.set_retry_policy("email", "orders", RetryPolicy(max_attempts=2, delays_ms=(1000,)))
        assert {"orders.email.dlq", "orders.email.retry.1000ms"} <= {t.name for t in ops.list_topics()}
    dlq, tier = "orders.email.dlq", "orders.email.retry.1000ms"
    fetch = log_pb2.FetchRequest(topic=dlq, partition=0, offset=0)
    assert list(log.Fetch(fetch, metadata=md(tokens["consumer"]), timeout=10).batches) == []
    message = expect_status(DENIED, log.Fetch, fetch, metadata=md(tokens["billing"]))
    assert "'billing'" in message and "group 'email'" in message
    expect_status(DENIED, log.Produce, produce_request(tier), metadata=md(tokens["consumer"]))
    expect_status(DENIED, log.Produce, produce_request(dlq), metadata=md(tokens["producer"]))  # produce on orders is not enough
    log.Produce(produce_request(dlq), metadata=md(tokens["ops"]), timeout=10)  # admin on the group + produce on orders
    listing = groups_pb2.ListDeadLettersRequest(group="email", topic="orders")
    assert len(groups.ListDeadLetters(listing, metadata=md(tokens["consumer"]), timeout=10).dead_letters) == 1
    expect_status(DENIED, groups.ListDeadLetters, groups_pb2.ListDeadLettersRequest(group="email", topic="orders"),
                  metadata=md(tokens["billing"]))
    purge = groups_pb2.PurgeDeadLettersRequest(group="email", topic="orders")
    assert "admin on group 'email'" in expect_status(DENIED, groups.PurgeDeadLetters, purge, metadata=md(tokens["consumer"]))
    redrive = groups_pb2.RedriveDeadLettersRequest(group="email", topic="orders")
    expect_status(DENIED, groups.RedriveDeadLetters, redrive, metadata=md(tokens["consumer"]))
    policy = groups_pb2.SetRetryPolicyRequest(group="email", topic="orders")
    expect_status(DENIED, groups.SetRetryPolicy, policy, metadata=md(tokens["consumer"]))
    with Admin(secured.address, token=tokens["consumer"]) as consumer_admin:
        visible = {t.name for t in consumer_admin.list_topics()}
    with Admin(secured.address, token=tokens["billing"]) as billing_admin:
        hidden = {t.name for t in billing_admin.list_topics()}
    assert {dlq, tier, "orders"} <= visible and "secret" not in visible
    assert hidden == {"orders"}
