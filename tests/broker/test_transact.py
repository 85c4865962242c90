"""ProduceAndCommit without gRPC: ``OffsetStore.commit_with_append`` and ``transact.produce_and_commit``
on real brokers in ``tmp_path``, with child processes that SIGKILL themselves at exact points of the
atomic step (inside the ``append`` callback: before the append, or after it was appended and flushed),
and threads that race plain appends against it.

The atomic step under test: intent record (key_version 2) appended durably to ``__consumer_offsets``
-> batch appended at exactly the intent's base offset -> confirmation commit records (key_version 1).
After any crash either the batch and the offsets are both there or neither is.
"""

from __future__ import annotations

import json
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
from logstore.broker.config import TopicConfig
from logstore.broker.idempotence import ProducerStamp
from logstore.broker.offsets import (
    OFFSETS_PARTITIONS,
    OFFSETS_TOPIC,
    CommitIntent,
    CommittedOffset,
    OffsetStore,
    decode_intent,
    decode_key,
    decode_value,
)
from logstore.broker.partitioner import partition_for_key
from logstore.broker.transact import produce_and_commit
from logstore.clock import ManualClock
from logstore.errors import FailedPrecondition, ResourceExhausted
from logstore.storage.batch import HEADER, build_batch, iter_batch_records
from logstore.storage.records import Record, encode_records

REPO_ROOT = Path(__file__).resolve().parents[2]
TP = TopicPartition
CO = CommittedOffset
T0 = 1_700_000_000_000
GROUP = "enricher"
IN = TP("input", 0)
OUTPUT = "output"
PRIOR_OUTPUT = 3
"""Plain records in ``output`` before the step under test: its batch must land at offset 3."""
PRIOR_COMMIT = 2
"""The group's committed offset for input/0 before the step under test."""

# -- the child process that dies inside the atomic step -------------------------------------------

CHILD = r"""
import json, os, signal, sys, threading, time
from pathlib import Path
from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.clock import ManualClock
from logstore.storage.batch import build_batch
from logstore.storage.records import Record

data_dir, spec = sys.argv[1], json.loads(sys.argv[2])
broker = Broker.open(data_dir, clock=ManualClock(spec["now"]), start_scheduler=False)
store = OffsetStore.open(broker)
topic, partition = spec["target"]
log = broker.partition(topic, partition).log
stamp = {}
if spec["producer"] is not None:
    pid, epoch, seq = spec["producer"]
    stamp = dict(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
records = [Record(None, v.encode(), (), spec["now"]) for v in spec["values"]]
batch = build_batch(records, **stamp)

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def append(expected):
    print("append", expected, flush=True)
    if spec["crash"] == "before_append":
        die()
    base = log.append(batch, expected_offset=expected, wait_durable=False)
    log.flush_to(base + len(records))
    print("appended", base, flush=True)
    doomed = spec.get("delete_topic")
    if doomed:
        # A concurrent DeleteTopic: its rename is durable, its offsets listener waits for our lock.
        threading.Thread(target=broker.delete_topic, args=(doomed,), daemon=True).start()
        root = Path(data_dir) / "topics"
        deadline = time.monotonic() + 20
        while (root / doomed).exists() or any(p.name.startswith(".deleted-") for p in root.iterdir()):
            assert time.monotonic() < deadline, "the topic deletion never reached the disk"
            time.sleep(0.01)
        print("deleted", doomed, flush=True)
    die()

offsets = {TopicPartition(t, p): CommittedOffset(o, m, spec["now"]) for t, p, o, m in spec["offsets"]}
fence = {TopicPartition(t, p): o for t, p, o in spec["if_committed"]}
store.commit_with_append(spec["group"], offsets, fence, (topic, partition), batch, append)
print("returned", flush=True)
"""
"""``python -c`` body: ``CHILD DATA_DIR SPEC_JSON`` runs one ``commit_with_append`` whose ``append``
callback SIGKILLs the process at ``spec["crash"]`` (``before_append`` or ``after_append``)."""


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PYTHONUNBUFFERED="1")


def run_dying_child(data_dir: Path, crash: str, *, values: list[str], offset: int = 7,
                    producer: tuple[int, int, int] | None = None, delete_topic: str | None = None) -> list[str]:
    """Run CHILD on ``data_dir`` (commit input/0 -> ``offset`` with ``values`` appended to output/0,
    fenced on PRIOR_COMMIT); assert it died by SIGKILL; return its stdout lines."""
    spec = {
        "now": T0 + 1000, "group": GROUP, "target": [OUTPUT, 0], "values": values, "producer": producer,
        "crash": crash, "offsets": [[IN.topic, IN.partition, offset, f"through {offset}"]],
        "if_committed": [[IN.topic, IN.partition, PRIOR_COMMIT]], "delete_topic": delete_topic,
    }
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), json.dumps(spec)], capture_output=True,
                          env=child_env(), cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.decode())
    lines = proc.stdout.decode().splitlines()
    assert "returned" not in lines, "commit_with_append returned although append() killed the process"
    return lines


# -- reading the data directory back ---------------------------------------------------------------


def open_broker(data_dir: Path, now: int = T0) -> Broker:
    return Broker.open(data_dir, clock=ManualClock(now), start_scheduler=False)


def group_log(broker: Broker):  # noqa: ANN201 - PartitionLog
    return broker.partition(OFFSETS_TOPIC, partition_for_key(GROUP.encode(), OFFSETS_PARTITIONS)).log


def all_records(log) -> list[tuple[int, Record]]:  # noqa: ANN001 - PartitionLog
    out: list[tuple[int, Record]] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        got = log.read_records(offset)
        out.extend(got)
        offset = got[-1][0] + 1
    return out


def group_history(broker: Broker, group: str = GROUP) -> list[tuple]:
    """The group's records in its offsets partition, in log order: ``("intent", CommitIntent)`` or
    ``("commit", TopicPartition, CommittedOffset | None)``."""
    out: list[tuple] = []
    for _offset, record in all_records(group_log(broker)):
        decoded = decode_key(record.key)
        if decoded is None:
            found = decode_intent(record.key, record.value)
            if found is not None and found[0] == group:
                out.append(("intent", found[1]))
        elif decoded[0] == group:
            out.append(("commit", decoded[1], None if record.value is None else decode_value(record.value)))
    return out


def batch_header(broker: Broker, topic: str, partition: int, offset: int) -> tuple[int, int, int]:
    """(base offset, CRC, record count) of the stored batch holding ``offset``."""
    raw = broker.partition(topic, partition).log.read(offset, 1)[0]
    base, _length, _magic, crc, _attributes, count = HEADER.unpack_from(raw, 0)[:6]
    return base, crc, count


def output_values(broker: Broker) -> list[bytes]:
    return [r.value for _o, r in all_records(broker.partition(OUTPUT, 0).log)]


def landed(broker: Broker, intent: CommitIntent) -> bool:
    """Whether the intent's batch is in its partition (the replay rule, recomputed from the log)."""
    log = broker.partition(intent.topic, intent.partition).log
    if not log.log_start_offset <= intent.base_offset < log.log_end_offset:
        return False
    return batch_header(broker, intent.topic, intent.partition, intent.base_offset) == (
        intent.base_offset, intent.batch_crc, intent.record_count)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Topics input (1 partition) and output (1 partition, 60 s retention); output holds
    PRIOR_OUTPUT plain records and GROUP has committed PRIOR_COMMIT for input/0."""
    path = tmp_path / "data"
    broker = open_broker(path)
    try:
        broker.create_topic("input", 1)
        broker.create_topic(OUTPUT, 1, TopicConfig(retention_ms=60_000))
        broker.append(OUTPUT, 0, encode_records([Record(None, b"prior-%d" % i, (), T0) for i in range(PRIOR_OUTPUT)]))
        OffsetStore.open(broker).commit(GROUP, {IN: CO(PRIOR_COMMIT, "prior", T0)})
    finally:
        broker.close()
    return path


# -- (a) and (b): exact crash points ---------------------------------------------------------------


def test_a_crash_before_the_append_leaves_neither_the_batch_nor_the_offsets(data_dir: Path) -> None:
    """SIGKILL after the durable intent but before the append: after reopening, neither the batch nor the offsets exist."""
    lines = run_dying_child(data_dir, "before_append", values=["new-a", "new-b"])
    assert lines == [f"append {PRIOR_OUTPUT}"]

    broker = open_broker(data_dir)  # the raw logs, before OffsetStore.open can write anything
    try:
        history = group_history(broker)
        assert history[-1][0] == "intent", f"the intent was not durable before the append: {history}"
        intent = history[-1][1]
        assert (intent.topic, intent.partition, intent.base_offset, intent.record_count) == (OUTPUT, 0, PRIOR_OUTPUT, 2)
        assert intent.offsets == ((IN, CO(7, "through 7", T0 + 1000)),)
        offsets_end = group_log(broker).log_end_offset
    finally:
        broker.close()

    for reopen in range(2):
        broker = open_broker(data_dir)
        try:
            store = OffsetStore.open(broker)
            assert store.fetch(GROUP) == {IN: CO(PRIOR_COMMIT, "prior", T0)}, f"reopen {reopen}: offsets moved"
            assert output_values(broker) == [b"prior-0", b"prior-1", b"prior-2"], f"reopen {reopen}: batch appeared"
            assert group_log(broker).log_end_offset == offsets_end, "open wrote a confirmation for a batch not there"
        finally:
            broker.close()


def test_a_crash_after_the_append_leaves_both_and_open_confirms_them_for_good(data_dir: Path) -> None:
    """SIGKILL after the batch is appended and flushed but before the confirmation: after reopening both exist,
    open wrote the confirmation once, and the offsets survive the batch being deleted by retention."""
    lines = run_dying_child(data_dir, "after_append", values=["new-a", "new-b"])
    assert lines == [f"append {PRIOR_OUTPUT}", f"appended {PRIOR_OUTPUT}"]

    broker = open_broker(data_dir)
    try:
        history = group_history(broker)
        assert history[-1][0] == "intent", f"something was written after the intent before the crash: {history}"
        intent = history[-1][1]
        assert landed(broker, intent), "the appended batch is not the one the intent names"
        assert output_values(broker)[PRIOR_OUTPUT:] == [b"new-a", b"new-b"]
        before_open = group_log(broker).log_end_offset
    finally:
        broker.close()

    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        assert store.fetch(GROUP) == {IN: CO(7, "through 7", T0 + 1000)}
        history = group_history(broker)
        assert history[-2:] == [("intent", intent), ("commit", IN, CO(7, "through 7", T0 + 1000))], (
            f"open did not write the confirmation right after the intent: {history[-3:]}")
        after_first_open = group_log(broker).log_end_offset
        assert after_first_open == before_open + 1
    finally:
        broker.close()

    broker = open_broker(data_dir)  # a second reopen: confirmed already, so nothing is written again
    try:
        store = OffsetStore.open(broker)
        assert store.fetch(GROUP) == {IN: CO(7, "through 7", T0 + 1000)}
        assert group_log(broker).log_end_offset == after_first_open, "the intent was confirmed a second time"
        assert output_values(broker) == [b"prior-0", b"prior-1", b"prior-2", b"new-a", b"new-b"]
    finally:
        broker.close()

    # Retention deletes the batch: the intent no longer matches anything, the confirmation still holds.
    broker = open_broker(data_dir, now=T0 + 3_600_000)
    try:
        log = broker.partition(OUTPUT, 0).log
        log.roll()
        assert log.apply_retention() == 1 and log.log_start_offset == PRIOR_OUTPUT + 2
        assert not landed(broker, intent)
    finally:
        broker.close()
    broker = open_broker(data_dir, now=T0 + 3_600_000)
    try:
        assert OffsetStore.open(broker).fetch(GROUP) == {IN: CO(7, "through 7", T0 + 1000)}, (
            "the committed offset still depended on the intent's batch")
    finally:
        broker.close()


# -- (c) a dangling intent whose offset is filled later ---------------------------------------------


def test_a_dangling_intent_does_not_apply_when_another_batch_later_fills_its_offset(data_dir: Path) -> None:
    """After a crash before the append, a different batch (same record count and timestamps) appended at the
    intent's base offset does not make the intent apply, on this or any later open."""
    run_dying_child(data_dir, "before_append", values=["new-a", "new-b"])
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        intent = group_history(broker)[-1][1]
        result = broker.append(OUTPUT, 0, encode_records([Record(None, v, (), T0 + 1000) for v in (b"xxx-a", b"xxx-b")]))
        assert result.base_offset == intent.base_offset == PRIOR_OUTPUT
        base, crc, count = batch_header(broker, OUTPUT, 0, PRIOR_OUTPUT)
        assert (base, count) == (intent.base_offset, intent.record_count) and crc != intent.batch_crc
        assert store.fetch(GROUP) == {IN: CO(PRIOR_COMMIT, "prior", T0)}
        offsets_end = group_log(broker).log_end_offset
    finally:
        broker.close()
    for reopen in range(2):
        broker = open_broker(data_dir)
        try:
            assert OffsetStore.open(broker).fetch(GROUP) == {IN: CO(PRIOR_COMMIT, "prior", T0)}, (
                f"reopen {reopen}: a dangling intent applied because another batch sits at its base offset")
            assert group_log(broker).log_end_offset == offsets_end
        finally:
            broker.close()


# -- (d) the if_committed fence ---------------------------------------------------------------------


def test_an_if_committed_mismatch_raises_failed_precondition_and_writes_nothing(data_dir: Path) -> None:
    """A fence that does not match the committed offset (or its absence) raises FailedPrecondition naming
    the committed offset; nothing is appended anywhere and append() is never called."""
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        calls: list[int] = []
        batch = build_batch([Record(None, b"never", (), T0)])
        target = broker.partition(OUTPUT, 0).log

        def append(expected: int) -> int:
            calls.append(expected)
            return target.append(batch, expected_offset=expected)

        ends = (group_log(broker).log_end_offset, target.log_end_offset)
        other = TP("input", 0)
        cases = [
            (GROUP, {other: PRIOR_COMMIT + 1}, f"has committed offset {PRIOR_COMMIT} "),
            (GROUP, {other: -1}, f"has committed offset {PRIOR_COMMIT} "),
            ("newcomer", {other: 0}, "has committed offset -1 "),
        ]
        for group, fence, wanted in cases:
            with pytest.raises(FailedPrecondition) as err:
                store.commit_with_append(group, {other: CO(50)}, fence, (OUTPUT, 0), batch, append)
            assert wanted in str(err.value), str(err.value)
        assert calls == [], "append() was called although the fence failed"
        assert (group_log(broker).log_end_offset, target.log_end_offset) == ends, "a failed fence wrote something"
        assert store.fetch(GROUP) == {IN: CO(PRIOR_COMMIT, "prior", T0)} and store.fetch("newcomer") == {}

        # Control: the matching fence goes through, so the refusals above were the fence's doing.
        base = store.commit_with_append(GROUP, {other: CO(50)}, {other: PRIOR_COMMIT}, (OUTPUT, 0), batch, append)
        assert base == PRIOR_OUTPUT and calls == [PRIOR_OUTPUT] and store.fetch(GROUP)[other].offset == 50
    finally:
        broker.close()


# -- (e) idempotence -------------------------------------------------------------------------------


def test_a_retry_with_the_same_producer_stamp_is_a_duplicate_that_commits_nothing_new(data_dir: Path) -> None:
    """A retry of a done produce_and_commit (same producer id, epoch, sequence) is answered as a duplicate with
    the original offsets, even with other offsets and a stale fence, and appends and commits nothing."""
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        pid = broker.init_producer("svc")
        records = encode_records([Record(None, b"out-%d" % i, (), T0) for i in range(2)])
        stamp = ProducerStamp(pid.producer_id, pid.epoch, 0)
        first = produce_and_commit(broker, store, GROUP, {IN: CO(10, "first")}, {IN: PRIOR_COMMIT}, OUTPUT, 0,
                                   records, stamp)
        assert (first.base_offset, first.duplicate) == (PRIOR_OUTPUT, False)
        ends = (group_log(broker).log_end_offset, broker.partition(OUTPUT, 0).log.log_end_offset)
        retry = produce_and_commit(broker, store, GROUP, {IN: CO(99, "retry")}, {IN: PRIOR_COMMIT}, OUTPUT, 0,
                                   records, stamp)
        assert (retry.base_offset, retry.record_count, retry.duplicate) == (PRIOR_OUTPUT, 2, True)
        assert store.fetch(GROUP)[IN].offset == 10, "the duplicate committed its own offsets"
        assert (group_log(broker).log_end_offset, broker.partition(OUTPUT, 0).log.log_end_offset) == ends
        nxt = produce_and_commit(broker, store, GROUP, {IN: CO(12)}, {IN: 10}, OUTPUT, 0, records,
                                 ProducerStamp(pid.producer_id, pid.epoch, 2))
        assert (nxt.base_offset, nxt.duplicate) == (PRIOR_OUTPUT + 2, False) and store.fetch(GROUP)[IN].offset == 12
    finally:
        broker.close()


def test_a_retry_after_a_crash_between_append_and_confirmation_is_a_duplicate(data_dir: Path) -> None:
    """SIGKILL after an idempotent batch landed but before its confirmation: after the restart a retry with the
    same stamp is a duplicate, and the offsets are the intent's, not the retry's."""
    broker = open_broker(data_dir)
    try:
        pid = broker.init_producer("svc")
    finally:
        broker.close()
    run_dying_child(data_dir, "after_append", values=["new-a", "new-b"], producer=(pid.producer_id, pid.epoch, 0))
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        assert store.fetch(GROUP)[IN].offset == 7
        records = encode_records([Record(None, v, (), T0 + 1000) for v in (b"new-a", b"new-b")])
        retry = produce_and_commit(broker, store, GROUP, {IN: CO(99)}, {IN: PRIOR_COMMIT}, OUTPUT, 0, records,
                                   ProducerStamp(pid.producer_id, pid.epoch, 0))
        assert (retry.base_offset, retry.duplicate) == (PRIOR_OUTPUT, True)
        assert store.fetch(GROUP)[IN].offset == 7
        assert output_values(broker) == [b"prior-0", b"prior-1", b"prior-2", b"new-a", b"new-b"]
    finally:
        broker.close()


# -- (f) racing plain appends --------------------------------------------------------------------------


def check_atomicity(broker: Broker, store: OffsetStore) -> tuple[int, int, int]:
    """Assert the committed offset c of input/0 matches the output exactly (pac-0..pac-c-1 once each, in
    order, nothing more) and every intent applies iff its batch is there; return (c, landed, dangling)."""
    committed = store.fetch(GROUP).get(IN)
    c = committed.offset if committed else 0
    pacs = [v for v in output_values(broker) if v.startswith(b"pac-")]
    assert pacs == [b"pac-%d" % i for i in range(c)], (
        f"committed {c} but the output holds {len(pacs)} pac records: {pacs[-5:]}")
    n_landed = n_dangling = 0
    log = broker.partition(OUTPUT, 0).log
    for kind, *rest in group_history(broker):
        if kind != "intent":
            continue
        intent = rest[0]
        if landed(broker, intent):
            n_landed += 1
            (tp, offset), = [(tp, co.offset) for tp, co in intent.offsets]
            value = next(iter(iter_batch_records(log.read(intent.base_offset, 1)[0])))[1].value
            assert value == b"pac-%d" % (offset - 1), f"intent for {offset} names a batch holding {value!r}"
        else:
            n_dangling += 1
    return c, n_landed, n_dangling


class PlainAppender(threading.Thread):
    """Appends plain one-record batches to output/0 as fast as it can, yielding the GIL between them."""

    def __init__(self, broker: Broker, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.broker, self.stop, self.count = broker, threading.Event(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.broker.append(OUTPUT, 0, encode_records([Record(None, b"%s-%d" % (self.name.encode(), self.count), (), T0)]))
            self.count += 1
            time.sleep(0.0002)


def test_concurrent_plain_appends_never_break_the_atomicity(data_dir: Path) -> None:
    """With two threads appending to the target all the time, 300 produce_and_commit calls race and retry, yet a
    committed offset is only ever visible once its batch is in the log, and each batch is there exactly once."""
    broker = open_broker(data_dir)
    appenders = [PlainAppender(broker, f"plain{i}") for i in range(2)]
    violations: list[str] = []
    checked: set[int] = set()
    done = threading.Event()
    try:
        store = OffsetStore.open(broker)
        store.commit(GROUP, {IN: CO(0, "start")})  # call i commits i+1 fenced on i
        log = broker.partition(OUTPUT, 0).log

        def watch() -> None:
            """Whenever committed offset c is visible, pac-(c-1) must already be in the log."""
            seen: set[bytes] = set()
            position = 0
            while not done.is_set():
                committed = store.fetch(GROUP).get(IN)
                c = committed.offset if committed and committed.metadata.startswith("pac-") else 0
                end = log.log_end_offset
                while position < end:
                    got = log.read_records(position)
                    seen.update(r.value for _o, r in got)
                    position = got[-1][0] + 1
                if c and b"pac-%d" % (c - 1) not in seen:
                    violations.append(f"offset {c} committed before pac-{c - 1} was in the log")
                    return
                checked.add(c)
                time.sleep(0.0005)

        watcher = threading.Thread(target=watch, daemon=True)
        for t in appenders:
            t.start()
        watcher.start()
        exhausted = 0
        bases = []
        i = 0
        while i < 300:
            try:
                records = encode_records([Record(None, b"pac-%d" % i, (), T0)])
                result = produce_and_commit(broker, store, GROUP, {IN: CO(i + 1, f"pac-{i}")}, {IN: i}, OUTPUT, 0,
                                            records)
            except ResourceExhausted:
                exhausted += 1  # lost MAX_RACES races in a row: nothing happened, do it again
                continue
            bases.append(result.base_offset)
            i += 1
        done.set()
        watcher.join(10)
        for t in appenders:
            t.stop.set()
            t.join(10)
        assert not violations, violations
        assert len(checked) >= 30, f"the watcher saw only {len(checked)} committed offsets: it proved little"
        values = output_values(broker)
        assert [values[b] for b in bases] == [b"pac-%d" % i for i in range(300)], "a call reported the wrong base"
        c, n_landed, n_dangling = check_atomicity(broker, store)
        assert c == 300 and n_landed == 300
        plain = sum(t.count for t in appenders)
        print(f"\n300 produce_and_commit calls against {plain} plain appends: {n_dangling} lost races "
              f"(dangling intents), {exhausted} calls gave up after MAX_RACES; {len(checked)} committed "
              "offsets checked live")
        assert n_dangling >= 1, "no produce_and_commit ever raced a plain append: the test proved nothing"
    finally:
        done.set()
        for t in appenders:
            t.stop.set()
        broker.close()
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        assert check_atomicity(broker, store)[:2] == (300, 300), "the replay disagrees with the live state"
    finally:
        broker.close()


LOOP_CHILD = r"""
import sys, threading, time
from logstore.broker.assignment import TopicPartition
from logstore.broker.broker import Broker
from logstore.broker.offsets import CommittedOffset, OffsetStore
from logstore.broker.transact import produce_and_commit
from logstore.clock import ManualClock
from logstore.errors import ResourceExhausted
from logstore.storage.records import Record, encode_records

T0 = 1_700_000_000_000
broker = Broker.open(sys.argv[1], clock=ManualClock(T0), start_scheduler=False)
store = OffsetStore.open(broker)
tp = TopicPartition("input", 0)

def plain(name):
    n = 0
    while True:
        broker.append("output", 0, encode_records([Record(None, b"%s-%d" % (name, n), (), T0)]))
        n += 1
        time.sleep(0.0002)

for name in (b"plainA", b"plainB"):
    threading.Thread(target=plain, args=(name,), daemon=True).start()
print("ready", flush=True)
while True:
    c = store.fetch("enricher")[tp].offset
    try:
        produce_and_commit(broker, store, "enricher", {tp: CommittedOffset(c + 1, f"pac-{c}")}, {tp: c},
                           "output", 0, encode_records([Record(None, b"pac-%d" % c, (), T0)]))
    except ResourceExhausted:
        continue
"""
"""``python -c`` body: ``LOOP_CHILD DATA_DIR`` runs produce_and_commit steps from the committed offset
on, racing two plain appenders, until it is killed."""


def test_sigkilled_racing_produce_and_commit_loops_stay_atomic(data_dir: Path) -> None:
    """Eight SIGKILLs at random moments of a produce_and_commit loop racing plain appends: after each restart the
    committed offset is exactly the number of its batches in the log, and replay agrees with the intents."""
    rng = random.Random(2024_06)
    broker = open_broker(data_dir)
    try:
        OffsetStore.open(broker).commit(GROUP, {IN: CO(0, "start")})
    finally:
        broker.close()
    progress = []
    for _kill in range(8):
        proc = subprocess.Popen([sys.executable, "-c", LOOP_CHILD, str(data_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env(), cwd=REPO_ROOT)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready and proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            proc.kill()
            proc.wait(15)
            err = proc.stderr.read().decode()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, err
        broker = open_broker(data_dir)
        try:
            c, n_landed, n_dangling = check_atomicity(broker, OffsetStore.open(broker))
        finally:
            broker.close()
        progress.append((c, n_dangling))
    print(f"\n8 kills: committed offset / dangling intents after each: {progress}")
    assert progress[-1][0] >= 8 and progress[-1][1] >= 1, f"the loop made too little progress to prove much: {progress}"
    assert [c for c, _ in progress] == sorted(c for c, _ in progress), "a committed offset went backwards"


# -- a topic deleted while a confirmation is pending --------------------------------------------------
# Regression: _confirm_replayed_intents used to re-commit the deleted topic's offsets, commit() raised
# NotFound, and OffsetStore.open (so serve()) failed at every start.


def test_open_survives_an_input_topic_deleted_between_append_and_confirmation(data_dir: Path) -> None:
    """A topic deleted (DeleteTopic) while produce_and_commit was between its append and its confirmation, then
    SIGKILL: the store still opens, keeps the batch, and drops the deleted topic's offsets."""
    lines = run_dying_child(data_dir, "after_append", values=["new-a", "new-b"], delete_topic="input")
    assert lines[-1] == "deleted input", lines
    broker = open_broker(data_dir)
    try:
        store = OffsetStore.open(broker)
        assert store.fetch(GROUP) == {}
        assert output_values(broker) == [b"prior-0", b"prior-1", b"prior-2", b"new-a", b"new-b"]
    finally:
        broker.close()
