"""Retry policies, terminal nacks and dead letters through the client library, against a real
broker over loopback gRPC: a Consumer with a policy walks a record through the retry tiers into
the dead-letter topic, Admin lists it with its provenance, redrives it (attempt 1 again) and purges.

The broker runs on a ``ManualClock``: retry waits pass when a test advances it, never by
sleeping; waits below are for the broker's asynchronous answers only."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import Callable

import pytest

from logstore import errors
from logstore.client import Admin, Consumer, ConsumerMessage, DeadLetter, Producer, RetryPolicy
from logstore.clock import ManualClock

from clocked_broker import admin, broker, clock, names, server  # noqa: F401 - pytest fixtures

WAIT_S = 10.0


def produce(broker: str, topic: str, items: list[tuple[bytes, bytes]], **kw: object) -> None:
    with Producer(broker, linger_ms=20) as producer:
        futures = [producer.send(topic, value, key=key, **kw) for key, value in items]
    for f in futures:
        f.result()


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.01)


def take(consumer: Consumer, n: int) -> list[ConsumerMessage]:
    out = []
    while len(out) < n:
        message = consumer.poll(WAIT_S)
        assert message is not None, f"only {len(out)} of {n} messages arrived"
        out.append(message)
    return out


def wait_forwarded(admin: Admin, tier: str, partition: int, count: int) -> None:
    """Wait until ``tier`` holds ``count`` records in ``partition``: the broker has applied the
    nacks (a retry's wait counts from then, so the clock may move only after this)."""
    wait_for(lambda: admin.list_offsets(tier, partition)[partition].offset == count, f"{count} record(s) in {tier}")


def dead_letters(admin: Admin, group: str, topic: str, **kw: object) -> list[DeadLetter]:
    return list(admin.list_dead_letters(group, topic, **kw))


def test_a_consumer_policy_walks_a_record_through_the_tiers_into_the_dlq(
    broker: str, admin: Admin, names, clock: ManualClock
) -> None:
    """Join-time retry_policies: a record nacked every time comes back from each tier once its wait
    passed, is dead-lettered after max_attempts, and list_dead_letters shows its provenance."""
    topic, group = names(2)
    produce(broker, topic, [(b"lead-7", b"hello")], partition=1)
    policy = RetryPolicy(3, delays_ms=(1000, 5000))
    with Consumer(broker, group, topic, start="earliest", retry_policies={topic: policy}) as consumer:
        (first,) = take(consumer, 1)
        assert (first.topic, first.partition, first.attempt) == (topic, 1, 1)
        first_failure = clock()
        first.nack("smtp down")
        wait_forwarded(admin, f"{topic}.{group}.retry.1000ms", 1, 1)
        assert consumer.poll(0.3) is None, "the retry came before its wait passed"
        clock.advance(1000)
        (second,) = take(consumer, 1)
        assert (second.topic, second.partition, second.attempt) == (f"{topic}.{group}.retry.1000ms", 1, 2)
        assert (second.key, second.value) == (b"lead-7", b"hello")
        assert dict(second.headers)["logstore.origin.topic"] == topic.encode()
        second.nack("smtp still down")
        wait_forwarded(admin, f"{topic}.{group}.retry.5000ms", 1, 1)
        clock.advance(4999)
        assert consumer.poll(0.3) is None, "the third attempt came before its 5 s wait passed"
        clock.advance(1)
        (third,) = take(consumer, 1)
        assert (third.topic, third.attempt) == (f"{topic}.{group}.retry.5000ms", 3)
        third.nack("gave up")
        wait_for(lambda: dead_letters(admin, group, topic), "the record to be dead-lettered")
        dead_at = clock()
        assert consumer.poll(0.3) is None, "a dead-lettered record was delivered again"
    (letter,) = dead_letters(admin, group, topic)
    assert (letter.partition, letter.offset) == (1, 0)
    assert (letter.origin_topic, letter.origin_partition, letter.origin_offset) == (topic, 1, 0)
    assert (letter.attempts, letter.error) == (3, "gave up")
    assert (letter.first_failure_ms, letter.dead_lettered_ms) == (first_failure, dead_at)
    assert (letter.key, letter.value) == (b"lead-7", b"hello")
    assert dict(letter.headers)["logstore.origin.offset"] == b"0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        letter.error = "x"  # type: ignore[misc]


def test_set_retry_policy_returns_its_topics_and_clearing_it_redelivers_in_place(
    broker: str, admin: Admin, names
) -> None:
    """set_retry_policy names the backoff's tiers and the DLQ; after a clear, a nack redelivers from the topic itself."""
    topic, group = names()
    tiers, dlq = admin.set_retry_policy(
        group, topic, RetryPolicy(6, initial_delay_ms=500, multiplier=3, max_delay_ms=5000)
    )
    assert tiers == tuple(f"{topic}.{group}.retry.{ms}ms" for ms in (500, 1500, 4500, 5000))
    assert dlq == f"{topic}.{group}.dlq"
    assert {t.name for t in admin.list_topics()} >= {*tiers, dlq, f"{topic}.{group}.redrive"}
    assert admin.set_retry_policy(group, topic, None) == ((), None)
    produce(broker, topic, [(b"k", b"v")])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        (first,) = take(consumer, 1)
        first.nack("again")
        (again,) = take(consumer, 1)
        assert (again.topic, again.offset, again.attempt) == (topic, 0, 2)
        again.ack()
    assert dead_letters(admin, group, topic) == []


def test_terminal_nacks_dead_letter_at_once_and_plain_nacks_in_the_same_flush_retry(
    broker: str, admin: Admin, names, clock: ManualClock
) -> None:
    """With one reason, terminal nacks (message and batch) go straight to the DLQ with attempts 1,
    while the plain nacks flushed alongside them go through the retry tier."""
    topic, group = names()
    produce(broker, topic, [(b"k%d" % i, b"v%d" % i) for i in range(6)])
    policy = RetryPolicy(5, delays_ms=(1000,))
    with Consumer(
        broker, group, topic, start="earliest", retry_policies={topic: policy}, ack_flush_ms=200
    ) as consumer:
        batch = consumer.poll_batch(WAIT_S)
        assert batch is not None and len(batch) == 6
        messages = list(batch)
        messages[0].nack("bad", terminal=True)
        messages[1].nack("bad")
        messages[2].nack("bad", terminal=True)
        messages[3].nack("bad")
        batch.nack("bad", terminal=True)  # the rest: 4 and 5
        wait_for(lambda: len(dead_letters(admin, group, topic)) == 4, "four dead letters")
        wait_forwarded(admin, f"{topic}.{group}.retry.1000ms", 0, 2)
        letters = dead_letters(admin, group, topic)
        assert [d.origin_offset for d in letters] == [0, 2, 4, 5]
        assert {(d.attempts, d.error) for d in letters} == {(1, "bad")}
        clock.advance(1000)
        retried = take(consumer, 2)
        assert sorted(m.value for m in retried) == [b"v1", b"v3"]
        assert {(m.topic, m.attempt) for m in retried} == {(f"{topic}.{group}.retry.1000ms", 2)}
        for m in retried:
            m.ack()
        assert consumer.error_count == 0


def test_a_terminal_nack_without_a_policy_is_delivered_again_and_reported(broker: str, names) -> None:
    """Without a retry policy a terminal nack redelivers the record (attempt 2) and the broker's error is counted."""
    topic, group = names()
    produce(broker, topic, [(b"k", b"v")])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        (first,) = take(consumer, 1)
        first.nack("hopeless", terminal=True)
        (again,) = take(consumer, 1)
        assert (again.topic, again.offset, again.attempt) == (topic, 0, 2)
        wait_for(lambda: consumer.error_count == 1, "the broker's error about the missing policy")
        again.ack()


def test_list_dead_letters_pages_through_everything_and_filters(
    broker: str, admin: Admin, names, clock: ManualClock
) -> None:
    """list_dead_letters yields every page in (partition, offset) order; key, since and until (ms or datetime) filter."""
    topic, group = names(2)
    admin.set_retry_policy(group, topic, RetryPolicy(1))
    produce(broker, topic, [(b"k%d" % (i % 5), b"v%d" % i) for i in range(30)])
    times: dict[bytes, int] = {}
    with Consumer(broker, group, topic, start="earliest") as consumer:
        for m in take(consumer, 30):
            times[m.value] = clock.advance(10)
            m.nack("no")
            wait_for(lambda v=m.value: any(d.value == v for d in dead_letters(admin, group, topic)), "the dead letter")
    letters = dead_letters(admin, group, topic, page_size=7)
    assert len(letters) == 30
    assert [(d.partition, d.offset) for d in letters] == sorted((d.partition, d.offset) for d in letters)
    assert {d.value: d.dead_lettered_ms for d in letters} == times
    only = dead_letters(admin, group, topic, key="k3", page_size=2)
    assert sorted(d.value for d in only) == sorted(b"v%d" % i for i in range(30) if i % 5 == 3)
    assert dead_letters(admin, group, topic, key=b"k3") == only
    ordered = sorted(times.values())
    lo, hi = ordered[10], ordered[20]
    window = dead_letters(admin, group, topic, since=lo, until=hi)
    assert sorted(d.dead_lettered_ms for d in window) == ordered[10:20]
    as_datetimes = dead_letters(
        admin, group, topic, since=datetime.fromtimestamp(lo / 1000), until=datetime.fromtimestamp(hi / 1000)
    )
    assert as_datetimes == window


def test_redrive_delivers_dead_letters_again_with_attempt_1_then_purge_drops_the_rest(
    broker: str, admin: Admin, names
) -> None:
    """redrive_dead_letters reports progress up to the total and returns it; the records come back
    from the redrive topic as attempt 1 and the DLQ is empty; purge_dead_letters counts what it dropped."""
    topic, group = names(2)
    admin.set_retry_policy(group, topic, RetryPolicy(1))
    produce(broker, topic, [(b"k%d" % i, b"v%d" % i) for i in range(12)])
    with Consumer(broker, group, topic, start="earliest") as consumer:
        for batch in iter(lambda: consumer.poll_batch(0.5), None):
            batch.nack("down", terminal=True)
        wait_for(lambda: len(dead_letters(admin, group, topic)) == 12, "twelve dead letters")
        progress: list[tuple[int, int]] = []
        redriven = admin.redrive_dead_letters(
            group, topic, records_per_second=100, progress=lambda done, total: progress.append((done, total))
        )
        assert redriven == 12
        assert progress[0] == (0, 12) and progress[-1] == (12, 12) and len(progress) > 2
        assert [done for done, _ in progress] == sorted(done for done, _ in progress)
        assert dead_letters(admin, group, topic) == []
        again = take(consumer, 12)
        assert sorted(m.value for m in again) == sorted(b"v%d" % i for i in range(12))
        assert {(m.topic, m.attempt) for m in again} == {(f"{topic}.{group}.redrive", 1)}
        assert {m.headers for m in again if m.value == b"v3"} and all(
            dict(m.headers)["logstore.origin.topic"] == topic.encode() for m in again
        )
        for m in again[:4]:
            m.ack()
        for m in again[4:]:
            m.nack("still down")
        wait_for(lambda: len(dead_letters(admin, group, topic)) == 8, "the eight nacked again to be dead-lettered")
    assert admin.purge_dead_letters(group, topic) == 8
    assert dead_letters(admin, group, topic) == []
    assert admin.purge_dead_letters(group, topic) == 0
    assert admin.redrive_dead_letters(group, topic) == 0


def test_dead_letter_calls_for_a_group_without_a_policy_raise_not_found(admin: Admin, names) -> None:
    """list (at the call, not at iteration), redrive and purge raise NotFound naming the dead-letter topic."""
    topic, group = names()
    for call in (
        lambda: admin.list_dead_letters(group, topic),
        lambda: admin.redrive_dead_letters(group, topic),
        lambda: admin.purge_dead_letters(group, topic),
    ):
        with pytest.raises(errors.NotFound, match=rf"{topic}\.{group}\.dlq"):
            call()


def test_bad_policies_and_arguments_raise_invalid_argument(broker: str, admin: Admin, names) -> None:
    """Out-of-range policies are refused by the broker naming the field; a policy for a topic the
    consumer does not read, a non-policy, or bad paging and rate values are refused too."""
    topic, group = names()
    with pytest.raises(errors.InvalidArgument, match="jitter"):
        admin.set_retry_policy(group, topic, RetryPolicy(3, jitter=0.9))
    with pytest.raises(errors.InvalidArgument, match="max_attempts"):
        admin.set_retry_policy(group, topic, RetryPolicy(0))
    with pytest.raises(errors.NotFound):
        admin.set_retry_policy(group, "no-such-topic", RetryPolicy(2))
    with pytest.raises(errors.InvalidArgument, match="does not consume"):
        Consumer(broker, group, topic, retry_policies={"elsewhere": RetryPolicy(2)})
    with pytest.raises(errors.InvalidArgument, match="RetryPolicy"):
        Consumer(broker, group, topic, retry_policies={topic: {"max_attempts": 2}})  # type: ignore[dict-item]
    with pytest.raises(errors.InvalidArgument, match="delays_ms"):
        RetryPolicy(3, delays_ms=(1.5,))  # type: ignore[arg-type]
    admin.set_retry_policy(group, topic, RetryPolicy(2))
    with pytest.raises(errors.InvalidArgument, match="page_size"):
        admin.list_dead_letters(group, topic, page_size=0)
    with pytest.raises(errors.InvalidArgument, match="records_per_second"):
        admin.redrive_dead_letters(group, topic, records_per_second=0)


def test_admin_redrive_takes_a_key_filter(broker: str) -> None:
    """Admin.redrive_dead_letters(key=...) redrives only that key's dead letters."""
    import time

    from logstore.client import Admin, Consumer, Producer, RetryPolicy

    admin = Admin(broker)
    admin.create_topic("filt", 1)
    admin.set_retry_policy("g", "filt", RetryPolicy(max_attempts=1))
    with Producer(broker) as producer:
        for i in range(6):
            producer.send("filt", b"v%d" % i, key=b"k%d" % (i % 2))
    with Consumer(broker, group="g", topics=["filt"], start="earliest") as consumer:
        for _ in range(6):
            consumer.poll(10).nack("no")
        deadline = time.monotonic() + 10
        while len(list(admin.list_dead_letters("g", "filt"))) < 6:
            assert time.monotonic() < deadline, "six dead letters"
            time.sleep(0.02)
        assert admin.redrive_dead_letters("g", "filt", key=b"k1") == 3
        assert sorted(d.value for d in admin.list_dead_letters("g", "filt")) == [b"v0", b"v2", b"v4"]
