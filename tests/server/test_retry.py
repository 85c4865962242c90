"""Retry tiers, dead letters, redrive and purge over real gRPC with plain stubs (issue 5, first part)."""

from __future__ import annotations

import time
from collections import defaultdict

import grpc
import pytest

from logstore._proto.logstore.v1 import groups_pb2 as g
from logstore._proto.logstore.v1 import groups_pb2_grpc
from logstore.client import Admin, Producer
from logstore.server.app import RunningServer
from group_helpers import Got, RawMember, wait_all
from server_helpers import expect_status


def produce(address: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    with Producer(address) as producer:
        for key, value in items:
            producer.send(topic, key=key, value=value)
        producer.flush()


def headers_of(member: RawMember, delivery_id: int) -> dict[str, str]:
    for resp in member.responses:
        for d in resp.deliveries:
            if d.first_delivery_id <= delivery_id < d.first_delivery_id + len(d.records):
                rec = d.records[delivery_id - d.first_delivery_id]
                return {h.name: h.value.decode() for h in rec.headers}
    raise AssertionError(f"delivery {delivery_id} not found")


@pytest.fixture
def stub(channel: grpc.Channel) -> groups_pb2_grpc.GroupsStub:
    return groups_pb2_grpc.GroupsStub(channel)


def test_nacked_record_walks_the_tiers_on_time_then_lands_in_the_dlq(server: RunningServer, channel, stub) -> None:
    """A record nacked every time is delivered max_attempts times, each retry on time, then dead-lettered
    with every provenance field."""
    Admin(server.address).create_topic("orders", 2)
    policy = g.RetryPolicy(max_attempts=3, delays_ms=[300, 600])
    resp = stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=policy))
    assert list(resp.retry_topics) == ["orders.mail.retry.300ms", "orders.mail.retry.600ms"]
    assert resp.dead_letter_topic == "orders.mail.dlq"
    seen: list[tuple[int, float, Got]] = []

    def fail_all(member: RawMember, batch: list[Got]) -> None:
        for x in batch:
            seen.append((x.attempt, time.monotonic(), x))
            member.nack(x.delivery_id, reason=f"smtp down {x.attempt}")

    m = RawMember(channel, "mail", ["orders"], on_delivery=fail_all)
    m.wait_for(lambda m: bool(m.responses))
    produce(server.address, "orders", [(b"lead-1", b"hello")])
    wait_all([m], lambda: len(seen) >= 3, what="three deliveries")
    time.sleep(0.8)
    assert [a for a, _t, _x in seen] == [1, 2, 3], "delivered exactly max_attempts times"
    gaps = [seen[i + 1][1] - seen[i][1] for i in range(2)]
    for gap, wanted in zip(gaps, (0.3, 0.6)):
        assert wanted <= gap + 0.03 and gap <= wanted * 1.1 + 0.2, f"retry after {gap:.3f}s, policy says {wanted}s"
    assert [x.topic for _a, _t, x in seen] == ["orders", "orders.mail.retry.300ms", "orders.mail.retry.600ms"]
    hdrs = headers_of(m, seen[2][2].delivery_id)
    assert hdrs["logstore.origin.topic"] == "orders" and hdrs["logstore.attempt"] == "2"
    assert hdrs["logstore.error"] == "smtp down 2"
    letters = stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters
    assert len(letters) == 1
    d = letters[0]
    assert (d.origin_topic, d.origin_offset, d.attempts, d.error) == ("orders", 0, 3, "smtp down 3")
    assert d.first_failure_ms > 0 and d.dead_lettered_ms >= d.first_failure_ms
    assert d.record.key == b"lead-1" and d.record.value == b"hello"
    m.leave()


def test_terminal_nack_goes_straight_to_the_dlq_and_redrive_delivers_it_again(server: RunningServer, channel, stub) -> None:
    """Nack(terminal) dead-letters at once; a redrive puts every dead letter back with attempt 1 and
    empties the DLQ; purge drops the rest."""
    Admin(server.address).create_topic("orders", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=g.RetryPolicy(
        max_attempts=5, delays_ms=[100])))
    fixed = {"on": False}
    got: list[Got] = []

    def handle(member: RawMember, batch: list[Got]) -> None:
        for x in batch:
            got.append(x)
            if fixed["on"]:
                member.ack(x.delivery_id)
            else:
                member.send(g.ConsumeRequest(nack=g.Nack(ids=g.DeliveryIds(ids=[x.delivery_id]), terminal=True,
                                                         reason="bad address")))

    m = RawMember(channel, "mail", ["orders"], on_delivery=handle)
    m.wait_for(lambda m: bool(m.responses))
    produce(server.address, "orders", [(b"k%d" % i, b"v%d" % i) for i in range(20)])
    wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 20,
             what="20 dead letters")
    assert len(got) == 20 and {x.attempt for x in got} == {1}
    # Page through them.
    page = stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders", page_size=7))
    assert len(page.dead_letters) == 7 and page.next_page_token
    nxt = stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders", page_size=100,
                                                         page_token=page.next_page_token))
    assert [d.offset for d in nxt.dead_letters] == list(range(7, 20))
    only = stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders", key=b"k3")).dead_letters
    assert [d.record.value for d in only] == [b"v3"]
    fixed["on"] = True
    progress = list(stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group="mail", topic="orders",
                                                                         records_per_second=1000)))
    assert progress[-1].redriven == progress[-1].total == 20
    wait_all([m], lambda: len(got) >= 40, what="redriven deliveries")
    again = got[20:]
    assert sorted(x.value for x in again) == sorted(b"v%d" % i for i in range(20))
    assert {x.attempt for x in again} == {1} and {x.topic for x in again} == {"orders.mail.redrive"}
    assert stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters == []
    # Purge.
    fixed["on"] = False
    produce(server.address, "orders", [(b"x", b"y")])
    wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 1,
             what="one more dead letter")
    assert stub.PurgeDeadLetters(g.PurgeDeadLettersRequest(group="mail", topic="orders")).purged == 1
    assert stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters == []
    m.leave()


def test_key_ordered_holds_a_failing_key_and_lets_others_flow(server: RunningServer, channel, stub) -> None:
    """KEY_ORDERED with retries: later records of a key in retry wait for it; other keys keep flowing."""
    Admin(server.address).create_topic("orders", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=g.RetryPolicy(
        max_attempts=3, delays_ms=[400])))
    done: dict[bytes, list[int]] = defaultdict(list)
    done_at: dict[bytes, list[float]] = defaultdict(list)
    failed_once: set[int] = set()

    def handle(member: RawMember, batch: list[Got]) -> None:
        for x in batch:
            n = int(x.value)
            if x.key == b"bad" and n == 0 and n not in failed_once:
                failed_once.add(n)
                member.nack(x.delivery_id, reason="flaky")
            else:
                done[x.key].append(n)
                done_at[x.key].append(time.monotonic())
                member.ack(x.delivery_id)

    m = RawMember(channel, "mail", ["orders"], on_delivery=handle, delivery_mode=g.DELIVERY_MODE_KEY_ORDERED)
    m.wait_for(lambda m: bool(m.responses))
    t0 = time.monotonic()
    items = [(b"bad", b"0"), (b"bad", b"1"), (b"bad", b"2")] + [(b"good%d" % i, b"%d" % (10 + i)) for i in range(50)]
    produce(server.address, "orders", items)
    wait_all([m], lambda: sum(map(len, done.values())) == 53, what="all processed")
    assert done[b"bad"] == [0, 1, 2], "the failing key kept its order"
    good_last = max(t for k, ts in done_at.items() if k != b"bad" for t in ts)
    assert good_last - t0 < 0.4, "other keys did not wait for the failing key's retry"
    assert min(done_at[b"bad"]) - t0 >= 0.35, "the failing key's first success came after its retry delay"
    m.leave()


def test_bad_policies_and_unknown_dead_letter_queues_get_clear_statuses(server: RunningServer, channel, stub) -> None:
    """Invalid policies, DLQ calls for a group without a policy, and terminal nacks without one are refused clearly."""
    Admin(server.address).create_topic("orders", 1)
    bad = [
        (g.RetryPolicy(max_attempts=0), "max_attempts"),
        (g.RetryPolicy(max_attempts=3, delays_ms=[-5]), "delays_ms"),
        (g.RetryPolicy(max_attempts=60, initial_delay_ms=1, multiplier=1.5, max_delay_ms=600_000_000), "tiers"),
        (g.RetryPolicy(max_attempts=3, jitter=0.9), "jitter"),
    ]
    for policy, needle in bad:
        details = expect_status(grpc.StatusCode.INVALID_ARGUMENT, stub.SetRetryPolicy,
                                g.SetRetryPolicyRequest(group="mail", topic="orders", policy=policy))
        assert needle in details, details
    expect_status(grpc.StatusCode.NOT_FOUND, stub.SetRetryPolicy, g.SetRetryPolicyRequest(
        group="mail", topic="nope", policy=g.RetryPolicy(max_attempts=2)))
    expect_status(grpc.StatusCode.NOT_FOUND, stub.ListDeadLetters, g.ListDeadLettersRequest(group="nobody", topic="orders"))
    expect_status(grpc.StatusCode.NOT_FOUND, stub.RedriveDeadLetters, g.RedriveDeadLettersRequest(group="nobody", topic="orders"))
    expect_status(grpc.StatusCode.NOT_FOUND, stub.PurgeDeadLetters, g.PurgeDeadLettersRequest(group="nobody", topic="orders"))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, stub.ListDeadLetters, g.ListDeadLettersRequest(
        group="nobody", topic="orders", page_token="garbage"))
    # A terminal nack without a policy: reported, and the record comes back.
    m = RawMember(channel, "plain", ["orders"])
    produce(server.address, "orders", [(b"k", b"v")])
    m.wait_for(lambda m: len(m.received) >= 1)
    m.send(g.ConsumeRequest(nack=g.Nack(ids=g.DeliveryIds(ids=[m.received[0].delivery_id]), terminal=True)))
    m.wait_for(lambda m: len(m.received) >= 2 and bool(m.errors), what="redelivery and an error")
    assert "retry policy" in m.errors[0][1] and m.received[1].attempt == 2
    # A nack of an id that is no longer current is reported stale, and nothing happens.
    first_id = m.received[0].delivery_id
    m.nack(first_id)
    m.wait_for(lambda m: any(a <= first_id < b for a, b in m.stale), what="stale report")
    time.sleep(0.2)
    assert len(m.received) == 2, "a stale nack redelivers nothing"
    m.leave()


def test_policies_given_at_join_are_stored_and_survive_a_restart(start_server) -> None:
    """A policy passed in Join is stored durably; after a restart a retry still goes through its tier."""
    server = start_server()
    Admin(server.address).create_topic("orders", 1)
    with grpc.insecure_channel(server.address) as ch:
        m = RawMember(ch, "mail", ["orders"], retry_policies=[g.TopicRetryPolicy(
            topic="orders", policy=g.RetryPolicy(max_attempts=2, delays_ms=[100]))])
        m.wait_for(lambda m: bool(m.responses))
        m.leave()
        m.wait_ended()
    start_server.stop_all()
    server = start_server()
    produce(server.address, "orders", [(b"k", b"v")])
    with grpc.insecure_channel(server.address) as ch:
        attempts = []

        def fail(member: RawMember, batch: list[Got]) -> None:
            for x in batch:
                attempts.append((x.attempt, x.topic))
                member.nack(x.delivery_id)

        m = RawMember(ch, "mail", ["orders"], on_delivery=fail)
        wait_all([m], lambda: len(attempts) >= 2, what="two attempts")
        assert attempts == [(1, "orders"), (2, "orders.mail.retry.100ms")]
        stub = groups_pb2_grpc.GroupsStub(ch)
        wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 1,
                 what="dead-lettered after 2 attempts")
        m.leave()


def test_a_policy_whose_retry_topics_another_pair_already_uses_is_refused(server: RunningServer, stub) -> None:
    """('a.b', 'c') and ('a', 'b.c') spell the same retry topics: the second policy is refused."""
    admin = Admin(server.address)
    admin.create_topic("a.b", 1)
    admin.create_topic("a", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="c", topic="a.b", policy=g.RetryPolicy(max_attempts=2)))
    details = expect_status(grpc.StatusCode.FAILED_PRECONDITION, stub.SetRetryPolicy, g.SetRetryPolicyRequest(
        group="b.c", topic="a", policy=g.RetryPolicy(max_attempts=2)))
    assert "a.b.c" in details and "rename" in details


def test_filtered_redrive_takes_only_matching_dead_letters_once(server: RunningServer, channel, stub) -> None:
    """A redrive by key moves only those dead letters; a later full redrive moves the rest, none twice."""
    Admin(server.address).create_topic("orders", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=g.RetryPolicy(max_attempts=1)))
    state = {"fail": True}
    got: list[Got] = []

    def handle(member: RawMember, batch: list[Got]) -> None:
        for x in batch:
            got.append(x)
            if state["fail"]:
                member.nack(x.delivery_id, reason="down")
            else:
                member.ack(x.delivery_id)

    def letters() -> list:
        return list(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters)

    m = RawMember(channel, "mail", ["orders"], on_delivery=handle)
    m.wait_for(lambda m: bool(m.responses))
    produce(server.address, "orders", [(b"k%d" % (i % 5), b"v%d" % i) for i in range(10)])
    wait_all([m], lambda: len(letters()) == 10, what="ten dead letters")
    state["fail"] = False
    done = list(stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group="mail", topic="orders", key=b"k3")))
    assert done[-1].redriven == done[-1].total == 2
    wait_all([m], lambda: len(got) >= 12, what="the two redriven records")
    assert sorted(x.value for x in got[10:]) == [b"v3", b"v8"]
    assert sorted(d.record.value for d in letters()) == sorted(b"v%d" % i for i in range(10) if i % 5 != 3)
    assert all(d.record.HasField("key") for d in letters()), "markers are not listed as dead letters"
    done = list(stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group="mail", topic="orders")))
    assert done[-1].redriven == 8
    wait_all([m], lambda: len(got) >= 20, what="the rest")
    time.sleep(0.3)
    assert sorted(x.value for x in got[10:]) == sorted(b"v%d" % i for i in range(10)), "each dead letter once"
    assert letters() == []
    m.leave()


def test_dead_letter_cursors_are_not_reported_as_group_lag(server: RunningServer, channel, stub) -> None:
    """After a purge stores the DLQ cursor, DescribeGroup still shows only the partitions the group reads."""
    Admin(server.address).create_topic("orders", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=g.RetryPolicy(max_attempts=1)))
    m = RawMember(channel, "mail", ["orders"], on_delivery=lambda member, batch: [member.nack(x.delivery_id) for x in batch])
    produce(server.address, "orders", [(b"k", b"v")])
    wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 1,
             what="a dead letter")
    stub.PurgeDeadLetters(g.PurgeDeadLettersRequest(group="mail", topic="orders"))
    produce(server.address, "orders", [(b"k", b"w")])
    wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 1,
             what="another dead letter")
    wait_all([m], lambda: all(p.lag == 0 for p in stub.DescribeGroup(g.DescribeGroupRequest(group="mail")).partitions),
             what="no lag: the dead letter above the DLQ cursor is not counted")
    d = stub.DescribeGroup(g.DescribeGroupRequest(group="mail"))
    assert not any(p.topic.endswith(".dlq") for p in d.partitions)
    listed = stub.ListGroups(g.ListGroupsRequest()).groups
    assert all(not t.endswith(".dlq") for x in listed for t in x.topics)
    m.leave()


def test_a_second_redrive_waits_for_a_running_one_but_not_for_a_cancelled_one(server: RunningServer, channel, stub) -> None:
    """While a redrive runs, another of the same DLQ is FAILED_PRECONDITION; once the first is cancelled, a new one runs."""
    Admin(server.address).create_topic("orders", 1)
    stub.SetRetryPolicy(g.SetRetryPolicyRequest(group="mail", topic="orders", policy=g.RetryPolicy(max_attempts=1)))
    m = RawMember(channel, "mail", ["orders"], on_delivery=lambda member, batch: [member.nack(x.delivery_id) for x in batch])
    produce(server.address, "orders", [(b"k%d" % i, b"v%d" % i) for i in range(40)])
    wait_all([m], lambda: len(stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters) == 40,
             what="forty dead letters")
    m.leave()
    m.wait_ended()
    slow = stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group="mail", topic="orders", records_per_second=10))
    first = next(slow)
    assert first.total == 40
    details = expect_status(grpc.StatusCode.FAILED_PRECONDITION, stub.RedriveDeadLetters,
                            g.RedriveDeadLettersRequest(group="mail", topic="orders"))
    assert "already running" in details
    slow.cancel()
    deadline = time.monotonic() + 10
    while True:
        try:
            done = list(stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group="mail", topic="orders",
                                                                             records_per_second=1000)))
            break
        except grpc.RpcError as exc:  # the server may take a moment to see the cancel
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and time.monotonic() < deadline
            time.sleep(0.05)
    assert done[-1].redriven == done[-1].total and done[-1].total <= 40
    assert stub.ListDeadLetters(g.ListDeadLettersRequest(group="mail", topic="orders")).dead_letters == []
