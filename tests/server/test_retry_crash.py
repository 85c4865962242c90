"""SIGKILL of a broker process while a group's records move between its topic, retry tiers and
dead-letter topic, and in the middle of a redrive (issue 5): after each restart nothing is lost.

Everything goes through plain generated stubs (``RawMember`` for the group member) against a
broker child process that is killed with SIGKILL and restarted on the same data directory and
port.  Duplicates are allowed (delivery is at-least-once) and are counted and printed; losses
fail the test, with the whereabouts of every missing record in the message.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, groups_pb2 as g, groups_pb2_grpc
from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc

from group_helpers import Got, RawMember
from server_helpers import BrokerProcess, fetch_range, precord

TOPIC = "orders"
GROUP = "crm"
TIER_TOPICS = {f"{TOPIC}.{GROUP}.retry.50ms": 2, f"{TOPIC}.{GROUP}.retry.100ms": 3}
"""Retry tier -> the attempt its records are delivered with (max_attempts 3, delays [50, 100])."""
REDRIVE_TOPIC = f"{TOPIC}.{GROUP}.redrive"
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]
"""A fresh channel must not inherit the failed connection of the killed broker from gRPC's
process-wide subchannel pool (its calls would fail at once, in reconnect backoff), and a channel
that outlives a broker reconnects within 250 ms of its restart (the default backoff grows to
minutes)."""


def channel_to(broker: BrokerProcess) -> grpc.Channel:
    return grpc.insecure_channel(broker.address, options=CHANNEL_OPTIONS)


def joined(member: RawMember) -> None:
    """Wait for the answer to the member's join; fail at once if the stream ended instead."""
    member.wait_for(lambda m: bool(m.responses) or m.status is not None, timeout=15, what="the join answer")
    assert member.responses, f"the join failed: {member.status} {member.details!r}"


# -- reading group state -------------------------------------------------------------------------


def dead_letters(stub: groups_pb2_grpc.GroupsStub) -> list[g.DeadLetter]:
    """Every dead letter of GROUP for TOPIC, all pages."""
    out: list[g.DeadLetter] = []
    token = ""
    while True:
        page = stub.ListDeadLetters(
            g.ListDeadLettersRequest(group=GROUP, topic=TOPIC, page_size=1000, page_token=token), timeout=10
        )
        out.extend(page.dead_letters)
        token = page.next_page_token
        if not token:
            return out


def unsettled(stub: groups_pb2_grpc.GroupsStub) -> list[str]:
    """The group's partitions with lag or records in flight (empty once everything is done)."""
    d = stub.DescribeGroup(g.DescribeGroupRequest(group=GROUP), timeout=10)
    return [
        f"{p.topic}/{p.partition}: committed {p.committed_offset} end {p.log_end_offset} "
        f"in flight {p.in_flight_records}"
        for p in d.partitions
        if p.lag or p.in_flight_records
    ]


def locate(channel: grpc.Channel, wanted: set[bytes]) -> str:
    """Where the ``wanted`` values are in every stored topic of TOPIC's family, and the group's
    committed offsets: the diagnosis attached to a loss."""
    admin = admin_pb2_grpc.AdminStub(channel)
    log = log_pb2_grpc.LogStub(channel)
    lines = []
    topics = admin.ListTopics(admin_pb2.ListTopicsRequest(page_size=1000), timeout=10).topics
    for topic in sorted(t.name for t in topics if t.name == TOPIC or t.name.startswith(f"{TOPIC}.")):
        count = next(t.partition_count for t in topics if t.name == topic)
        for p in range(count):
            for offset, rec in fetch_range(log, topic, p):
                if rec.value in wanted:
                    hdrs = {h.name: h.value.decode(errors="replace") for h in rec.headers}
                    lines.append(f"  {rec.value!r} at {topic}/{p}@{offset} attempt={hdrs.get('logstore.attempt')}"
                                 f" due={hdrs.get('logstore.due_ms')}")
    d = groups_pb2_grpc.GroupsStub(channel).DescribeGroup(g.DescribeGroupRequest(group=GROUP), timeout=10)
    lines.extend(f"  committed {p.topic}/{p.partition}: {p.committed_offset} of {p.log_end_offset}"
                 for p in d.partitions)
    return "\n".join(lines[:200])


# -- test 1: random kills while records move between main, retry and DLQ ----------------------------

KILLS = 20
FATES = ("ack", "ack", "retry-once", "retry-twice", "exhaust", "terminal")
"""A record's fate by its index modulo 6: acked at once, acked on attempt 2 (one trip through the
50 ms tier), acked on attempt 3 (both tiers), nacked every time (DLQ after 3 attempts), or nacked
as terminal (DLQ at once)."""
ACKED_FATES = {"ack", "retry-once", "retry-twice"}
DLQ_ATTEMPTS = {"exhaust": 3, "terminal": 1}


def fate(value: bytes) -> str:
    return FATES[int(value[1:]) % len(FATES)]


def verdict(value: bytes, attempt: int) -> str:
    """What the member does with a delivery: ack, nack or terminal (a pure function of the value
    and the attempt, so a restarted member decides exactly as the killed one did)."""
    f = fate(value)
    if f == "terminal":
        return "terminal"
    if f == "exhaust":
        return "nack"
    need = {"ack": 1, "retry-once": 2, "retry-twice": 3}[f]
    return "ack" if attempt >= need else "nack"


@dataclass
class Ledger:
    """What the members (one per broker life) saw and did, over the whole test."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    deliveries: Counter = field(default_factory=Counter)
    acks: Counter = field(default_factory=Counter)
    by_topic: Counter = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)

    def handle(self, member: RawMember, batch: list[Got]) -> None:
        todo: dict[str, list[int]] = {"ack": [], "nack": [], "terminal": []}
        with self.lock:
            for x in batch:
                self.deliveries[x.value] += 1
                self.by_topic[x.topic] += 1
                wanted_attempt = 1 if x.topic == TOPIC else TIER_TOPICS.get(x.topic)
                if x.attempt != wanted_attempt:
                    self.anomalies.append(f"{x.value!r} from {x.topic}/{x.partition}@{x.offset} "
                                          f"with attempt {x.attempt}")
                action = verdict(x.value, x.attempt)
                if action == "ack":
                    self.acks[x.value] += 1
                todo[action].append(x.delivery_id)
        if todo["ack"]:
            member.ack(*todo["ack"])
        if todo["nack"]:
            member.nack(*todo["nack"], reason="mail server down")
        if todo["terminal"]:
            member.send(g.ConsumeRequest(nack=g.Nack(ids=g.DeliveryIds(ids=todo["terminal"]), reason="bad address",
                                                     terminal=True)))


class DurableProducer(threading.Thread):
    """Produces numbered values with ACKS_DURABLE at a steady pace; a request that fails (the broker
    died) is sent again until acknowledged, as a real producer would, so every value it ever
    generated ends up acknowledged (possibly twice in the log)."""

    def __init__(self, address: str, seed: int) -> None:
        super().__init__(daemon=True, name="durable-producer")
        self.address = address
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        """Set: finish the request in hand, then end."""
        self.abandon = threading.Event()
        """Set: end at once (teardown after a failure)."""
        self.produced: list[bytes] = []
        self.failed_attempts = 0
        """Produce calls that failed (broker down) and were made again."""
        self.pending: list[bytes] = []

    def run(self) -> None:
        n = 0
        with grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            log = log_pb2_grpc.LogStub(channel)
            while not self.stop.is_set():
                self.pending = [b"m%06d" % (n + i) for i in range(self.rng.randint(1, 20))]
                n += len(self.pending)
                request = log_pb2.ProduceRequest(topic=TOPIC, acks=log_pb2.ACKS_DURABLE, records=[
                    precord(v, key=b"k%d" % (int(v[1:]) % 40)) for v in self.pending])
                while True:
                    try:
                        log.Produce(request, timeout=3)
                        break
                    except grpc.RpcError:
                        if self.abandon.wait(0.05):
                            return
                        self.failed_attempts += 1
                self.produced.extend(self.pending)
                self.pending = []
                time.sleep(self.rng.uniform(0.005, 0.03))


def test_every_record_is_acked_or_dead_lettered_across_twenty_sigkills(tmp_path: Path) -> None:
    """Across 20 SIGKILLs at random moments of a retrying group, every durably produced record is
    acked by the member or in the DLQ, as its processing rule says; none is lost."""
    rng = random.Random(5_2024)
    broker = BrokerProcess(tmp_path / "data")
    broker.start()
    channel = channel_to(broker)
    ledger = Ledger()
    member: RawMember | None = None
    producer = DurableProducer(broker.address, rng.randrange(1 << 30))
    kill_delays: list[float] = []
    started = time.monotonic()
    try:
        admin_pb2_grpc.AdminStub(channel).CreateTopic(admin_pb2.CreateTopicRequest(topic=TOPIC, partition_count=3),
                                                      timeout=10)
        groups_pb2_grpc.GroupsStub(channel).SetRetryPolicy(g.SetRetryPolicyRequest(
            group=GROUP, topic=TOPIC, policy=g.RetryPolicy(max_attempts=3, delays_ms=[50, 100])), timeout=10)
        producer.start()
        for _kill in range(KILLS):
            member = RawMember(channel, GROUP, [TOPIC], on_delivery=ledger.handle)
            joined(member)
            delay = rng.uniform(0.05, 0.8)
            kill_delays.append(delay)
            time.sleep(delay)  # the random kill point: records are moving all the time
            broker.kill()
            assert member.wait_ended() != grpc.StatusCode.OK, "the Consume stream ended cleanly under SIGKILL"
            member.half_close()
            channel.close()
            broker.start()
            channel = channel_to(broker)
        # The last life: no more kills; stop producing and run until everything settled.
        member = RawMember(channel, GROUP, [TOPIC], on_delivery=ledger.handle)
        joined(member)
        producer.stop.set()
        producer.join(15)
        assert not producer.is_alive() and not producer.pending, "the producer could not finish its last request"
        produced = set(producer.produced)
        assert len(produced) == len(producer.produced), "the producer generated a value twice"
        want_acked = {v for v in produced if fate(v) in ACKED_FATES}
        want_dead = produced - want_acked
        stub = groups_pb2_grpc.GroupsStub(channel)
        deadline = time.monotonic() + 30
        while True:
            with ledger.lock:
                missing_acks = want_acked - set(ledger.acks)
            letters = dead_letters(stub)
            missing_dead = want_dead - {d.record.value for d in letters}
            busy = unsettled(stub)
            if (not missing_acks and not missing_dead and not busy) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        settle_s = time.monotonic() - started
        dead_values = Counter(d.record.value for d in letters)
        extra_acks = sum(n - 1 for n in ledger.acks.values())
        twice_acked = sum(1 for n in ledger.acks.values() if n > 1)
        print(
            f"\n{KILLS} kills (delays {min(kill_delays):.2f}-{max(kill_delays):.2f} s), {len(produced)} records "
            f"produced ({producer.failed_attempts} failed produce calls made again), "
            f"{sum(ledger.deliveries.values())} deliveries by topic {dict(ledger.by_topic)}; duplicates: "
            f"{extra_acks} extra acks over {twice_acked} records, {sum(n - 1 for n in dead_values.values())} extra "
            f"dead letters; settled {settle_s:.1f} s after start"
        )
        assert not missing_acks and not missing_dead, (
            f"LOST: {len(missing_acks)} records never acked ({sorted(missing_acks)[:10]}), {len(missing_dead)} "
            f"never dead-lettered ({sorted(missing_dead)[:10]}) of {len(produced)}; where they are:\n"
            f"{locate(channel, set(sorted(missing_acks)[:10]) | set(sorted(missing_dead)[:10]))}\n{broker.log_tail()}"
        )
        assert not busy, f"records still in flight or in retry after the run: {busy}"
        wrongly_dead = sorted(v for v in dead_values if v in want_acked)
        assert not wrongly_dead, f"records the member would ack were dead-lettered: {wrongly_dead[:10]}"
        assert set(dead_values) <= produced, "the DLQ holds values nobody produced"
        for d in letters:
            f = fate(d.record.value)
            assert (d.origin_topic, d.attempts, d.error) == (
                TOPIC, DLQ_ATTEMPTS[f], "bad address" if f == "terminal" else "mail server down"
            ), f"dead letter {d.record.value!r} ({f}) has provenance {d.origin_topic} attempts={d.attempts} {d.error!r}"
        assert not ledger.anomalies, f"deliveries with the wrong attempt for their tier: {ledger.anomalies[:10]}"
        assert len(produced) >= 300 and all(ledger.by_topic[t] for t in TIER_TOPICS), (
            f"too little traffic to mean anything: {len(produced)} records, by topic {dict(ledger.by_topic)}"
        )
    finally:
        producer.abandon.set()
        producer.stop.set()
        if member is not None:
            member.half_close()
        channel.close()
        broker.kill()


# -- test 2: a kill in the middle of a redrive ---------------------------------------------------

DEAD = 2000


def test_a_redrive_cut_by_sigkill_is_resumed_and_loses_no_dead_letter(tmp_path: Path) -> None:
    """A redrive killed midway and called again after the restart delivers every one of 2,000 dead
    letters again (duplicates at most the chunk in flight) and leaves the DLQ empty."""
    rng = random.Random(7_2024)
    broker = BrokerProcess(tmp_path / "data")
    broker.start()
    channel = channel_to(broker)
    member: RawMember | None = None
    try:
        stub = groups_pb2_grpc.GroupsStub(channel)
        admin_pb2_grpc.AdminStub(channel).CreateTopic(admin_pb2.CreateTopicRequest(topic=TOPIC, partition_count=2),
                                                      timeout=10)
        stub.SetRetryPolicy(g.SetRetryPolicyRequest(group=GROUP, topic=TOPIC, policy=g.RetryPolicy(
            max_attempts=3, delays_ms=[50])), timeout=10)
        values = [b"r%05d" % i for i in range(DEAD)]
        log = log_pb2_grpc.LogStub(channel)
        for i in range(0, DEAD, 200):
            log.Produce(log_pb2.ProduceRequest(topic=TOPIC, acks=log_pb2.ACKS_DURABLE, records=[
                precord(v, key=b"k%d" % (int(v[1:]) % 40)) for v in values[i:i + 200]]), timeout=10)

        def terminal_nack_all(m: RawMember, batch: list[Got]) -> None:
            m.send(g.ConsumeRequest(nack=g.Nack(ids=g.DeliveryIds(ids=[x.delivery_id for x in batch]),
                                                reason="bad address", terminal=True)))

        member = RawMember(channel, GROUP, [TOPIC], on_delivery=terminal_nack_all)
        deadline = time.monotonic() + 30
        while len(dead_letters(stub)) < DEAD or unsettled(stub):
            assert time.monotonic() < deadline, f"dead-lettering stalled: {len(dead_letters(stub))} {unsettled(stub)}"
            time.sleep(0.1)
        member.leave()
        member.wait_ended()
        assert sorted(d.record.value for d in dead_letters(stub)) == values

        # Redrive at 500/s and kill the broker once progress shows some but not all.
        kill_at = rng.randint(DEAD // 5, DEAD * 7 // 10)
        kill_delay = rng.uniform(0, 0.2)
        progress: list[tuple[int, int]] = []
        stream = stub.RedriveDeadLetters(g.RedriveDeadLettersRequest(group=GROUP, topic=TOPIC, records_per_second=500))
        ended: grpc.StatusCode | None = None
        try:
            for resp in stream:
                progress.append((resp.redriven, resp.total))
                if resp.redriven >= kill_at and broker.proc is not None:
                    time.sleep(kill_delay)  # anywhere in the chunk cycle: pacing, append, cursor move
                    broker.kill()
        except grpc.RpcError as exc:
            ended = exc.code()
        assert progress and progress[0][1] == DEAD, f"the redrive did not start with {DEAD} to do: {progress[:1]}"
        before_kill = progress[-1][0]
        assert DEAD // 5 <= before_kill < DEAD, f"the kill did not land mid-redrive: progress {progress[-3:]}"
        assert ended is not None and ended != grpc.StatusCode.OK, "the redrive stream ended cleanly under SIGKILL"
        steps = [b[0] - a[0] for a, b in zip(progress, progress[1:])]
        chunk = max(steps)

        broker.start()
        channel.close()
        channel = channel_to(broker)
        stub = groups_pb2_grpc.GroupsStub(channel)
        left = len(dead_letters(stub))
        assert left <= DEAD - before_kill, f"{left} dead letters left, but {before_kill} were reported redriven"
        calls = []
        for _ in range(5):
            again = [(r.redriven, r.total) for r in stub.RedriveDeadLetters(
                g.RedriveDeadLettersRequest(group=GROUP, topic=TOPIC, records_per_second=2000), timeout=30)]
            calls.append(again[-1])
            if again[-1][0] == again[-1][1]:
                break
        assert calls[-1][0] == calls[-1][1], f"the redrive never reported done: {calls}"
        assert calls[0][1] == left, f"the resumed redrive counts {calls[0][1]} to do, ListDeadLetters showed {left}"

        # Consume the redrive path with a member that acks everything.
        member = RawMember(channel, GROUP, [TOPIC], on_delivery=lambda m, batch: m.ack(*(x.delivery_id for x in batch)))
        deadline = time.monotonic() + 20
        while True:
            got = member.snapshot()
            missing = set(values) - {x.value for x in got if x.topic == REDRIVE_TOPIC}
            busy = unsettled(stub)
            if (not missing and not busy) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not missing, (
            f"LOST: {len(missing)} of {DEAD} dead letters never delivered again after the redrive "
            f"(killed at {before_kill}, resumed calls {calls}), e.g. {sorted(missing)[:10]}; where they are:\n"
            f"{locate(channel, set(sorted(missing)[:10]))}\n{broker.log_tail()}"
        )
        assert not busy, f"the group did not settle: {busy}"
        assert dead_letters(stub) == [], "dead letters remain after the redrive"
        assert {x.topic for x in got} == {REDRIVE_TOPIC}, f"not only redriven records: {Counter(x.topic for x in got)}"
        assert {x.attempt for x in got} == {1}, "a redriven record's attempts were not reset"
        redriven_log = sum(len(fetch_range(log_pb2_grpc.LogStub(channel), REDRIVE_TOPIC, p)) for p in range(2))
        repeats = redriven_log - DEAD
        print(f"\nredrive killed after progress {before_kill}/{DEAD} (chunks of {chunk}); resumed with "
              f"{calls[0][1]} to do in {len(calls)} call(s); {repeats} records redriven twice; "
              f"{len(got) - DEAD} duplicate deliveries")
        assert 0 <= repeats <= chunk, f"{repeats} dead letters redriven twice; at most the chunk in flight ({chunk})"
    finally:
        if member is not None:
            member.half_close()
        channel.close()
        broker.kill()
