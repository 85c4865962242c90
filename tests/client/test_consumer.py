"""Consumer against a real broker over loopback gRPC: acks commit, nacks and expired
deadlines redeliver, extensions hold a lease, batches ack in one run, the worker pool
keeps per-key order, join errors map to logstore.errors, close() leaves and is bounded.

The broker runs on a ``ManualClock`` so that ack deadlines pass when a test says so,
never by sleeping; waits below are for the broker's asynchronous answers only."""

from __future__ import annotations

import copy
import pickle
import threading
import time
from collections import defaultdict
from typing import Callable

import grpc
import pytest

from logstore import errors
from logstore.client import Admin, Consumer, ConsumerMessage, DeliveryBatch, Producer
from logstore.clock import ManualClock
from logstore.server.app import serve

from clocked_broker import admin, broker, clock, names, server  # noqa: F401 - pytest fixtures

WAIT_S = 10.0


def produce(broker: str, topic: str, values: list[bytes], **kw: object) -> list:
    with Producer(broker, linger_ms=50) as producer:
        futures = [producer.send(topic, v, **kw) for v in values]
    return [f.result() for f in futures]


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it is true (the broker answers asynchronously)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def take(consumer: Consumer, n: int) -> list[ConsumerMessage]:
    out = []
    while len(out) < n:
        message = consumer.poll(WAIT_S)
        assert message is not None, f"only {len(out)} of {n} messages arrived"
        out.append(message)
    return out


def committed(admin: Admin, group: str, topic: str) -> dict[int, int]:
    return {p: c.offset for (t, p), c in admin.fetch_committed_offsets(group, topic).items()}


def consumer_threads(group: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"logstore-consumer-{group}-")]


# -- iterate and ack -----------------------------------------------------------------------------


def test_iterated_messages_carry_the_record_and_acks_commit_them(broker: str, admin: Admin, names) -> None:
    """Iterating yields each record once with its fields, attempt 1 and consecutive ids; acking all commits the end."""
    topic, group = names()
    produce(broker, topic, [b"v%d" % i for i in range(10)], key=b"k", headers=[("h", b"1")])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        got = []
        for message in consumer:
            got.append(message)
            message.ack()
            if len(got) == 10:
                break
        assert [(m.topic, m.partition, m.offset, m.value) for m in got] == [
            (topic, 0, i, b"v%d" % i) for i in range(10)
        ]
        assert all(m.key == b"k" and m.headers == (("h", b"1"),) and m.attempt == 1 for m in got)
        assert all(m.timestamp_ms > 1_600_000_000_000 for m in got)
        ids = [m.delivery_id for m in got]
        assert ids == list(range(ids[0], ids[0] + 10))
        wait_for(lambda: consumer.committed.get((topic, 0)) == 10, "ConsumeResponse.committed to reach 10")
        assert consumer.stale_count == 0
    assert committed(admin, group, topic) == {0: 10}


def test_a_new_group_starts_where_start_says(broker: str, admin: Admin, names) -> None:
    """start='latest' skips what is there, a timestamp starts at the first record at or after it."""
    topic, group = names()
    with Producer(broker, linger_ms=50) as producer:
        for i in range(1, 6):
            producer.send(topic, b"t%d" % i, timestamp_ms=i * 1000)
    with Consumer(broker, group + "-ts", topic, start=2500) as consumer:
        assert [m.value for m in take(consumer, 3)] == [b"t3", b"t4", b"t5"]
    with Consumer(broker, group + "-latest", topic, start="latest") as consumer:
        assert consumer.poll(0.3) is None
        produce(broker, topic, [b"new"])
        message = consumer.poll(WAIT_S)
        assert message is not None and (message.offset, message.value) == (5, b"new")


def test_nack_redelivers_with_attempt_2_and_a_new_id(broker: str, admin: Admin, names) -> None:
    """A nacked record comes back as attempt 2 with a new delivery id; acking that one commits it."""
    topic, group = names()
    produce(broker, topic, [b"only"])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        (first,) = take(consumer, 1)
        assert first.attempt == 1
        first.nack(reason="boom")
        (again,) = take(consumer, 1)
        assert (again.offset, again.value, again.attempt) == (0, b"only", 2)
        assert again.delivery_id != first.delivery_id
        again.ack()
        wait_for(lambda: consumer.committed.get((topic, 0)) == 1, "the redelivered record to be committed")
        assert consumer.stale_count == 0


def test_an_expired_deadline_redelivers_and_the_late_ack_is_stale(
    broker: str, admin: Admin, names, clock: ManualClock
) -> None:
    """Past its ack deadline a record comes back as attempt 2; acking the old delivery is reported stale, not applied."""
    topic, group = names()
    produce(broker, topic, [b"slow"])
    with Consumer(broker, group, topic, start="earliest", ack_deadline_ms=1000) as consumer:
        (first,) = take(consumer, 1)
        clock.advance(1500)
        (again,) = take(consumer, 1)
        assert (again.offset, again.attempt) == (0, 2)
        first.ack()
        wait_for(lambda: consumer.stale_count == 1, "the late ack to be reported stale")
        assert committed(admin, group, topic).get(0, 0) == 0  # the stale ack committed nothing
        again.ack()
        wait_for(lambda: consumer.committed.get((topic, 0)) == 1, "the current delivery's ack to commit")
        assert consumer.stale_count == 1


def test_extend_keeps_a_record_from_being_redelivered(broker: str, admin: Admin, names, clock: ManualClock) -> None:
    """Of three records delivered together, the extended one survives a deadline that redelivers its unextended neighbour."""
    topic, group = names()
    produce(broker, topic, [b"a", b"b", b"c"])
    with Consumer(broker, group, topic, start="earliest", ack_deadline_ms=1000) as consumer:
        a, b, c = take(consumer, 3)
        assert [m.attempt for m in (a, b, c)] == [1, 1, 1]
        c.extend(600_000)
        a.ack()  # sent after the extension on the same stream: once it commits, the extension was applied
        wait_for(lambda: consumer.committed.get((topic, 0)) == 1, "the ack of the first record to commit")
        clock.advance(5000)
        redelivered = take(consumer, 1)[0]
        assert (redelivered.offset, redelivered.attempt) == (1, 2)  # b expired, c did not
        assert consumer.poll(0.2) is None
        c.ack()
        redelivered.ack()
        wait_for(lambda: consumer.committed.get((topic, 0)) == 3, "all three records to commit")
        assert consumer.stale_count == 0


def test_settling_a_message_twice_sends_it_once(broker: str, admin: Admin, names) -> None:
    """A second ack (or a nack after the ack) of one message is dropped on the client: nothing is stale, nothing redelivered."""
    topic, group = names()
    produce(broker, topic, [b"x", b"y"])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        x, y = take(consumer, 2)
        x.ack()
        x.ack()
        x.nack("too late")
        y.ack()
        wait_for(lambda: consumer.committed.get((topic, 0)) == 2, "both records to commit")
        assert consumer.poll(0.3) is None
        assert consumer.stale_count == 0


def test_copies_of_a_consumer_message_cannot_answer() -> None:
    """A ConsumerMessage made from fields, copied or unpickled keeps its fields but its ack raises FailedPrecondition."""
    message = ConsumerMessage("t", 1, 7, 1000, b"k", b"v", (("h", b"x"),), 3, 42)
    assert (message.attempt, message.delivery_id, message.offset, message.value) == (3, 42, 7, b"v")
    for other in (copy.copy(message), pickle.loads(pickle.dumps(message))):
        assert other == message and hash(other) == hash(message)
        with pytest.raises(errors.FailedPrecondition, match="not delivered by a Consumer"):
            other.ack()
    with pytest.raises(errors.FailedPrecondition):
        message.extend(1000)


# -- batches ---------------------------------------------------------------------------------------


def test_batches_hand_out_every_record_once_and_batch_ack_commits(broker: str, admin: Admin, names) -> None:
    """batches() yields whole deliveries (consistent ids, offsets and records); batch.ack() commits every partition's end."""
    topic, group = names(4)
    with Producer(broker, linger_ms=50) as producer:
        for i in range(400):
            producer.send(topic, b"r%03d" % i, partition=i % 4)
    seen: list[tuple[int, int]] = []
    with Consumer(broker, group, topic, start="earliest") as consumer:
        for batch in consumer.batches():
            assert isinstance(batch, DeliveryBatch) and batch.attempt == 1 and len(batch) > 0
            messages = list(batch)
            assert len(messages) == len(batch) == len(batch.records) == len(batch.offsets)
            assert [m.delivery_id for m in messages] == list(range(batch.first_delivery_id, batch.first_delivery_id + len(batch)))
            assert [m.offset for m in messages] == list(batch.offsets)
            assert [m.value for m in messages] == [r.value for r in batch.records]
            assert batch.deadline_ms > 0
            seen.extend((batch.partition, o) for o in batch.offsets)
            batch.ack()
            if len(seen) >= 400:
                break
        assert len(seen) == len(set(seen)) == 400
        wait_for(lambda: consumer.committed == {(topic, p): 100 for p in range(4)}, "every partition to commit")
        assert consumer.stale_count == 0


def test_poll_batch_continues_the_delivery_the_iterator_started(broker: str, names) -> None:
    """After three messages of a delivery, poll_batch() returns the rest of it: no record twice, none skipped."""
    topic, group = names()
    produce(broker, topic, [b"%d" % i for i in range(10)])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        first = take(consumer, 3)
        assert [m.offset for m in first] == [0, 1, 2]
        offsets = [m.offset for m in first]
        while len(offsets) < 10:
            batch = consumer.poll_batch(WAIT_S)
            assert batch is not None
            offsets.extend(batch.offsets)
            batch.ack()
        for m in first:
            m.ack()
        assert offsets == list(range(10))


def test_poll_returns_none_after_its_timeout(broker: str, names) -> None:
    """poll(t) and poll_batch(t) on an idle topic return None after about t seconds, then a record once one arrives."""
    topic, group = names()
    with Consumer(broker, group, topic, start="latest") as consumer:
        started = time.monotonic()
        assert consumer.poll(0.3) is None
        assert consumer.poll_batch(0.2) is None
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 3.0
        produce(broker, topic, [b"late"])
        message = consumer.poll(WAIT_S)
        assert message is not None and message.value == b"late"


# -- the worker pool -------------------------------------------------------------------------------


def test_run_acks_on_return_nacks_on_exception_and_returns_on_close(broker: str, admin: Admin, names) -> None:
    """run() acks what the callback returns from, redelivers what it raised on (attempt 2), and returns once close() is called from a callback."""
    topic, group = names(2)
    produce(broker, topic, [b"%d" % i for i in range(40)])
    attempts: dict[tuple[int, int], list[int]] = defaultdict(list)
    lock = threading.Lock()
    done = set()
    consumer = Consumer(broker, group, topic, start="earliest")

    def callback(message: ConsumerMessage) -> None:
        with lock:
            attempts[(message.partition, message.offset)].append(message.attempt)
        if int(message.value) % 5 == 0 and message.attempt == 1:
            raise ValueError("first try fails")
        with lock:
            done.add((message.partition, message.offset))
            if len(done) == 40:
                consumer.close()  # from the callback: run() finishes the close

    runner = threading.Thread(target=consumer.run, args=(callback,), kwargs={"workers": 4})
    runner.start()
    runner.join(WAIT_S * 3)
    assert not runner.is_alive(), "run() did not return after close()"
    assert len(done) == 40
    failed = [k for k, v in attempts.items() if v == [1, 2]]
    assert len(failed) == 8 and all(v == [1] for k, v in attempts.items() if k not in failed)
    ends = {p: o.offset for p, o in admin.list_offsets(topic).items()}
    wait_for(lambda: committed(admin, group, topic) == ends, "the group to commit every record")
    assert admin.describe_group(group).members == ()
    assert consumer_threads(group) == []


def test_run_key_ordered_keeps_per_key_order_and_runs_keys_in_parallel(broker: str, names) -> None:
    """With key_ordered, run() never runs two records of a key at once, processes each key in produce order
    even across nacks, and does run different keys at the same time."""
    topic, group = names(2)
    keys = [b"key-%02d" % k for k in range(12)]
    with Producer(broker, linger_ms=50) as producer:
        for seq in range(20):
            for key in keys:
                producer.send(topic, b"%d" % seq, key=key)
    expected = {key: list(range(20)) for key in keys}
    order: dict[bytes, list[int]] = defaultdict(list)
    running: set[bytes] = set()
    overlaps: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2, timeout=WAIT_S)
    waited: set[bytes] = set()
    consumer = Consumer(broker, group, topic, start="earliest", delivery_mode="key_ordered", max_in_flight=200)

    def callback(message: ConsumerMessage) -> None:
        key, seq = message.key, int(message.value)
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
            meet = seq == 0 and key in (keys[0], keys[1]) and key not in waited
            if meet:
                waited.add(key)
        try:
            if meet:
                barrier.wait()  # breaks (and fails the test) unless both keys run at once
            if seq % 7 == 3 and message.attempt == 1:
                raise RuntimeError("random failure")
            with lock:
                order[key].append(seq)
                if sum(map(len, order.values())) == 240:
                    consumer.close()
        finally:
            with lock:
                running.discard(key)

    runner = threading.Thread(target=consumer.run, args=(callback,), kwargs={"workers": 8})
    runner.start()
    runner.join(WAIT_S * 6)
    assert not runner.is_alive(), "run() did not return after close()"
    assert not barrier.broken, "two different keys never ran at the same time"
    assert overlaps == []
    assert dict(order) == expected


def test_run_partition_ordered_processes_a_partition_in_order(broker: str, names) -> None:
    """With partition_ordered, run() processes each partition's records in offset order, one at a time, even with idle workers."""
    topic, group = names(3)
    with Producer(broker, linger_ms=50) as producer:
        for i in range(90):
            producer.send(topic, b"%d" % i, partition=i % 3)
    seen: dict[int, list[int]] = defaultdict(list)
    running: dict[int, int] = defaultdict(int)
    overlaps: list[tuple[int, int]] = []
    lock = threading.Lock()
    consumer = Consumer(broker, group, topic, start="earliest")

    def callback(message: ConsumerMessage) -> None:
        with lock:
            running[message.partition] += 1
            if running[message.partition] > 1:
                overlaps.append((message.partition, message.offset))
            seen[message.partition].append(message.offset)
        if message.offset == 0:
            time.sleep(0.3)  # hold the partition: its next records, already delivered, must wait
        with lock:
            running[message.partition] -= 1
            if sum(map(len, seen.values())) == 90:
                consumer.close()

    runner = threading.Thread(target=consumer.run, args=(callback,), kwargs={"workers": 6})
    runner.start()
    runner.join(WAIT_S * 3)
    assert not runner.is_alive()
    assert overlaps == []
    assert dict(seen) == {p: list(range(30)) for p in range(3)}


def test_run_key_ordered_holds_a_redelivery_behind_the_running_copy(
    broker: str, names, clock: ManualClock
) -> None:
    """When a record's deadline passes while its callback still runs, run() starts the redelivered copy only after
    the first call returned; the first call's late ack is then stale."""
    topic, group = names()
    produce(broker, topic, [b"slow"], key=b"k")
    release = threading.Event()
    calls: list[tuple[int, str]] = []
    second_started = threading.Event()
    consumer = Consumer(broker, group, topic, start="earliest", delivery_mode="key_ordered", ack_deadline_ms=1000)

    def callback(message: ConsumerMessage) -> None:
        calls.append((message.attempt, "start"))
        if message.attempt == 1:
            release.wait(WAIT_S)
        else:
            second_started.set()
        calls.append((message.attempt, "end"))

    runner = threading.Thread(target=consumer.run, args=(callback,), kwargs={"workers": 4})
    runner.start()
    try:
        wait_for(lambda: calls == [(1, "start")], "the first call")
        clock.advance(1500)  # the broker redelivers the record as attempt 2
        assert not second_started.wait(1.0), "the redelivered copy ran while the first call was running"
        release.set()
        assert second_started.wait(WAIT_S)
        wait_for(lambda: consumer.stale_count == 1, "the first call's ack to be reported stale")
        assert calls == [(1, "start"), (1, "end"), (2, "start"), (2, "end")]
    finally:
        release.set()
        consumer.close()
        runner.join(WAIT_S)
    assert not runner.is_alive()


def test_run_twice_or_after_close_is_refused(broker: str, names) -> None:
    """run() on a closed consumer raises FailedPrecondition; workers < 1 raises InvalidArgument."""
    topic, group = names()
    consumer = Consumer(broker, group, topic)
    with pytest.raises(errors.InvalidArgument, match="workers"):
        consumer.run(lambda m: None, workers=0)
    consumer.close()
    with pytest.raises(errors.FailedPrecondition, match="closed"):
        consumer.run(lambda m: None)


# -- joining, leaving, failing --------------------------------------------------------------------


def test_join_errors_raise_the_matching_logstore_error(broker: str, names) -> None:
    """Unknown topic -> NotFound, out-of-range option -> InvalidArgument, other topics than the live
    members' -> FailedPrecondition, internal topic -> PermissionDenied, each with the broker's message."""
    topic, group = names()
    other, _ = names()
    with pytest.raises(errors.NotFound, match="no-such-topic"):
        Consumer(broker, group, "no-such-topic")
    with pytest.raises(errors.InvalidArgument, match="max_in_flight_records"):
        Consumer(broker, group, topic, max_in_flight=100_001)
    with pytest.raises(errors.InvalidArgument, match="ack_deadline_ms"):
        Consumer(broker, group, topic, ack_deadline_ms=50)
    with pytest.raises(errors.PermissionDenied):
        Consumer(broker, group, "__consumer_offsets")
    with Consumer(broker, group, topic):
        with pytest.raises(errors.FailedPrecondition, match=topic):
            Consumer(broker, group, other)
    assert consumer_threads(group) == []


def test_bad_options_are_refused_before_connecting() -> None:
    """Unknown delivery_mode, guarantee or start, or no group/topics, raise InvalidArgument naming the accepted values."""
    address = "127.0.0.1:1"  # nothing listens: the checks come first
    with pytest.raises(errors.InvalidArgument, match="'partition_ordered' or 'key_ordered'"):
        Consumer(address, "g", "t", delivery_mode="fifo")
    with pytest.raises(errors.InvalidArgument, match="at_least_once"):
        Consumer(address, "g", "t", guarantee="exactly_once")
    with pytest.raises(errors.InvalidArgument, match="'earliest', 'latest'"):
        Consumer(address, "g", "t", start="beginning")
    with pytest.raises(errors.InvalidArgument, match="group"):
        Consumer(address, "", "t")
    with pytest.raises(errors.InvalidArgument, match="topic"):
        Consumer(address, "g", [])


def test_an_unreachable_broker_raises_log_closed() -> None:
    """Joining through a port nobody listens on raises LogClosed naming the address."""
    with pytest.raises(errors.LogClosed, match="127.0.0.1:1"):
        Consumer("127.0.0.1:1", "g", "t")


def test_context_manager_joins_then_leaves(broker: str, admin: Admin, names) -> None:
    """Inside `with` the group lists the member with its partitions; leaving removes it and ends the consumer's threads."""
    topic, group = names(3)
    with Consumer(broker, group, topic, client_id="ctx-test") as consumer:
        assert consumer.member_id and consumer.generation > 0
        assert consumer.assignment == {(topic, p) for p in range(3)}
        described = admin.describe_group(group)
        assert [(m.member_id, m.client_id) for m in described.members] == [(consumer.member_id, "ctx-test")]
        assert set(described.members[0].assignment) == {(topic, p) for p in range(3)}
        assert len(consumer_threads(group)) == 2
    assert admin.describe_group(group).members == ()
    assert consumer_threads(group) == []
    assert list(consumer) == []  # a closed consumer's iteration ends at once


def test_two_members_share_the_partitions(broker: str, names) -> None:
    """A second member of the group takes half the partitions: the two assignments are disjoint and cover the topic."""
    topic, group = names(4)
    with Consumer(broker, group, topic) as one, Consumer(broker, group, topic) as two:
        one.poll(0)  # let the receiver see the rebalance
        wait_for(lambda: len(one.assignment) == 2 and len(two.assignment) == 2, "a balanced assignment")
        assert one.assignment.isdisjoint(two.assignment)
        assert one.assignment | two.assignment == {(topic, p) for p in range(4)}


def test_at_most_once_commits_before_delivery(broker: str, admin: Admin, names) -> None:
    """With guarantee='at_most_once' the delivered records are committed without any ack."""
    topic, group = names()
    produce(broker, topic, [b"a", b"b", b"c"])
    with Consumer(broker, group, topic, start="earliest", guarantee="at_most_once") as consumer:
        assert len(take(consumer, 3)) == 3
        assert admin.describe_group(group).delivery_guarantee == "at_most_once"
    assert committed(admin, group, topic) == {0: 3}


def test_close_from_another_thread_ends_a_blocked_iteration(broker: str, names) -> None:
    """close() from another thread wakes a thread blocked in the iteration, which ends; a second close() is a no-op."""
    topic, group = names()
    consumer = Consumer(broker, group, topic)
    got: list[object] = []
    iterating = threading.Thread(target=lambda: got.extend(consumer))
    iterating.start()
    started = time.monotonic()
    consumer.close()
    iterating.join(WAIT_S)
    assert not iterating.is_alive() and got == []
    consumer.close()
    assert consumer.closed and time.monotonic() - started < WAIT_S


def test_iteration_raises_when_the_broker_goes_away(tmp_path, names) -> None:  # noqa: ANN001
    """When the broker shuts down, the iteration raises LogClosed (not StopIteration), so does a later poll, and close() returns at once."""
    running = serve(tmp_path / "data", "127.0.0.1:0")
    try:
        with Admin(running.address) as admin:
            admin.create_topic("t", 1)
        consumer = Consumer(running.address, "g", "t")
    finally:
        running.stop(grace=0.5)
    with pytest.raises(errors.LogClosed, match="shutting down"):
        for _ in consumer:
            pass
    with pytest.raises(errors.LogClosed):
        consumer.poll(0)
    started = time.monotonic()
    consumer.close()
    assert time.monotonic() - started < 5


def test_a_lent_channel_is_used_and_left_open(broker: str, admin: Admin, names) -> None:
    """A Consumer built on a grpc.Channel consumes through it and leaves it open on close()."""
    topic, group = names()
    produce(broker, topic, [b"via channel"])
    with grpc.insecure_channel(broker) as channel:
        with Consumer(channel, group, topic, start="earliest") as consumer:
            (message,) = take(consumer, 1)
            assert message.value == b"via channel"
            message.ack()
        with Consumer(channel, group, topic) as again:  # still usable after the first consumer closed
            assert again.member_id
    assert committed(admin, group, topic) == {0: 1}


def test_an_idle_consumer_heartbeats_and_stays_in_the_group(broker: str, admin: Admin, names, clock: ManualClock) -> None:
    """Without acks to send, the consumer's empty requests keep its session alive past session_timeout_ms of broker time."""
    topic, group = names()
    with Consumer(broker, group, topic, session_timeout_ms=300) as consumer:
        for _ in range(3):  # 600 ms of broker time in all: twice the session timeout
            clock.advance(200)
            now = clock()
            wait_for(
                lambda: [m.last_seen_ms for m in admin.describe_group(group).members] == [now],
                "a heartbeat at the advanced broker time",
            )
        assert consumer.poll(0.05) is None  # the stream is still healthy
        assert [m.member_id for m in admin.describe_group(group).members] == [consumer.member_id]
