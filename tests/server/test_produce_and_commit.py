"""Groups.ProduceAndCommit over real gRPC: an exactly-once read-process-write service against a broker child
process SIGKILLed at random moments, and the call's status codes (fencing, live Consume members, bad input,
unknown and internal topics).

Everything goes through the generated stubs, as a client in any language would use them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import grpc
import pytest

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, groups_pb2 as g, groups_pb2_grpc
from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc
from logstore.server.app import RunningServer

from group_helpers import RawMember
from server_helpers import BrokerProcess, expect_status, fetch_range, precord

CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
"""As in test_retry_crash: a fresh channel never inherits the dead broker's connection, and a channel
that outlives a broker reconnects within 250 ms of its restart."""

INPUT, OUTPUT, GROUP, CLIENT_ID = "clicks", "enriched", "enricher", "enricher-1"
INPUT_RECORDS = 2000
OUTPUT_PARTITIONS = 2
KILLS = 20
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# -- the read-process-write service ------------------------------------------------------------------


def transform(value: bytes) -> bytes:
    return b"enriched(" + value + b")"


def output_partition(position: int) -> int:
    """Where the chunk starting at input offset ``position`` goes (a function of the input, so every
    resend of a chunk goes to the same partition)."""
    return (position // 37) % OUTPUT_PARTITIONS


class Service(threading.Thread):
    """Exactly-once enrichment of INPUT into OUTPUT with ProduceAndCommit.

    Resumes from the group's committed offset (FetchCommittedOffsets), reads a chunk of 1-12 input
    records with Fetch, appends their transformed copies to one output partition and commits the
    input offset after them in one ProduceAndCommit, fenced on the offset it started from
    (``if_committed``: the previous committed offset, -1 for none) and stamped with the producer id and
    epoch from InitProducer(client_id=CLIENT_ID) and a base_sequence tracked per output partition.

    When a call fails with UNAVAILABLE or DEADLINE_EXCEEDED (the broker died: the outcome is unknown),
    it alternates between the two recoveries the contract allows:

    - "resend": the identical request (same epoch, same sequence) until answered.  If the lost call went
      through, the answer is a duplicate and commits nothing new; the service counts it as done.
    - "re-register": a service instance that restarted cannot know its sequences, so it calls
      InitProducer(client_id) again (the epoch goes up, sequences restart at 0 on every partition) and
      sends the same chunk with the new epoch and the old fence.  If the lost call went through, the
      fence refuses it with FAILED_PRECONDITION, and the service re-reads the committed offset.

    A FAILED_PRECONDITION after a plain "resend" would mean the duplicate was not recognised; it is
    recorded as an anomaly, as is any other status.
    """

    def __init__(self, address: str, seed: int) -> None:
        super().__init__(daemon=True, name="enricher")
        self.address = address
        self.rng = random.Random(seed)
        self.abandon = threading.Event()
        self.lock = threading.Condition()
        self.commits = 0
        """ProduceAndCommit calls answered OK (duplicates included)."""
        self.stats: Counter[str] = Counter()
        self.anomalies: list[str] = []
        self.error: BaseException | None = None
        self.finished = False

    def wait_commits(self, above: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.commits > above or self.finished, timeout)

    def call(self, method: Callable, request: object) -> object:
        """A unary call retried (waiting for the broker to come back) until it is answered."""
        while True:
            if self.abandon.is_set():
                raise RuntimeError("abandoned")
            try:
                return method(request, timeout=5, wait_for_ready=True)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                self.stats["retried reads"] += 1

    def run(self) -> None:
        try:
            with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
                self._run(log_pb2_grpc.LogStub(channel), groups_pb2_grpc.GroupsStub(channel))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            with self.lock:
                self.finished = True
                self.lock.notify_all()

    def _register(self, log: log_pb2_grpc.LogStub) -> tuple[int, int]:
        resp = self.call(log.InitProducer, log_pb2.InitProducerRequest(client_id=CLIENT_ID))
        return resp.producer_id, resp.producer_epoch

    def _committed(self, groups: groups_pb2_grpc.GroupsStub) -> int:
        """The group's committed offset for INPUT/0, -1 if none."""
        resp = self.call(groups.FetchCommittedOffsets, g.FetchCommittedOffsetsRequest(group=GROUP, topics=[INPUT]))
        found = [o.offset for o in resp.offsets if (o.topic, o.partition) == (INPUT, 0)]
        return found[0] if found else -1

    def _run(self, log: log_pb2_grpc.LogStub, groups: groups_pb2_grpc.GroupsStub) -> None:
        producer_id, epoch = self._register(log)
        sequences = [0] * OUTPUT_PARTITIONS
        committed = self._committed(groups)
        buffered: list[tuple[int, bytes]] = []
        failures = 0
        while committed < INPUT_RECORDS:
            position = max(committed, 0)
            if not buffered or buffered[0][0] != position:
                resp = self.call(log.Fetch, log_pb2.FetchRequest(topic=INPUT, partition=0, offset=position))
                buffered = [(b.base_offset + i, r.value) for b in resp.batches for i, r in enumerate(b.records)
                            if b.base_offset + i >= position]
            chunk = buffered[: self.rng.randint(1, 12)]
            assert [o for o, _ in chunk] == list(range(position, position + len(chunk))), "Fetch left a gap"
            partition = output_partition(position)
            end = position + len(chunk)
            request = g.ProduceAndCommitRequest(
                group=GROUP,
                offsets=[g.OffsetCommit(topic=INPUT, partition=0, offset=end, metadata=f"through {end}")],
                if_committed=[g.OffsetCommit(topic=INPUT, partition=0, offset=committed)],
                produce=log_pb2.ProduceRequest(
                    topic=OUTPUT, partition=partition, records=[precord(transform(v)) for _, v in chunk],
                    producer_id=producer_id, producer_epoch=epoch, base_sequence=sequences[partition],
                ),
            )
            recoveries: set[str] = set()
            while True:
                if self.abandon.is_set():
                    return
                try:
                    resp = groups.ProduceAndCommit(request, timeout=5, wait_for_ready=True)
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details() or ""
                    if code in RETRYABLE:
                        failures += 1
                        if failures % 2:
                            recoveries.add("resend")
                            self.stats["resends"] += 1
                        else:
                            producer_id, epoch = self._register(log)
                            sequences = [0] * OUTPUT_PARTITIONS
                            request.produce.producer_epoch = epoch
                            request.produce.base_sequence = 0
                            recoveries.add("re-register")
                            self.stats["re-registrations"] += 1
                        continue
                    if code == grpc.StatusCode.FAILED_PRECONDITION and "committed offset" in details:
                        if "re-register" not in recoveries:
                            self.anomalies.append(f"fenced although only resent as is: {details}")
                        self.stats["fenced after re-registering"] += 1
                        committed = self._committed(groups)
                        if committed != end:
                            self.anomalies.append(f"fenced at input {position}, but the committed offset is "
                                                  f"{committed}, not the lost call's {end}")
                            return
                        break
                    self.anomalies.append(f"{code.name} at input {position}: {details}")
                    return
                result = resp.produce.partitions[0]
                if result.duplicate:
                    self.stats["duplicates"] += 1
                    if not recoveries:
                        self.anomalies.append(f"a first attempt was answered as a duplicate at input {position}")
                sequences[partition] += len(chunk)
                committed = end
                with self.lock:
                    self.commits += 1
                    self.lock.notify_all()
                break
            buffered = [x for x in buffered if x[0] >= committed]


def _landed(service: "Service") -> int:
    """How many kills the service saw land between an append and its answer (a duplicate on resend, or a
    fence after re-registering)."""
    stats = dict(service.stats)
    return stats.get("duplicates", 0) + stats.get("fenced after re-registering", 0)


def test_exactly_once_read_process_write_across_twenty_sigkills(tmp_path: Path) -> None:
    """A service that reads 2,000 records and writes each transformed with ProduceAndCommit, across 20 SIGKILLs of
    the broker at random moments, leaves exactly one copy of each in input order and commits the input end."""
    rng = random.Random(20_240_607)
    broker = BrokerProcess(tmp_path / "data")
    broker.start()
    service: Service | None = None
    started = time.monotonic()
    kill_delays: list[float] = []
    try:
        with grpc.insecure_channel(broker.address, options=CHANNEL_OPTIONS) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            admin.CreateTopic(admin_pb2.CreateTopicRequest(topic=INPUT, partition_count=1), timeout=10)
            admin.CreateTopic(admin_pb2.CreateTopicRequest(topic=OUTPUT, partition_count=OUTPUT_PARTITIONS), timeout=10)
            log = log_pb2_grpc.LogStub(channel)
            for i in range(0, INPUT_RECORDS, 500):
                log.Produce(log_pb2.ProduceRequest(topic=INPUT, partition=0, acks=log_pb2.ACKS_DURABLE, records=[
                    precord(b"click-%05d" % n) for n in range(i, i + 500)]), timeout=10)
        service = Service(broker.address, rng.randrange(1 << 30))
        service.start()
        kill = 0
        while True:
            # The random kill point: after 1-5 calls of this broker life, then anywhere within about one call.
            seen = service.commits
            assert service.wait_commits(seen + rng.randint(0, 4), 20), (
                f"no progress in broker life {kill} (service error {service.error!r}, anomalies {service.anomalies})")
            if kill >= KILLS:
                # Until a kill has landed between an append and its answer (seen once the service has recovered
                # from it), go on killing, up to twice as often: a run where none landed would prove little.
                assert service.wait_commits(service.commits + 1, 20), f"no progress after kill {kill}"
                if _landed(service) or kill >= 2 * KILLS:
                    break
            assert not service.finished, (
                f"the input ran out after {kill} kills: the service finished before the broker was killed {KILLS} "
                f"times (error {service.error!r})")
            delay = rng.uniform(0, 0.005)
            kill_delays.append(delay)
            time.sleep(delay)
            broker.kill()
            broker.start()
            kill += 1
        service.join(60)
        assert not service.is_alive(), "the service did not finish after the last restart"
        assert service.error is None, f"the service failed: {service.error!r}\n{broker.log_tail()}"
        assert not service.anomalies, service.anomalies

        with grpc.insecure_channel(broker.address, options=CHANNEL_OPTIONS) as channel:
            log = log_pb2_grpc.LogStub(channel)
            groups = groups_pb2_grpc.GroupsStub(channel)
            committed = groups.FetchCommittedOffsets(g.FetchCommittedOffsetsRequest(group=GROUP), timeout=10).offsets
            outputs = {p: [r.value for _o, r in fetch_range(log, OUTPUT, p)] for p in range(OUTPUT_PARTITIONS)}
        assert [(c.topic, c.partition, c.offset) for c in committed] == [(INPUT, 0, INPUT_RECORDS)]
        copies = Counter(v for values in outputs.values() for v in values)
        expected = {transform(b"click-%05d" % n) for n in range(INPUT_RECORDS)}
        twice = sorted(v for v, n in copies.items() if n > 1)
        missing = sorted(expected - set(copies))
        assert not twice and not missing and set(copies) == expected, (
            f"{len(twice)} records written twice (e.g. {twice[:5]}), {len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(set(copies) - expected)} unexpected\n{broker.log_tail()}")
        for p, values in outputs.items():
            assert values == sorted(values), f"output partition {p} is not in input order"
        assert all(outputs.values()), f"an output partition stayed empty: {[len(v) for v in outputs.values()]}"
        stats = dict(service.stats)
        print(f"\n{kill} kills ({min(kill_delays) * 1000:.1f}-{max(kill_delays) * 1000:.1f} ms after the 1st-5th "
              f"answer of a broker life), {service.commits} ProduceAndCommit calls answered, {stats}; "
              f"{time.monotonic() - started:.1f} s")
        assert _landed(service), (
            f"no kill of {kill} ever landed between an append and its answer: the test proved little ({stats})")
    finally:
        if service is not None:
            service.abandon.set()
        broker.kill()


# -- status codes, against an in-process broker --------------------------------------------------------


@pytest.fixture
def stubs(server: RunningServer, channel: grpc.Channel, create_topic):  # noqa: ANN001, ANN201
    """(groups, log) stubs on a broker with topics 'in' (1 partition) holding 10 records and 'out' (2)."""
    create_topic("in", 1)
    create_topic("out", 2)
    log = log_pb2_grpc.LogStub(channel)
    log.Produce(log_pb2.ProduceRequest(topic="in", partition=0, acks=log_pb2.ACKS_DURABLE,
                                       records=[precord(b"in-%d" % i) for i in range(10)]), timeout=10)
    return groups_pb2_grpc.GroupsStub(channel), log


def pac(group: str = "g", offset: int | None = 5, fence: int | None = None, topic: str = "out", partition: int = 0,
        values: tuple[bytes, ...] = (b"x",)) -> g.ProduceAndCommitRequest:
    request = g.ProduceAndCommitRequest(
        group=group, produce=log_pb2.ProduceRequest(topic=topic, partition=partition,
                                                    records=[precord(v) for v in values]))
    if offset is not None:
        request.offsets.append(g.OffsetCommit(topic="in", partition=0, offset=offset))
    if fence is not None:
        request.if_committed.append(g.OffsetCommit(topic="in", partition=0, offset=fence))
    return request


def ends(log: log_pb2_grpc.LogStub) -> list[int]:
    return [log.Fetch(log_pb2.FetchRequest(topic="out", partition=p, offset=0), timeout=10).log_end_offset
            for p in range(2)]


def committed(groups: groups_pb2_grpc.GroupsStub, group: str = "g") -> dict[tuple[str, int], int]:
    resp = groups.FetchCommittedOffsets(g.FetchCommittedOffsetsRequest(group=group), timeout=10)
    return {(o.topic, o.partition): o.offset for o in resp.offsets}


def test_if_committed_fences_with_failed_precondition_naming_the_committed_offset(stubs) -> None:  # noqa: ANN001
    """A fence that no longer matches fails with FAILED_PRECONDITION naming the committed offset; nothing is
    appended or committed; the matching fence goes through."""
    groups, log = stubs
    first = groups.ProduceAndCommit(pac(offset=4, fence=-1, values=(b"a", b"b")), timeout=10)
    assert first.produce.partitions[0].base_offset == 0 and committed(groups) == {("in", 0): 4}
    for stale in (-1, 3, 5):
        message = expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups.ProduceAndCommit,
                                pac(offset=9, fence=stale))
        assert "committed offset 4" in message and f"not {stale}" in message, message
    assert ends(log) == [2, 0] and committed(groups) == {("in", 0): 4}
    nxt = groups.ProduceAndCommit(pac(offset=9, fence=4), timeout=10)
    assert nxt.produce.partitions[0].base_offset == 2 and committed(groups) == {("in", 0): 9}


def test_a_group_with_a_live_consume_member_is_refused(stubs, channel: grpc.Channel) -> None:  # noqa: ANN001
    """While the group has a member on a Consume stream ProduceAndCommit fails with FAILED_PRECONDITION and does
    nothing; once the member left it goes through."""
    groups, log = stubs
    member = RawMember(channel, "g", ["in"])
    try:
        member.wait_for(lambda m: bool(m.responses) or m.status is not None, timeout=15, what="the join answer")
        assert member.responses, f"the join failed: {member.status} {member.details!r}"
        before = committed(groups)
        message = expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups.ProduceAndCommit, pac(offset=7))
        assert "Consume stream" in message, message
        assert ends(log) == [0, 0] and committed(groups) == before
    finally:
        member.leave()
        member.half_close()
    member.wait_ended()
    deadline = time.monotonic() + 10
    while True:
        try:
            groups.ProduceAndCommit(pac(offset=7), timeout=10)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION and time.monotonic() < deadline, exc.details()
            time.sleep(0.05)
    assert ends(log) == [1, 0] and committed(groups)[("in", 0)] == 7


def _no_partition() -> g.ProduceAndCommitRequest:
    request = pac()
    request.produce.ClearField("partition")
    return request


def _with(**produce_fields: object) -> Callable[[], g.ProduceAndCommitRequest]:
    def build() -> g.ProduceAndCommitRequest:
        request = pac()
        for name, value in produce_fields.items():
            setattr(request.produce, name, value)
        return request
    return build


def _twice(field: str) -> Callable[[], g.ProduceAndCommitRequest]:
    def build() -> g.ProduceAndCommitRequest:
        request = pac(fence=-1)
        getattr(request, field).append(g.OffsetCommit(topic="in", partition=0, offset=3))
        return request
    return build


BAD_INPUT = {
    "no produce": (lambda: g.ProduceAndCommitRequest(group="g"), "needs `produce`"),
    "no partition": (_no_partition, "set produce.partition"),
    "acks none": (_with(acks=log_pb2.ACKS_NONE), "always durable"),
    "acks leader": (_with(acks=log_pb2.ACKS_LEADER), "always durable"),
    "expected_offset": (_with(expected_offset=0), "does not take expected_offset"),
    "offsets twice": (_twice("offsets"), "listed twice in offsets"),
    "if_committed twice": (_twice("if_committed"), "listed twice in if_committed"),
    "if_committed below -1": (lambda: pac(fence=-2), "-1 (none committed) or more, got -2"),
    "negative offset": (lambda: pac(offset=-1), "committed offset is an integer from 0"),
    "no records": (lambda: pac(values=()), "at least one record"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_invalid_argument_with_a_clear_message(stubs, case: str) -> None:  # noqa: ANN001
    """Each malformed ProduceAndCommit fails with INVALID_ARGUMENT saying what is wrong, and does nothing."""
    groups, log = stubs
    build, wanted = BAD_INPUT[case]
    message = expect_status(grpc.StatusCode.INVALID_ARGUMENT, groups.ProduceAndCommit, build())
    assert wanted in message, f"{case}: {message!r}"
    assert ends(log) == [0, 0] and committed(groups) == {}


@pytest.mark.parametrize("where", ["output topic", "output partition", "offsets topic"])
def test_an_unknown_topic_or_partition_is_not_found(stubs, where: str) -> None:  # noqa: ANN001
    """A missing output topic or partition, or a missing topic among the offsets, fails with NOT_FOUND and does
    nothing."""
    groups, log = stubs
    request = {"output topic": pac(topic="nope"), "output partition": pac(partition=5), "offsets topic": pac()}[where]
    if where == "offsets topic":
        request.offsets[0].topic = "nope"
    message = expect_status(grpc.StatusCode.NOT_FOUND, groups.ProduceAndCommit, request)
    assert "nope" in message or "partition" in message, message
    assert ends(log) == [0, 0] and committed(groups) == {}


def test_an_internal_target_topic_is_permission_denied(stubs) -> None:  # noqa: ANN001
    """ProduceAndCommit to __consumer_offsets fails with PERMISSION_DENIED and appends nothing to it."""
    groups, log = stubs
    end = log.Fetch(log_pb2.FetchRequest(topic="__consumer_offsets", partition=0, offset=0), timeout=10).log_end_offset
    message = expect_status(grpc.StatusCode.PERMISSION_DENIED, groups.ProduceAndCommit, pac(topic="__consumer_offsets"))
    assert "internal" in message and "__consumer_offsets" in message, message
    after = log.Fetch(log_pb2.FetchRequest(topic="__consumer_offsets", partition=0, offset=0), timeout=10).log_end_offset
    assert after == end and committed(groups) == {}


def test_producer_fields_make_a_retry_a_duplicate_and_fence_an_old_epoch(stubs) -> None:  # noqa: ANN001
    """With InitProducer's id: a resent call is answered as a duplicate with the original offset and commits
    nothing new; a wrong sequence is OUT_OF_RANGE; after a new InitProducer the old epoch is FAILED_PRECONDITION."""
    groups, log = stubs
    first_id = log.InitProducer(log_pb2.InitProducerRequest(client_id="svc"), timeout=10)

    def stamped(offset: int, fence: int, sequence: int, epoch: int = first_id.producer_epoch) -> g.ProduceAndCommitRequest:
        request = pac(offset=offset, fence=fence, values=(b"a", b"b"))
        request.produce.producer_id = first_id.producer_id
        request.produce.producer_epoch = epoch
        request.produce.base_sequence = sequence
        return request

    done = groups.ProduceAndCommit(stamped(4, -1, 0), timeout=10).produce.partitions[0]
    retry = groups.ProduceAndCommit(stamped(9, -1, 0), timeout=10).produce.partitions[0]
    assert (done.base_offset, done.duplicate) == (0, False)
    assert (retry.base_offset, retry.record_count, retry.duplicate) == (0, 2, True)
    assert ends(log) == [2, 0] and committed(groups) == {("in", 0): 4}
    message = expect_status(grpc.StatusCode.OUT_OF_RANGE, groups.ProduceAndCommit, stamped(9, 4, 5))
    assert "next sequence expected is 2" in message, message
    second_id = log.InitProducer(log_pb2.InitProducerRequest(client_id="svc"), timeout=10)
    assert (second_id.producer_id, second_id.producer_epoch) == (first_id.producer_id, first_id.producer_epoch + 1)
    message = expect_status(grpc.StatusCode.FAILED_PRECONDITION, groups.ProduceAndCommit, stamped(9, 4, 2))
    assert "fenced" in message, message
    assert ends(log) == [2, 0] and committed(groups) == {("in", 0): 4}
    newer = groups.ProduceAndCommit(stamped(9, 4, 0, epoch=second_id.producer_epoch), timeout=10)
    assert newer.produce.partitions[0].base_offset == 2 and committed(groups) == {("in", 0): 9}
