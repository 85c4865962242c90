"""Retry policies kept in __group_policies: real brokers on tmp_path, reopens, a SIGKILLed writer."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from logstore.broker.broker import Acks, Broker
from logstore.broker.names import MAX_NAME_LENGTH
from logstore.broker.policies import POLICIES_TOPIC, PolicyStore
from logstore.broker.retry import RetryPolicy
from logstore.clock import ManualClock
from logstore.errors import InvalidArgument
from logstore.storage.config import Durability
from logstore.storage.records import Record, encode_records

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000

FAST = RetryPolicy(3, delays_ms=(100, 1000))
SLOW = RetryPolicy(5, initial_delay_ms=2000, multiplier=3.0, max_delay_ms=60_000, jitter=0.2)


def open_broker(data_dir: Path) -> Broker:
    return Broker.open(data_dir, clock=ManualClock(T0), start_scheduler=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def broker(data_dir: Path):
    b = open_broker(data_dir)
    yield b
    b.close()


def reopen(broker: Broker) -> tuple[Broker, PolicyStore]:
    """Close ``broker`` and open its data directory again with a fresh store (replaying the topic)."""
    broker.close()
    again = open_broker(broker.data_dir)
    return again, PolicyStore.open(again)


def log_end(broker: Broker) -> int:
    return broker.partition(POLICIES_TOPIC, 0).log.log_end_offset


def append_raw(broker: Broker, *records: Record) -> None:
    """Write records straight into __group_policies, as the store would, bypassing its checks."""
    broker.append(POLICIES_TOPIC, 0, encode_records(records), Acks.DURABLE, internal=True)


# -- the topic -------------------------------------------------------------------------------------


def test_open_creates_an_internal_durable_unretained_topic(broker) -> None:
    """open() creates __group_policies: one partition, retention -1, durability always, empty."""
    PolicyStore.open(broker)
    metadata = broker.topic(POLICIES_TOPIC).metadata
    assert metadata.partition_count == 1
    assert metadata.config.retention_ms == -1 and metadata.config.retention_bytes == -1
    assert metadata.config.durability == Durability.ALWAYS
    assert log_end(broker) == 0


def test_open_twice_reuses_the_topic(broker) -> None:
    """A second open() on the same broker finds the topic and its policies."""
    PolicyStore.open(broker).set("email", "orders", FAST)
    assert PolicyStore.open(broker).get("email", "orders") == FAST


# -- set / get / of_group ----------------------------------------------------------------------------------


def test_get_of_an_unknown_pair_is_none(broker) -> None:
    """A group/topic with no policy has None."""
    assert PolicyStore.open(broker).get("email", "orders") is None


def test_set_then_get(broker) -> None:
    """get returns the policy set for exactly that group and topic."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    assert store.get("email", "orders") == FAST
    assert store.get("email", "audit") is None
    assert store.get("sms", "orders") is None


def test_set_appends_one_record_per_change(broker) -> None:
    """Each set and each clear appends exactly one record to the topic."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "orders", SLOW)
    store.set("email", "orders", None)
    assert log_end(broker) == 3


def test_set_replaces_the_previous_policy(broker) -> None:
    """A second set for the same pair replaces the first."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "orders", SLOW)
    assert store.get("email", "orders") == SLOW


def test_of_group_lists_that_groups_policies_by_topic(broker) -> None:
    """of_group maps each topic with a policy of that group to its policy, and nothing of other groups."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "audit", SLOW)
    store.set("sms", "orders", SLOW)
    assert store.of_group("email") == {"orders": FAST, "audit": SLOW}
    assert store.of_group("sms") == {"orders": SLOW}
    assert store.of_group("nobody") == {}


def test_clear_with_none_removes_the_policy(broker) -> None:
    """set(..., None) removes the pair's policy and leaves the others."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "audit", SLOW)
    store.set("email", "orders", None)
    assert store.get("email", "orders") is None
    assert store.of_group("email") == {"audit": SLOW}


def test_clear_of_an_unknown_pair_is_harmless(broker) -> None:
    """Clearing a pair that has no policy leaves it without one and the others intact."""
    store = PolicyStore.open(broker)
    store.set("email", "audit", SLOW)
    store.set("email", "orders", None)
    assert store.get("email", "orders") is None and store.get("email", "audit") == SLOW


def test_stored_record_is_the_documented_layout(broker) -> None:
    """The record key is '<group>/<topic>' and the value the policy's JSON, stamped with the broker clock."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", SLOW)
    store.set("email", "orders", None)
    (_, first), (_, second) = broker.partition(POLICIES_TOPIC, 0).log.read_records(0)
    assert first.key == b"email/orders" and first.timestamp == T0
    assert RetryPolicy.from_json(json.loads(first.value)) == SLOW
    assert second.key == b"email/orders" and second.value is None


# -- refusals ------------------------------------------------------------------------------------------------


def test_set_refuses_a_policy_whose_tier_names_are_too_long(broker) -> None:
    """A policy whose tier topic names would exceed the name limit is refused and nothing is stored."""
    store = PolicyStore.open(broker)
    group = "g" * (MAX_NAME_LENGTH - len("orders..redrive"))  # DLQ and redrive names fit
    with pytest.raises(InvalidArgument) as info:
        store.set(group, "orders", RetryPolicy(2, delays_ms=(604_800_000,)))
    assert f"{MAX_NAME_LENGTH}-character limit" in info.value.message
    assert store.get(group, "orders") is None
    assert log_end(broker) == 0
    store.set(group, "orders", RetryPolicy(1))  # no tiers: every name fits
    assert store.get(group, "orders") == RetryPolicy(1)


@pytest.mark.parametrize(("group", "topic"), [("a/b", "orders"), ("email", "__consumer_offsets"), ("", "t")])
def test_set_refuses_invalid_names(broker, group: str, topic: str) -> None:
    """Setting a policy for an invalid group or topic name raises InvalidArgument and stores nothing."""
    store = PolicyStore.open(broker)
    with pytest.raises(InvalidArgument):
        store.set(group, topic, FAST)
    assert log_end(broker) == 0


@pytest.mark.parametrize(("group", "topic"), [("gé", "orders"), ("", "orders")])
def test_clear_refuses_invalid_names(broker, group: str, topic: str) -> None:
    """Clearing with an invalid group name raises InvalidArgument and appends nothing."""
    store = PolicyStore.open(broker)
    with pytest.raises(InvalidArgument):
        store.set(group, topic, None)
    assert log_end(broker) == 0


# -- durability ----------------------------------------------------------------------------------------------


def test_policies_survive_reopening_the_broker(broker) -> None:
    """After close and reopen, replay yields the last policy per pair; cleared pairs stay cleared."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "orders", SLOW)
    store.set("email", "audit", FAST)
    store.set("sms", "orders", FAST)
    store.set("sms", "orders", None)
    broker, store = reopen(broker)
    try:
        assert store.of_group("email") == {"orders": SLOW, "audit": FAST}
        assert store.get("sms", "orders") is None
        assert log_end(broker) == 5
    finally:
        broker.close()


def test_a_policy_cleared_then_set_again_survives_reopen(broker) -> None:
    """Replay applies clears and sets in log order: set, clear, set leaves the last policy."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    store.set("email", "orders", None)
    store.set("email", "orders", SLOW)
    broker, store = reopen(broker)
    try:
        assert store.get("email", "orders") == SLOW
    finally:
        broker.close()


def test_writes_after_reopen_append_and_survive_another(broker) -> None:
    """A store opened on a reopened broker keeps writing; a second reopen sees old and new policies."""
    PolicyStore.open(broker).set("email", "orders", FAST)
    broker, store = reopen(broker)
    store.set("email", "audit", SLOW)
    broker, store = reopen(broker)
    try:
        assert store.of_group("email") == {"orders": FAST, "audit": SLOW}
    finally:
        broker.close()


def test_many_policies_spanning_several_batches_replay(broker) -> None:
    """Replay reads every batch: 300 separate sets all come back after a reopen."""
    store = PolicyStore.open(broker)
    expected = {f"t{i}": RetryPolicy(1 + i % 100, delays_ms=(i,)) for i in range(300)}
    for topic, policy in expected.items():
        store.set("many", topic, policy)
    broker, store = reopen(broker)
    try:
        assert store.of_group("many") == expected
    finally:
        broker.close()


CHILD = """
import sys, time
from logstore.broker.broker import Broker
from logstore.broker.policies import PolicyStore
from logstore.broker.retry import RetryPolicy

broker = Broker.open(sys.argv[1], start_scheduler=False)
store = PolicyStore.open(broker)
store.set("email", "orders", RetryPolicy(4, delays_ms=(10, 20, 30)))
store.set("email", "audit", RetryPolicy(2))
store.set("email", "audit", None)
print("set", flush=True)
time.sleep(60)
"""
"""``python -c`` body: ``CHILD DATA_DIR`` sets and clears policies, prints ``set`` once they returned, waits."""


def test_a_returned_set_survives_sigkill(data_dir: Path, tmp_path: Path) -> None:
    """Policies whose set returned are there after the writer is SIGKILLed without closing the broker."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stderr_path = tmp_path / "child.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir)],
            stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO_ROOT),
        )
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable, stderr_path.read_text()
        assert proc.stdout.readline() == b"set\n", stderr_path.read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=20)
        proc.stdout.close()
    assert rc == -signal.SIGKILL, stderr_path.read_text()
    broker = open_broker(data_dir)
    try:
        store = PolicyStore.open(broker)
        assert store.of_group("email") == {"orders": RetryPolicy(4, delays_ms=(10, 20, 30))}
    finally:
        broker.close()


# -- malformed records ---------------------------------------------------------------------------------------


MALFORMED = [
    pytest.param(Record(b"nokey", b'{"max_attempts": 2}'), id="key-without-slash"),
    pytest.param(Record(None, b'{"max_attempts": 2}'), id="null-key"),
    pytest.param(Record(b"/orders", b'{"max_attempts": 2}'), id="empty-group"),
    pytest.param(Record(b"email/", b'{"max_attempts": 2}'), id="empty-topic"),
    pytest.param(Record(b"\xffmail/orders", b'{"max_attempts": 2}'), id="non-ascii-key"),
    pytest.param(Record(b"email/orders", b"not json"), id="not-json"),
    pytest.param(Record(b"email/orders", b"\xff\xfe"), id="not-utf8"),
    pytest.param(Record(b"email/orders", b"[1, 2]"), id="json-list"),
    pytest.param(Record(b"email/orders", b'"text"'), id="json-string"),
    pytest.param(Record(b"email/orders", b"{}"), id="no-max-attempts"),
    pytest.param(Record(b"email/orders", b'{"max_attempts": null}'), id="null-max-attempts"),
    pytest.param(Record(b"email/orders", b'{"max_attempts": "x"}'), id="text-max-attempts"),
    pytest.param(Record(b"email/orders", b'{"max_attempts": 0}'), id="invalid-policy"),
    pytest.param(Record(b"email/orders", b'{"max_attempts": 2, "delays_ms": 5}'), id="delays-not-a-list"),
    pytest.param(Record(b"email/orders", b'{"max_attempts": 2, "multiplier": NaN}'), id="nan-multiplier"),
]


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_records_are_skipped_on_replay(broker, bad: Record, caplog) -> None:
    """A malformed record between good ones is skipped with a warning; the records around it still apply."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    append_raw(broker, bad)
    store.set("email", "audit", SLOW)
    broker, store = reopen(broker)
    try:
        assert store.of_group("email") == {"orders": FAST, "audit": SLOW}
        assert any("malformed" in r.getMessage() for r in caplog.records)
    finally:
        broker.close()


def test_malformed_record_in_a_batch_skips_only_itself(broker) -> None:
    """In one batch of good, bad, good records, both good ones apply after reopen."""
    PolicyStore.open(broker)
    append_raw(
        broker,
        Record(b"email/orders", json.dumps(FAST.to_json()).encode()),
        Record(b"email/audit", b"garbage"),
        Record(b"sms/orders", json.dumps(SLOW.to_json()).encode()),
    )
    broker, store = reopen(broker)
    try:
        assert store.of_group("email") == {"orders": FAST}
        assert store.get("sms", "orders") == SLOW
    finally:
        broker.close()


@pytest.mark.parametrize(
    "value",
    [pytest.param(b"[" * 100_000, id="deep-nesting"), pytest.param(b'{"max_attempts": Infinity}', id="infinity")],
)
def test_pathological_json_is_skipped_on_replay(broker, value: bytes) -> None:
    """A record whose JSON is deeply nested or holds Infinity is skipped like any malformed record."""
    store = PolicyStore.open(broker)
    store.set("email", "orders", FAST)
    append_raw(broker, Record(b"email/audit", value))
    broker.close()
    broker = open_broker(broker.data_dir)
    try:
        assert PolicyStore.open(broker).of_group("email") == {"orders": FAST}
    finally:
        broker.close()
