"""Consumer groups over real gRPC with plain stubs: fan-out, balance, crashes, deadlines,
key order, at-most-once and bad input (issue 4's acceptance list)."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logstore._proto.logstore.v1 import groups_pb2 as g
from logstore._proto.logstore.v1 import groups_pb2_grpc
from logstore.client import Admin, Producer
from logstore.server.app import RunningServer
from group_helpers import AutoAcker, Got, RawMember, id_range, ids, wait_all
from server_helpers import expect_status


def produce(address: str, topic: str, n: int, keys: int = 100, start: int = 0) -> None:
    """``n`` records ``v<i>`` keyed ``k<i % keys>`` (murmur2 picks the partition)."""
    with Producer(address) as producer:
        for i in range(start, start + n):
            producer.send(topic, key=b"k%d" % (i % keys), value=b"v%d" % i)
        producer.flush()


def committed(stub: groups_pb2_grpc.GroupsStub, group: str) -> dict[tuple[str, int], int]:
    resp = stub.FetchCommittedOffsets(g.FetchCommittedOffsetsRequest(group=group), timeout=10)
    return {(o.topic, o.partition): o.offset for o in resp.offsets}


def log_ends(address: str, topic: str) -> dict[tuple[str, int], int]:
    return {(topic, p.partition): p.log_end_offset for p in Admin(address).describe_topic(topic).partitions}


@pytest.fixture
def groups_stub(channel: grpc.Channel) -> groups_pb2_grpc.GroupsStub:
    return groups_pb2_grpc.GroupsStub(channel)


@pytest.fixture
def topic(server: RunningServer) -> str:
    Admin(server.address).create_topic("events", 6)
    return "events"


def test_fan_out_three_groups_each_receive_every_record(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """Three groups on one topic each receive all N records once and commit the log end."""
    n = 3000
    produce(server.address, topic, n)
    members = {name: RawMember(channel, name, [topic], on_delivery=AutoAcker()) for name in ("email", "notify", "stats")}
    ends = log_ends(server.address, topic)
    for name, m in members.items():
        m.wait_for(lambda m: len(m.received) >= n, what=f"{name} receives {n}")
        wait_all([m], lambda: committed(groups_stub, name) == ends, what=f"{name} commits the log end")
    for name, m in members.items():
        values = sorted(int(x.value[1:]) for x in m.snapshot())
        assert values == list(range(n)), f"group {name} did not get every record exactly once"
        m.leave()
        assert m.wait_ended() == grpc.StatusCode.OK


def test_balance_members_join_and_leave_mid_stream(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """With 2-4 members joining and leaving mid-stream, no partition is owned twice and no record is lost."""
    n_total = 12_000
    violations: list[str] = []
    all_members: list[RawMember] = []
    lock = threading.Lock()

    def check(member: RawMember, batch: list[Got]) -> None:
        # Every record delivered to a member belongs to a partition the member owns now.
        with lock:
            for x in batch:
                if (x.topic, x.partition) not in member.assignment:
                    violations.append(f"{member.member_id} got {x.partition} outside {sorted(member.assignment)}")
        member.ack_all()

    def join() -> RawMember:
        m = RawMember(channel, "workers", [topic], on_delivery=check, max_in_flight_records=200)
        all_members.append(m)
        return m

    live = [join(), join()]
    producer_done = threading.Event()

    def produce_slowly() -> None:
        for k in range(12):
            produce(server.address, topic, n_total // 12, start=k * (n_total // 12))
            time.sleep(0.05)
        producer_done.set()

    t = threading.Thread(target=produce_slowly)
    t.start()
    plan = ["join", "join", "leave", "join", "leave", "leave"]
    for step in plan:
        time.sleep(0.1)
        if step == "join" and len(live) < 4:
            live.append(join())
        elif step == "leave" and len(live) > 2:
            m = live.pop(0)
            m.leave()
            assert m.wait_ended() == grpc.StatusCode.OK
        # The owners of the live members never overlap (checked on what they were last told).
        wait_all(live, lambda: len({m.responses[-1].generation for m in live if m.responses}) == 1, what="one generation")
        owned = [tp for m in live for tp in m.assignment]
        assert len(owned) == len(set(owned)), f"a partition is owned twice: {owned}"
    t.join()
    ends = log_ends(server.address, topic)
    wait_all(live, lambda: committed(groups_stub, "workers") == ends, what="the group commits the log end")
    owned = [tp for m in live for tp in m.assignment]
    assert sorted(owned) == sorted(ends), "every partition has exactly one owner"
    got = {int(x.value[1:]) for m in all_members for x in m.snapshot()}
    assert got == set(range(n_total)), f"lost {len(set(range(n_total)) - got)} record(s)"
    assert not violations, violations[:5]
    assert {len(m.assignment) for m in live} == {3}, "6 partitions over 2 members: 3 each"


def test_crashed_member_unacked_records_reach_another_member(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """A member whose stream is cut loses its partitions; exactly its unacked records are redelivered."""
    produce(server.address, topic, 2000)
    ends = log_ends(server.address, topic)
    survivor_acks = AutoAcker()
    victim = RawMember(channel, "g", [topic], max_in_flight_records=50)
    victim.wait_for(lambda m: len(m.received) >= 50, what="victim deliveries")
    survivor = RawMember(channel, "g", [topic], on_delivery=survivor_acks)
    victim.wait_for(lambda m: len(m.assignment) == 3, what="rebalance to 3+3")
    time.sleep(0.2)
    # The victim acks half of what it holds, then crashes without a goodbye.
    held = victim.snapshot()
    acked = held[: len(held) // 2]
    victim.ack(*(x.delivery_id for x in acked))
    wait_all([victim], lambda: victim.committed or True)
    time.sleep(0.3)
    unacked = {(x.partition, x.offset) for x in victim.snapshot()} - {(x.partition, x.offset) for x in acked}
    victim.cancel()
    wait_all([survivor], lambda: committed(groups_stub, "g") == ends, what="all committed after the crash")
    redelivered = [x for x in survivor_acks.acked if x.attempt > 1]
    redelivered_keys = {(x.partition, x.offset) for x in redelivered}
    assert unacked <= {(x.partition, x.offset) for x in survivor_acks.acked}, "an unacked record was lost"
    assert redelivered_keys <= unacked, "only unacked records are delivered twice"
    everything = {(x.partition, x.offset) for x in survivor_acks.acked} | {(x.partition, x.offset) for x in acked}
    assert len(everything) == 2000
    dupes = [x for x in survivor_acks.acked if (x.partition, x.offset) in {(a.partition, a.offset) for a in acked}]
    assert not dupes, "an acked record was delivered again"


def test_silent_member_is_removed_after_the_session_timeout(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """A member that stops sending anything is removed after session_timeout_ms; its records move on."""
    produce(server.address, topic, 600)
    silent = RawMember(channel, "g", [topic], session_timeout_ms=400, ack_deadline_ms=60_000, max_in_flight_records=10)
    silent.wait_for(lambda m: len(m.received) >= 10)
    acks = AutoAcker()
    other = RawMember(channel, "g", [topic], on_delivery=acks, session_timeout_ms=10_000)
    t0 = time.monotonic()
    assert silent.wait_ended(timeout=10) == grpc.StatusCode.FAILED_PRECONDITION
    assert "session_timeout_ms" in silent.details
    assert time.monotonic() - t0 < 5
    wait_all([other], lambda: committed(groups_stub, "g") == log_ends(server.address, topic), what="all committed")
    assert {int(x.value[1:]) for x in acks.acked} == set(range(600))
    other.leave()


def test_sigkilled_member_process_records_go_to_another_member(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub, tmp_path: Path) -> None:
    """A member process killed with SIGKILL: its unacked records reach the surviving member."""
    import signal
    import subprocess
    import sys

    produce(server.address, topic, 1000)
    script = tmp_path / "member.py"
    script.write_text(
        "import sys, grpc\n"
        "from logstore._proto.logstore.v1 import groups_pb2 as g, groups_pb2_grpc as gg\n"
        "ch = grpc.insecure_channel(sys.argv[1])\n"
        "def reqs():\n"
        "    yield g.ConsumeRequest(join=g.Join(group='g', topics=['events'], max_in_flight_records=100,\n"
        "        start_position=g.StartPosition(offset_position=g.OFFSET_POSITION_EARLIEST)))\n"
        "    import time\n"
        "    while True: time.sleep(1); yield g.ConsumeRequest()\n"
        "n = 0\n"
        "for r in gg.GroupsStub(ch).Consume(reqs()):\n"
        "    n += sum(len(d.records) for d in r.deliveries)\n"
        "    if n >= 100: print('holding', n, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), server.address], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("holding"), line
        acks = AutoAcker()
        other = RawMember(channel, "g", [topic], on_delivery=acks)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_all([other], lambda: committed(groups_stub, "g") == log_ends(server.address, topic), what="all committed")
        assert {int(x.value[1:]) for x in acks.acked} == set(range(1000))
        assert any(x.attempt > 1 for x in acks.acked), "the killed member's records were redelivered"
        other.leave()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_expired_ack_is_stale_and_extend_prevents_redelivery(server: RunningServer, channel: grpc.Channel, topic: str) -> None:
    """An ack after the deadline is reported stale and not applied; an extended record is not redelivered."""
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 2)
    m = RawMember(channel, "g", ["one"], ack_deadline_ms=300)
    m.wait_for(lambda m: len(m.received) >= 2)
    first, second = m.snapshot()[:2]
    assert (first.offset, second.offset) == (0, 1) and first.attempt == 1
    # Keep the second alive; let the first expire.
    for _ in range(4):
        m.extend(300, second.delivery_id)
        time.sleep(0.1)
    m.wait_for(lambda m: any(x.offset == 0 and x.attempt == 2 for x in m.received), what="redelivery of offset 0")
    m.ack(first.delivery_id)
    m.wait_for(lambda m: any(a <= first.delivery_id < b for a, b in m.stale), what="stale report")
    assert not any(x.offset == 1 and x.attempt > 1 for x in m.snapshot()), "the extended record was redelivered"
    again = next(x for x in m.snapshot() if x.offset == 0 and x.attempt == 2)
    assert again.delivery_id > second.delivery_id, "a redelivery gets a new id"
    m.ack(again.delivery_id, second.delivery_id)
    m.wait_for(lambda m: m.committed.get(("one", 0)) == 2, what="commit to 2")
    m.leave()


def test_out_of_order_acks_commit_the_contiguous_prefix(server: RunningServer, channel: grpc.Channel, groups_stub) -> None:
    """Acks in any order: the committed offset is the end of the contiguous acked prefix."""
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 10)
    m = RawMember(channel, "g", ["one"])
    m.wait_for(lambda m: len(m.received) >= 10)
    by_offset = {x.offset: x for x in m.snapshot()}
    m.ack(*(by_offset[o].delivery_id for o in (5, 6, 7, 9)))
    m.ack(*(by_offset[o].delivery_id for o in (0, 1, 2)))
    m.wait_for(lambda m: m.committed.get(("one", 0)) == 3, what="commit 3")
    time.sleep(0.2)
    assert committed(groups_stub, "g") == {("one", 0): 3}
    m.ack(by_offset[3].delivery_id, by_offset[4].delivery_id)
    m.wait_for(lambda m: m.committed.get(("one", 0)) == 8, what="commit 8")
    m.ack(by_offset[8].delivery_id)
    m.wait_for(lambda m: m.committed.get(("one", 0)) == 10, what="commit 10")
    m.leave()


def test_nack_redelivers_and_partition_order_blocks_behind_it(server: RunningServer, channel: grpc.Channel) -> None:
    """PARTITION_ORDERED: a nacked record comes back with attempt 2 before any later record of its partition."""
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 5)
    m = RawMember(channel, "g", ["one"], max_in_flight_records=2)
    m.wait_for(lambda m: len(m.received) >= 2)
    a, b = m.snapshot()[:2]
    m.nack(a.delivery_id, reason="boom")
    m.ack(b.delivery_id)
    m.wait_for(lambda m: len(m.received) >= 3)
    third = m.snapshot()[2]
    assert (third.offset, third.attempt) == (0, 2), "the nacked record is next, with attempt 2"
    time.sleep(0.3)
    assert len(m.snapshot()) == 3, "nothing later is delivered while the redelivery is out"
    m.ack(third.delivery_id)
    m.wait_for(lambda m: len(m.received) >= 5)
    assert [x.offset for x in m.snapshot()[3:5]] == [2, 3]
    m.leave()


def test_key_ordered_with_random_nacks_keeps_per_key_order(server: RunningServer, channel: grpc.Channel) -> None:
    """KEY_ORDERED: acked records of each key follow produce order under random nacks; keys run in parallel."""
    Admin(server.address).create_topic("keyed", 3)
    n, keys = 6000, 300
    produce(server.address, "keyed", n, keys=keys)
    rng = random.Random(7)
    acked_order: dict[bytes, list[int]] = defaultdict(list)
    max_parallel_keys = 0
    lock = threading.Lock()

    def handle(member: RawMember, batch: list[Got]) -> None:
        nonlocal max_parallel_keys
        with lock:
            out_keys = [x.key for x in member.pending.values()]
            assert len(out_keys) == len(set(out_keys)), "two records of one key were out at once"
            per_partition = defaultdict(set)
            for x in member.pending.values():
                per_partition[x.partition].add(x.key)
            max_parallel_keys = max([max_parallel_keys, *map(len, per_partition.values())])
            for x in list(member.pending.values()):
                if rng.random() < 0.15:
                    member.nack(x.delivery_id)
                else:
                    acked_order[x.key].append(int(x.value[1:]))
                    member.ack(x.delivery_id)

    m = RawMember(channel, "g", ["keyed"], on_delivery=handle, delivery_mode=g.DELIVERY_MODE_KEY_ORDERED,
                  max_in_flight_records=500)
    wait_all([m], lambda: sum(map(len, acked_order.values())) >= n, timeout=60, what="all acked")
    for key, values in acked_order.items():
        assert values == sorted(values), f"key {key!r} was processed out of order: {values[:10]}"
    assert sum(map(len, acked_order.values())) == n and len(acked_order) == keys
    assert any(x.attempt > 1 for x in m.snapshot()), "some records were nacked and redelivered"
    assert max_parallel_keys > 50, f"different keys of one partition ran in parallel (max {max_parallel_keys})"
    m.leave()


def test_at_most_once_commits_on_delivery_and_never_redelivers(server: RunningServer, channel: grpc.Channel, groups_stub) -> None:
    """AT_MOST_ONCE: the offset is committed before delivery; a member that dies loses its records."""
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 100)
    m = RawMember(channel, "amo", ["one"], delivery_guarantee=g.DELIVERY_GUARANTEE_AT_MOST_ONCE, max_in_flight_records=10)
    m.wait_for(lambda m: len(m.received) >= 100)
    assert committed(groups_stub, "amo") == {("one", 0): 100}
    m.cancel()
    m.wait_ended()
    again = RawMember(channel, "amo", ["one"], delivery_guarantee=g.DELIVERY_GUARANTEE_AT_MOST_ONCE)
    again.wait_for(lambda m: bool(m.responses))
    time.sleep(0.3)
    assert again.snapshot() == [], "nothing is delivered twice"
    again.leave()


def test_broker_restart_resumes_exactly_after_the_last_commit(start_server: Callable[..., RunningServer]) -> None:
    """Committed offsets survive a restart; consumption resumes at the first uncommitted record."""
    server = start_server()
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 100)
    with grpc.insecure_channel(server.address) as ch:
        m = RawMember(ch, "g", ["one"])
        m.wait_for(lambda m: len(m.received) >= 100)
        by_offset = {x.offset: x for x in m.snapshot()}
        m.ack(*(by_offset[o].delivery_id for o in range(37)))
        m.ack(by_offset[50].delivery_id)  # above the floor: not committed
        m.wait_for(lambda m: m.committed.get(("one", 0)) == 37)
    start_server.stop_all()  # type: ignore[attr-defined]
    server = start_server()
    with grpc.insecure_channel(server.address) as ch:
        assert committed(groups_pb2_grpc.GroupsStub(ch), "g") == {("one", 0): 37}
        m = RawMember(ch, "g", ["one"])
        m.wait_for(lambda m: len(m.received) >= 63)
        assert [x.offset for x in m.snapshot()][:3] == [37, 38, 39]
        assert len({x.offset for x in m.snapshot()}) == 63
        m.leave()


# -- bad input ---------------------------------------------------------------------------------


def _healthy(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_bad_joins_end_the_stream_with_a_clear_status(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """Unknown topics, no join, absurd options and internal topics get distinct, explained statuses."""
    cases = [
        (g.ConsumeRequest(ack=ids(1)), grpc.StatusCode.INVALID_ARGUMENT, "join"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=["nope"])), grpc.StatusCode.NOT_FOUND, "nope"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[])), grpc.StatusCode.INVALID_ARGUMENT, "topic"),
        (g.ConsumeRequest(join=g.Join(group="../x", topics=[topic])), grpc.StatusCode.INVALID_ARGUMENT, "group"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[topic], max_in_flight_records=10**9)), grpc.StatusCode.INVALID_ARGUMENT, "max_in_flight_records"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[topic], ack_deadline_ms=-5)), grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_ms"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[topic], session_timeout_ms=10)), grpc.StatusCode.INVALID_ARGUMENT, "session_timeout_ms"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[topic, topic])), grpc.StatusCode.INVALID_ARGUMENT, "twice"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=["__consumer_offsets"])), grpc.StatusCode.PERMISSION_DENIED, "internal"),
        (g.ConsumeRequest(join=g.Join(group="g", topics=[topic], delivery_mode=7)), grpc.StatusCode.INVALID_ARGUMENT, "delivery_mode"),
    ]
    for request, code, needle in cases:
        details = expect_status(code, groups_stub.Consume, iter([request]))
        assert needle in details, f"{code.name} message does not mention {needle!r}: {details!r}"
    _healthy(channel)
    expect_status(grpc.StatusCode.NOT_FOUND, groups_stub.DescribeGroup, g.DescribeGroupRequest(group="never"))
    expect_status(grpc.StatusCode.NOT_FOUND, groups_stub.DeleteGroup, g.DeleteGroupRequest(group="never"))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, groups_stub.SeekGroup, g.SeekGroupRequest(group="g", topic=topic))
    expect_status(grpc.StatusCode.NOT_FOUND, groups_stub.SeekGroup, g.SeekGroupRequest(
        group="g", topic="nope", target=g.SeekTarget(offset=0)))
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, groups_stub.CommitOffsets, g.CommitOffsetsRequest(
        group="g", offsets=[g.OffsetCommit(topic=topic, partition=0, offset=-1)]))
    expect_status(grpc.StatusCode.NOT_FOUND, groups_stub.CommitOffsets, g.CommitOffsetsRequest(
        group="g", offsets=[g.OffsetCommit(topic=topic, partition=99, offset=1)]))


def test_bad_requests_on_a_live_stream_are_reported_and_the_stream_goes_on(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """Unknown ids, a second join and absurd extensions are reported in-band; delivery continues."""
    produce(server.address, topic, 50)
    m = RawMember(channel, "g", [topic])
    m.wait_for(lambda m: len(m.received) >= 50)
    m.ack(10_000)
    m.send(g.ConsumeRequest(ack=id_range(5, 3)))
    m.send(g.ConsumeRequest(join=g.Join(group="other", topics=[topic])))
    m.extend(10**9, 1)
    m.wait_for(lambda m: len(m.errors) >= 4, what="four in-band errors")
    codes = [code for code, _ in m.errors]
    assert codes.count(grpc.StatusCode.INVALID_ARGUMENT.value[0]) == 3
    assert grpc.StatusCode.FAILED_PRECONDITION.value[0] in codes
    messages = " | ".join(msg for _, msg in m.errors)
    assert "never delivered" in messages and "joins once" in messages and "extension_ms" in messages
    # A live group refuses external commits and deletion, with the reason.
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups_stub.CommitOffsets, g.CommitOffsetsRequest(
        group="g", offsets=[g.OffsetCommit(topic=topic, partition=0, offset=1)]))
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups_stub.DeleteGroup, g.DeleteGroupRequest(group="g"))
    # The stream is still healthy: acks work and new records flow.
    m.ack_all()
    produce(server.address, topic, 10, start=50)
    m.wait_for(lambda m: len(m.received) >= 60, what="new records after the errors")
    assert m.status is None, "the stream is still open"
    _healthy(channel)
    m.leave()
    assert m.wait_ended() == grpc.StatusCode.OK


def test_conflicting_join_is_refused_while_members_consume(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """A join with other topics or another mode than the live members gets FAILED_PRECONDITION."""
    Admin(server.address).create_topic("other", 1)
    m = RawMember(channel, "g", [topic])
    m.wait_for(lambda m: bool(m.responses))
    details = expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups_stub.Consume, iter([
        g.ConsumeRequest(join=g.Join(group="g", topics=["other"]))]))
    assert "same topics" in details
    details = expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups_stub.Consume, iter([
        g.ConsumeRequest(join=g.Join(group="g", topics=[topic], delivery_mode=g.DELIVERY_MODE_KEY_ORDERED))]))
    assert "mode" in details
    m.leave()


# -- admin -------------------------------------------------------------------------------------


def test_describe_seek_list_delete(server: RunningServer, channel: grpc.Channel, topic: str, groups_stub) -> None:
    """DescribeGroup shows members, owners and lag; SeekGroup moves a live group; DeleteGroup forgets it."""
    produce(server.address, topic, 600)
    acks = AutoAcker()
    m = RawMember(channel, "g", [topic], on_delivery=acks, client_id="svc-a")
    ends = log_ends(server.address, topic)
    wait_all([m], lambda: committed(groups_stub, "g") == ends, what="caught up")
    d = groups_stub.DescribeGroup(g.DescribeGroupRequest(group="g"))
    assert [x.client_id for x in d.members] == ["svc-a"] and len(d.members[0].assignment) == 6
    assert all(p.lag == 0 and p.member_id == m.member_id for p in d.partitions)
    assert d.delivery_mode == g.DELIVERY_MODE_PARTITION_ORDERED
    # Seek the live group back to the start: everything is delivered again.
    resp = groups_stub.SeekGroup(g.SeekGroupRequest(group="g", topic=topic, target=g.SeekTarget(
        offset_position=g.OFFSET_POSITION_EARLIEST)))
    assert {o.offset for o in resp.offsets} == {0} and len(resp.offsets) == 6
    wait_all([m], lambda: len(acks.acked) >= 1200, what="redelivery after the seek")
    wait_all([m], lambda: committed(groups_stub, "g") == ends, what="caught up again")
    listed = groups_stub.ListGroups(g.ListGroupsRequest())
    assert [(x.name, x.member_count, list(x.topics)) for x in listed.groups] == [("g", 1, [topic])]
    m.leave()
    m.wait_ended()
    # Lag after more records, with nobody consuming.
    produce(server.address, topic, 60, start=600)
    d = groups_stub.DescribeGroup(g.DescribeGroupRequest(group="g"))
    assert sum(p.lag for p in d.partitions) == 60 and not d.members
    groups_stub.SeekGroup(g.SeekGroupRequest(group="g", topic=topic, partitions=[0], target=g.SeekTarget(offset=10**9)))
    assert committed(groups_stub, "g")[(topic, 0)] == log_ends(server.address, topic)[(topic, 0)], "offsets are clamped"
    groups_stub.DeleteGroup(g.DeleteGroupRequest(group="g"))
    assert committed(groups_stub, "g") == {}
    assert not groups_stub.ListGroups(g.ListGroupsRequest()).groups


def test_sigkilled_broker_keeps_every_commit_it_reported(tmp_path: Path) -> None:
    """A broker killed with SIGKILL keeps every commit it reported; members resume right after it."""
    from server_helpers import free_port, kill_process, start_broker_process

    data, port = tmp_path / "data", free_port()
    address = f"127.0.0.1:{port}"
    proc = start_broker_process(data, port)
    try:
        Admin(address).create_topic("one", 2)
        produce(address, "one", 400)
        with grpc.insecure_channel(address) as ch:
            m = RawMember(ch, "g", ["one"])
            m.wait_for(lambda m: len(m.received) >= 400)
            rng = random.Random(3)
            held = m.snapshot()
            rng.shuffle(held)
            m.ack(*(x.delivery_id for x in held[:250]))  # out of order: floors land mid-way
            m.wait_for(lambda m: len(m.committed) == 2, what="commits reported for both partitions")
            time.sleep(0.1)
            reported = dict(m.committed)
            kill_process(proc)
        proc = start_broker_process(data, port)
        with grpc.insecure_channel(address) as ch:
            stub = groups_pb2_grpc.GroupsStub(ch)
            stored = committed(stub, "g")
            assert all(stored[tp] >= offset for tp, offset in reported.items()), (stored, reported)
            m = RawMember(ch, "g", ["one"])
            m.wait_for(lambda m: len(m.received) >= 400 - sum(stored.values()))
            time.sleep(0.2)
            first = {}
            for x in m.snapshot():
                first.setdefault(("one", x.partition), x.offset)
            ends = log_ends(address, "one")
            assert first == {tp: off for tp, off in stored.items() if off < ends[tp]}, "resumes at the committed offsets"
            m.leave()
    finally:
        kill_process(proc)


def test_deleted_topic_ends_the_stream_and_a_new_topic_of_that_name_is_read_from_its_start(
    server: RunningServer, channel: grpc.Channel, groups_stub
) -> None:
    """Deleting a consumed topic ends its members' streams with NOT_FOUND; the group then reads the new topic."""
    admin = Admin(server.address)
    admin.create_topic("gone", 1)
    produce(server.address, "gone", 50)
    m = RawMember(channel, "g", ["gone"], on_delivery=AutoAcker())
    m.wait_for(lambda m: m.committed.get(("gone", 0)) == 50, what="caught up")
    admin.delete_topic("gone")
    assert m.wait_ended() == grpc.StatusCode.NOT_FOUND
    assert "deleted" in m.details
    admin.create_topic("gone", 1)
    produce(server.address, "gone", 5)
    again = RawMember(channel, "g", ["gone"], on_delivery=AutoAcker())
    again.wait_for(lambda m: len(m.received) >= 5, what="the new topic's records")
    assert [x.offset for x in again.snapshot()] == [0, 1, 2, 3, 4]
    again.leave()


def test_log_append_time_batches_carry_their_append_time(server: RunningServer, channel: grpc.Channel) -> None:
    """Records of a batch stamped with log-append time come in their own delivery with log_append_time_ms."""
    from logstore.storage.batch import ATTR_TIMESTAMP_LOG_APPEND, build_batch
    from logstore.storage.records import Record

    Admin(server.address).create_topic("stamped", 1)
    partition = server.broker.partition("stamped", 0)
    partition.log.append(build_batch([Record(b"k", b"a", (), 111), Record(b"k", b"b", (), 112)]))
    partition.log.append(build_batch([Record(b"k", b"c", (), 5000)], attributes=ATTR_TIMESTAMP_LOG_APPEND))
    partition.notify_appended()
    m = RawMember(channel, "g", ["stamped"])
    m.wait_for(lambda m: len(m.received) >= 3)
    deliveries = [d for r in m.responses for d in r.deliveries]
    assert [(len(d.records), d.log_append_time_ms) for d in deliveries] == [(2, 0), (1, 5000)]
    assert [d.base_offset for d in deliveries] == [0, 2]
    # A redelivery keeps it too.
    m.nack(m.snapshot()[2].delivery_id)
    m.wait_for(lambda m: len(m.received) >= 4)
    again = [d for r in m.responses for d in r.deliveries][-1]
    assert (again.attempt, again.log_append_time_ms, list(again.offsets)) == (2, 5000, [2])
    m.leave()


def test_python_consumer_reports_the_append_time_of_log_append_time_batches(server: RunningServer) -> None:
    """The Python Consumer gives records of a log-append-time batch the batch's append time."""
    from logstore.client import Consumer
    from logstore.storage.batch import ATTR_TIMESTAMP_LOG_APPEND, build_batch
    from logstore.storage.records import Record

    Admin(server.address).create_topic("stamped", 1)
    partition = server.broker.partition("stamped", 0)
    partition.log.append(build_batch([Record(b"k", b"a", (), 111)]))
    partition.log.append(build_batch([Record(b"k", b"c", (), 5000), Record(b"k", b"d", (), 4000)], attributes=ATTR_TIMESTAMP_LOG_APPEND))
    with Consumer(server.address, group="g", topics=["stamped"], start="earliest") as consumer:
        stamps = [consumer.poll(10).timestamp_ms for _ in range(3)]
    assert stamps == [111, 5000, 5000]


def test_generation_counts_rebalances(server: RunningServer, channel: grpc.Channel, topic: str) -> None:
    """The first join is generation 1; each later join or leave adds one."""
    a = RawMember(channel, "gen", [topic])
    a.wait_for(lambda m: bool(m.responses))
    assert a.responses[-1].generation == 1
    b = RawMember(channel, "gen", [topic])
    b.wait_for(lambda m: bool(m.responses))
    assert b.responses[-1].generation == 2
    b.leave()
    b.wait_ended()
    a.wait_for(lambda m: m.responses[-1].generation == 3, what="generation 3 after the leave")
    a.leave()


def test_flow_control_never_exceeds_max_in_flight(server: RunningServer, channel: grpc.Channel, topic: str) -> None:
    """The broker never has more than max_in_flight_records unacked records out to a member."""
    produce(server.address, topic, 1000)
    m = RawMember(channel, "g", [topic], max_in_flight_records=50)
    m.wait_for(lambda m: len(m.received) >= 50)
    time.sleep(0.3)
    assert len(m.received) == 50
    first_ten = [x.delivery_id for x in m.snapshot()[:10]]
    m.ack(*first_ten)
    m.wait_for(lambda m: len(m.received) >= 60)
    time.sleep(0.3)
    assert len(m.received) == 60, "each ack frees exactly one slot"
    m.nack(*(x.delivery_id for x in m.snapshot()[10:15]))
    m.wait_for(lambda m: len(m.received) >= 65)
    time.sleep(0.3)
    assert len(m.received) == 65 and len(m.pending) == 50
    m.leave()


def test_unordered_mode_lets_records_pass_a_redelivery(server: RunningServer, channel: grpc.Channel) -> None:
    """UNORDERED: a nacked record comes back, and later records of its partition flow meanwhile."""
    Admin(server.address).create_topic("one", 1)
    produce(server.address, "one", 5)
    m = RawMember(channel, "g", ["one"], max_in_flight_records=2, delivery_mode=g.DELIVERY_MODE_UNORDERED)
    m.wait_for(lambda m: len(m.received) >= 2)
    a, b = m.snapshot()[:2]
    m.nack(a.delivery_id)
    m.ack(b.delivery_id)
    m.wait_for(lambda m: len(m.received) >= 4)
    third, fourth = m.snapshot()[2:4]
    assert (third.offset, third.attempt) == (0, 2)
    assert (fourth.offset, fourth.attempt) == (2, 1), "a later record went out while the redelivery was out"
    m.leave()
