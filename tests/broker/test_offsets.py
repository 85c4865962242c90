"""Committed offsets in __consumer_offsets: real brokers on tmp_path, restarts, SIGKILLed committers."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker
from logstore.broker.offsets import (
    MAX_METADATA_BYTES,
    OFFSETS_PARTITIONS,
    OFFSETS_TOPIC,
    CommittedOffset,
    OffsetStore,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from logstore.broker.partitioner import partition_for_key
from logstore.clock import ManualClock
from logstore.errors import InvalidArgument, NotFound
from logstore.storage.config import Durability
from logstore.storage.records import Record, encode_records

REPO_ROOT = Path(__file__).resolve().parents[2]
TP = TopicPartition
CO = CommittedOffset
T0 = 1_700_000_000_000


def open_broker(data_dir: Path) -> Broker:
    return Broker.open(data_dir, clock=ManualClock(T0), start_scheduler=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory holding topic 'orders' (3 partitions) and 'audit' (1)."""
    path = tmp_path / "data"
    broker = open_broker(path)
    broker.create_topic("orders", 3)
    broker.create_topic("audit", 1)
    broker.close()
    return path


@pytest.fixture
def broker(data_dir: Path):
    b = open_broker(data_dir)
    yield b
    b.close()


def offsets_partition_end(broker: Broker, group: str) -> int:
    return broker.partition(OFFSETS_TOPIC, partition_for_key(group.encode(), OFFSETS_PARTITIONS)).log.log_end_offset


def total_offsets_records(broker: Broker) -> int:
    return sum(p.log.log_end_offset for p in broker.topic(OFFSETS_TOPIC).partitions)


# -- basic behaviour ------------------------------------------------------------------------------


def test_open_creates_the_internal_topic_durable_and_unretained(broker):
    """open() creates __consumer_offsets: internal, 8 partitions, retention -1, durability always."""
    OffsetStore.open(broker)
    metadata = broker.topic(OFFSETS_TOPIC).metadata
    assert metadata.partition_count == OFFSETS_PARTITIONS
    assert metadata.config.retention_ms == -1 and metadata.config.retention_bytes == -1
    assert metadata.config.durability is Durability.ALWAYS
    assert OFFSETS_TOPIC not in [t.name for t in broker.list_topics()]
    assert OFFSETS_TOPIC in [t.name for t in broker.list_topics(include_internal=True)]


def test_commit_then_fetch_round_trips(broker):
    """Committed offsets come back exactly, per group, and groups() lists only groups with offsets."""
    store = OffsetStore.open(broker)
    store.commit("billing", {TP("orders", 2): CO(7, "m7", T0), TP("orders", 0): CO(5, "", T0 + 1)})
    store.commit("audit-readers", {TP("audit", 0): CO(0, "start", T0)})
    assert store.fetch("billing") == {TP("orders", 0): CO(5, "", T0 + 1), TP("orders", 2): CO(7, "m7", T0)}
    assert list(store.fetch("billing")) == [TP("orders", 0), TP("orders", 2)]
    assert store.fetch("audit-readers") == {TP("audit", 0): CO(0, "start", T0)}
    assert store.fetch("nobody") == {}
    assert store.groups() == ["audit-readers", "billing"]


def test_one_commit_is_one_durable_batch_in_the_groups_partition(broker):
    """One commit is one batch in partition murmur2(group) % 8, fsynced before commit() returns."""
    store = OffsetStore.open(broker)
    index = partition_for_key(b"billing", OFFSETS_PARTITIONS)
    log = broker.partition(OFFSETS_TOPIC, index).log
    syncs = log.sync_count
    store.commit("billing", {TP("orders", p): CO(p * 10) for p in range(3)})
    batches = log.read(0)
    assert len(batches) == 1 and log.log_end_offset == 3
    assert log.durable_end_offset == 3 and log.sync_count > syncs
    assert total_offsets_records(broker) == 3
    keys = [decode_key(r.key) for _, r in log.read_records(0)]
    assert keys == [("billing", TP("orders", p)) for p in range(3)]


def test_later_commits_overwrite_earlier_ones(broker):
    """A second commit of the same partition replaces the first; other partitions are kept."""
    store = OffsetStore.open(broker)
    store.commit("g", {TP("orders", 0): CO(1), TP("orders", 1): CO(1)})
    store.commit("g", {TP("orders", 0): CO(9, "again")})
    assert store.fetch("g") == {TP("orders", 0): CO(9, "again"), TP("orders", 1): CO(1)}


def test_empty_commit_writes_nothing(broker):
    """Committing an empty mapping appends no record."""
    store = OffsetStore.open(broker)
    store.commit("g", {})
    assert total_offsets_records(broker) == 0 and store.groups() == []


# -- restarts -----------------------------------------------------------------------------------------


def test_offsets_survive_a_restart(data_dir):
    """After close and reopen, replay yields the last committed value of every key."""
    broker = open_broker(data_dir)
    store = OffsetStore.open(broker)
    store.commit("g1", {TP("orders", 0): CO(3, "a", T0), TP("orders", 1): CO(4, "b", T0)})
    store.commit("g1", {TP("orders", 0): CO(30, "c", T0 + 5)})
    store.commit("g2", {TP("audit", 0): CO(11, "ü-metadata", T0)})
    expected = {g: store.fetch(g) for g in store.groups()}
    broker.close()

    broker = open_broker(data_dir)
    try:
        reopened = OffsetStore.open(broker)
        assert reopened.groups() == ["g1", "g2"]
        assert {g: reopened.fetch(g) for g in reopened.groups()} == expected
        assert reopened.fetch("g1")[TP("orders", 0)] == CO(30, "c", T0 + 5)
    finally:
        broker.close()


def test_delete_group_tombstones_survive_restart(data_dir):
    """delete_group forgets the group now and after a restart; a later commit revives only new offsets."""
    broker = open_broker(data_dir)
    store = OffsetStore.open(broker)
    store.commit("doomed", {TP("orders", 0): CO(1), TP("orders", 1): CO(2)})
    store.commit("kept", {TP("orders", 0): CO(5)})
    before = offsets_partition_end(broker, "doomed")
    store.delete_group("doomed")
    assert offsets_partition_end(broker, "doomed") == before + 2  # one tombstone per partition
    assert store.fetch("doomed") == {} and store.groups() == ["kept"]
    broker.close()

    broker = open_broker(data_dir)
    store = OffsetStore.open(broker)
    assert store.fetch("doomed") == {} and store.groups() == ["kept"]
    store.commit("doomed", {TP("orders", 2): CO(8)})
    broker.close()

    broker = open_broker(data_dir)
    try:
        assert OffsetStore.open(broker).fetch("doomed") == {TP("orders", 2): CO(8)}
    finally:
        broker.close()


def test_deleting_a_group_without_offsets_is_not_found(broker):
    """delete_group of a group with nothing committed raises NotFound and writes nothing."""
    store = OffsetStore.open(broker)
    with pytest.raises(NotFound, match="has no committed offsets"):
        store.delete_group("ghost")
    assert total_offsets_records(broker) == 0


def test_foreign_and_unknown_version_records_are_skipped_on_replay(data_dir):
    """Replay skips records that are not offset commits (or are of an unknown key version)."""
    broker = open_broker(data_dir)
    store = OffsetStore.open(broker)
    store.commit("g", {TP("orders", 0): CO(1)})
    index = partition_for_key(b"g", OFFSETS_PARTITIONS)
    future_key = bytes([2, 0]) + encode_key("g", TP("orders", 0))[2:]
    junk = [
        Record(key=None, value=b"no key"),
        Record(key=b"\x01", value=b"short key"),
        Record(key=future_key, value=encode_value(CO(666))),
        Record(key=encode_key("g", TP("orders", 0)), value=b"\x01\x00 truncated"),
    ]
    broker.append(OFFSETS_TOPIC, index, encode_records(junk), internal=True)
    store.commit("g", {TP("orders", 1): CO(2)})
    broker.close()

    broker = open_broker(data_dir)
    try:
        assert OffsetStore.open(broker).fetch("g") == {TP("orders", 0): CO(1), TP("orders", 1): CO(2)}
    finally:
        broker.close()


def test_concurrent_commits_of_many_groups_all_survive_restart(data_dir):
    """Eight threads committing for their own groups lose nothing across a restart."""
    broker = open_broker(data_dir)
    store = OffsetStore.open(broker)

    def worker(n: int) -> None:
        for i in range(1, 6):
            store.commit(f"group-{n}", {TP("orders", n % 3): CO(i * 100 + n, f"{n}:{i}")})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    broker.close()

    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        assert store.groups() == sorted(f"group-{n}" for n in range(8))
        for n in range(8):
            assert store.fetch(f"group-{n}") == {TP("orders", n % 3): CO(500 + n, f"{n}:5")}
    finally:
        broker.close()


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["", "a/b", "__reserved", "x" * 250, "caf\u00e9"])
def test_bad_group_names_are_refused(broker, group):
    """commit, fetch and delete_group reject invalid group names with InvalidArgument, writing nothing."""
    store = OffsetStore.open(broker)
    with pytest.raises(InvalidArgument):
        store.commit(group, {TP("orders", 0): CO(1)})
    with pytest.raises(InvalidArgument):
        store.fetch(group)
    with pytest.raises(InvalidArgument):
        store.delete_group(group)
    assert total_offsets_records(broker) == 0


@pytest.mark.parametrize("offset", [-1, -(1 << 40), 1 << 63, True, 1.5])
def test_bad_offsets_are_refused(offset):
    """A committed offset must be an int in [0, 2**63-1]."""
    with pytest.raises(InvalidArgument, match="committed offset"):
        CO(offset)


def test_bad_metadata_and_times_are_refused():
    """Metadata over 4096 UTF-8 bytes, lone surrogates, or a negative commit time raise InvalidArgument."""
    assert CO(0, "x" * MAX_METADATA_BYTES).metadata
    with pytest.raises(InvalidArgument, match="4097 bytes"):
        CO(0, "x" * (MAX_METADATA_BYTES + 1))
    with pytest.raises(InvalidArgument, match="UTF-8"):
        CO(0, "\ud800")
    with pytest.raises(InvalidArgument, match="commit_time_ms"):
        CO(0, "", -1)


def test_commit_is_all_or_nothing_on_bad_input(broker):
    """One bad entry (missing partition, missing topic, wrong type) fails the call and writes nothing."""
    store = OffsetStore.open(broker)
    good = {TP("orders", 0): CO(1)}
    with pytest.raises(NotFound):
        store.commit("g", {**good, TP("orders", 3): CO(1)})
    with pytest.raises(NotFound):
        store.commit("g", {**good, TP("no-such-topic", 0): CO(1)})
    with pytest.raises(InvalidArgument, match="CommittedOffset"):
        store.commit("g", {**good, TP("orders", 1): 5})
    with pytest.raises(InvalidArgument, match="TopicPartition"):
        store.commit("g", {**good, ("orders", 1): CO(1)})
    assert total_offsets_records(broker) == 0 and store.fetch("g") == {}


def test_record_layout_is_as_documented():
    """Key and value bytes follow the module docstring's layout byte by byte, and decode back."""
    key = encode_key("grp", TP("tp", 5))
    assert key == b"\x01\x00" b"\x03\x00" b"\x02\x00" b"\x05\x00\x00\x00" b"grp" b"tp"
    assert decode_key(key) == ("grp", TP("tp", 5))
    value = encode_value(CO(258, "hé", 1))
    assert value == (
        b"\x01\x00" + (258).to_bytes(8, "little") + (1).to_bytes(8, "little") + b"\x03\x00\x00\x00" + "hé".encode()
    )
    assert decode_value(value) == CO(258, "hé", 1)


# -- crash safety ----------------------------------------------------------------------------------------

CHILD = """
import sys
from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker
from logstore.broker.offsets import CommittedOffset, OffsetStore

broker = Broker.open(sys.argv[1], start_scheduler=False)
store = OffsetStore.open(broker)
group = sys.argv[2]
print("ready", flush=True)
seq = 0
while True:
    seq += 1
    store.commit(group, {
        TopicPartition("orders", 0): CommittedOffset(seq, f"s{seq}", seq),
        TopicPartition("orders", 1): CommittedOffset(2 * seq, f"s{seq}", seq),
    })
    print(f"ack {seq}", flush=True)
"""
"""``python -c`` body: ``CHILD DATA_DIR GROUP`` commits forever, printing ``ack SEQ`` after each return."""

KILLS = 12
EARLY_KILLS = 3


def run_and_kill(data_dir: Path, group: str, rng: random.Random, stderr_path: Path, *, early: bool = False) -> int:
    """Start a committer, SIGKILL it at a random moment, return the last acknowledged seq (0 if none).

    ``early`` kills it without waiting for it to open the store (during start-up, topic creation
    or replay)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data_dir), group],
            stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(REPO_ROOT),
        )
    try:
        if early:
            time.sleep(rng.uniform(0.1, 0.3))
        else:
            readable, _, _ = select.select([proc.stdout], [], [], 20)
            assert readable, f"{group} did not open the store: {stderr_path.read_text()}"
            time.sleep(rng.uniform(0.02, 0.2))
    finally:
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=20)
        out = proc.stdout.read().decode()
        proc.stdout.close()
    assert rc == -signal.SIGKILL, (rc, stderr_path.read_text())
    lines = [line for line in out.splitlines(keepends=True) if line.endswith("\n")]  # a cut line is no ack
    assert early or (lines and lines[0] == "ready\n"), (out, stderr_path.read_text())
    seqs = [int(line.split()[1]) for line in lines[1:] if line.startswith("ack ")]
    assert seqs == list(range(1, len(seqs) + 1))
    return seqs[-1] if seqs else 0


def test_every_acknowledged_commit_survives_sigkill(data_dir, tmp_path):
    """After SIGKILLs every acknowledged commit is in the log, in order, whole, and the latest wins."""
    rng = random.Random(7)
    acked: dict[str, int] = {}
    started = time.monotonic()
    for child in range(KILLS + EARLY_KILLS):
        group = f"committer-{child}"
        early = child % 5 == 0  # child 0 may die while creating the offsets topic
        acked[group] = run_and_kill(data_dir, group, rng, tmp_path / "child.stderr", early=early)
    killed_while_committing = sum(1 for last in acked.values() if last > 0)
    assert killed_while_committing >= KILLS, acked

    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        for group, last in acked.items():
            offsets = store.fetch(group)
            if not offsets:
                assert last == 0, f"{group}: acknowledged commit {last} lost"
                continue
            seq = offsets[TP("orders", 0)].offset
            assert seq in (last, last + 1), f"{group}: acknowledged {last}, found {seq}"
            assert offsets == {
                TP("orders", 0): CO(seq, f"s{seq}", seq),
                TP("orders", 1): CO(2 * seq, f"s{seq}", seq),
            }, f"{group}: a commit was torn apart"
            # Every acknowledged commit, not just the last, is in the log, in order.
            log = broker.partition(OFFSETS_TOPIC, partition_for_key(group.encode(), OFFSETS_PARTITIONS)).log
            history = []
            offset = log.log_start_offset
            while offset < log.log_end_offset:
                records = log.read_records(offset)
                for _, record in records:
                    g, tp = decode_key(record.key)
                    if g == group and tp == TP("orders", 0):
                        history.append(decode_value(record.value).offset)
                offset = records[-1][0] + 1
            assert history[:last] == list(range(1, last + 1)) and len(history) in (last, last + 1), group
    finally:
        broker.close()
    print(f"sigkill: {killed_while_committing} kills while committing, "
          f"{sum(acked.values())} acknowledged commits, {time.monotonic() - started:.1f}s")


def test_deleting_a_topic_drops_every_group_offset_of_it(broker: Broker, data_dir: Path) -> None:
    """After a topic is deleted no group keeps offsets for it, also after a reopen."""
    store = OffsetStore.open(broker)
    store.commit("g1", {TP("orders", 0): CO(5), TP("audit", 0): CO(7)})
    store.commit("g2", {TP("orders", 2): CO(1)})
    broker.delete_topic("orders")
    assert store.fetch("g1") == {TP("audit", 0): CO(7)}
    assert store.fetch("g2") == {}
    assert store.groups() == ["g1"]
    broker.close()
    reopened = open_broker(data_dir)
    try:
        assert OffsetStore.open(reopened).fetch("g1") == {TP("audit", 0): CO(7)}
    finally:
        reopened.close()


def test_open_drops_offsets_of_topics_that_no_longer_exist(data_dir: Path) -> None:
    """Offsets left behind by a crash between a topic's deletion and their removal are dropped at open."""
    b = open_broker(data_dir)
    OffsetStore.open(b).commit("g", {TP("orders", 1): CO(3), TP("audit", 0): CO(2)})
    b.close()
    b = open_broker(data_dir)
    b.delete_topic("orders")  # no store listening: the offsets stay in the log
    b.close()
    b = open_broker(data_dir)
    try:
        store = OffsetStore.open(b)
        assert store.fetch("g") == {TP("audit", 0): CO(2)}
        assert store.forget_missing_topics() == 0
    finally:
        b.close()
