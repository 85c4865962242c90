"""Consumer-group benchmark: one group consumes 1,000,000 records and acks every one, against peers.

Run it as::

    python benchmarks/group_bench.py                     # 1,000,000 records, peers too: about 3 minutes
    python benchmarks/group_bench.py --quick             # 100,000 records, 2 s latency runs: about 1 minute
    python benchmarks/group_bench.py --peers ''          # logstore only
    python benchmarks/group_bench.py --members 1,2,4 --peers redis --max-in-flight 1000

Systems, each consumed by one group of 1 and of 4 members (``--members``).
Every member is its own process (``multiprocessing``, spawn), so members,
broker and producer never share a GIL; they do share the machine's cores
(2 on the development VM: 4 members there run at most 2 at a time).

- logstore: the broker is ``python -m logstore serve`` in its own process
  (``broker_bench.running_broker``), the topic has 8 partitions, each
  member is a ``logstore.client.Consumer`` (one ``Consume`` stream,
  ``max_in_flight=LOGSTORE_MAX_IN_FLIGHT`` (``--max-in-flight``),
  ``ack_deadline_ms=ACK_DEADLINE_MS``, at-least-once, partition_ordered).
  Two consume loops, a row each:

  - ``for batch in consumer.batches(): <each record>; batch.ack()``: the
    headline.  It acks every record, as one delivery-id range per delivery;
    the client coalesces acks into requests (``ack_flush_ms``, 5 ms, or at
    once when half of ``max_in_flight`` is acked).
  - ``for msg in consumer: <the record>; msg.ack()``: one ack call per record
    (the client still coalesces the ids into ranges on the stream).

- Redis Streams: the server of ``peers.RedisPeer`` (AOF, fsync every
  second), 8 streams ``bench:0..7``.  Each member is a consumer ``cN`` of
  the group and loops on ``XREADGROUP GROUP g cN COUNT REDIS_COUNT BLOCK 100
  STREAMS bench:0..7 > ...`` (redis-py ``xreadgroup`` with hiredis), walks the
  reply record by record, and acks the ids of each page with one ``XACK
  bench:p g id id ...`` per stream, pipelined with the next ``XREADGROUP``
  (one round trip per page).
- NATS JetStream: the server of ``peers.NatsPeer`` (file storage), one
  stream with the subjects ``bench.0..7``, one durable pull consumer
  (explicit ack, ``ack_wait`` = ``ACK_DEADLINE_MS``,
  ``max_ack_pending=NATS_MAX_ACK_PENDING``) shared by the members.  Each
  member loops on nats-py's ``fetch(NATS_BATCH)`` and ``await msg.ack()``
  for every message.  In the throughput runs the fetch has no timeout
  (nats-py then waits for each message without an asyncio timer: twice the
  rate of a fetch with a timeout here, and close to the issue's anchor; the
  member notices the end itself).  In the latency runs it has
  ``NATS_LAT_FETCH_TIMEOUT_S`` (5 ms), because a fetch without a timeout that
  finds nothing waits until a whole batch has arrived.

Records: record ``i`` has key ``k{i % 1000}`` and a 100-byte value whose
bytes 0..7 are ``i`` and 8..15 a send time stamp (both little-endian; the
stamp is 0 in the throughput runs); the rest is filler.  logstore partitions
by key (the Producer's murmur2); the peers by ``crc32(key) % 8``
(``peers.KEY_PARTITION``).  Each member decodes bytes 0..7 of every record
it receives and counts the receipt in a per-record table: that is all the
"processing" (the same in every system), and how the script checks
correctness.

Runs, for each system and each member count, each with a fresh group:

1. Throughput.  The records are loaded once per system before anything is
   timed (logstore ``Producer.send_many``, Redis pipelined ``XADD``, NATS
   ``publish_async``); each run is a new group over the same records.  The
   members connect first, then are told to go; the clock runs from "go" to
   the last record any member received and acked (its ack call: the broker
   may apply the last acks a moment later; the check below waits for that).
   For logstore "go" is a ``SeekGroup`` to earliest: the members join with
   ``start="latest"`` (nothing to deliver), the script waits until
   ``DescribeGroup`` shows every member with partitions and all 8 owned,
   then seeks, so members joining one by one (and the rebalances that
   causes) are not measured.  For the peers "go" is an event the members
   wait on.  records/s = records / that time; MB/s counts 10**6 bytes of
   values (the 100 B value, nothing else).  A member stops after ``IDLE_S``
   without a record; that idle tail is not timed.
2. Delivery latency ("e2e").  A fresh empty topic (streams), a fresh group,
   the same members and loop, and a producer process that sends
   ``--latency-rate`` records/s (``LAT_RATE``, 1,000) for ``LAT_WARMUP_S +
   LAT_SECONDS`` (every ~1 ms it sends what is due).  Just before handing a
   record to its client (logstore ``Producer.send`` with ``linger_ms=0``;
   Redis ``XADD``, one pipeline per tick; NATS ``js.publish_async``) it
   writes ``time.monotonic_ns()`` into bytes 8..15; the member takes
   ``monotonic_ns() - stamp`` when its loop reaches the record, before the
   ack, for every record sent after the warm-up.  CLOCK_MONOTONIC is one
   clock for every process of a Linux machine, so this is the time from the
   produce call to the consumer's receipt.  Percentiles are nearest-rank.

Checks (a failed check marks the row FAILED): every record reached some
member at least once (``missing`` counts the ones that did not); duplicates
(receipts beyond the first, all members together) are counted (none are
expected: the group is stable and deadlines are 60 s); and the broker
agrees that everything was acked: logstore's ``DescribeGroup`` shows the
committed offset at the log end of every partition, Redis ``XPENDING`` is 0
and ``XINFO GROUPS`` lag 0 on every stream, NATS ``consumer_info`` has no
pending and no unacknowledged messages.  The table also shows CPU: the
members' (together) and the server's, each divided by the timed seconds
("cores"), and the server's per record.  Both CPU figures run until the
members stopped, so they include the idle second at the end.

What this does NOT tell you:
- What each server can do: every client is pure Python (logstore's
  Consumer, redis-py, nats-py), one process per member, on the same 2 cores
  as the server, so client CPU and thread hand-offs are much of each
  number; with 4 members on 2 cores the 4-member rows measure contention,
  not scaling.  Each number is one run; on a shared 2-core VM runs move by
  20-30 % (more when anything else runs: the load average is printed before
  and after).
- That the acks mean the same thing.  Redis keeps a pending-entries list
  but never redelivers by itself (a consumer must ``XAUTOCLAIM``), and with
  its AOF on every delivery and every ack is also written to the AOF (that
  cost it a quarter to a third of its rate in trial runs here).  JetStream redelivers after
  ``ack_wait``.  logstore redelivers after the ack deadline and writes the
  contiguous acked prefix as the group's committed offset (fsynced, shortly
  after the acks; neither the ack nor the next delivery waits for it).
  Order differs too: logstore and Redis deliver per partition / stream in
  order, one JetStream consumer spans the whole stream.
- Anything about failures, redelivery, rebalancing, key_ordered delivery or
  cold reads: nothing fails or is nacked, the group is formed before the
  clock starts, and the records were just written (page cache warm).
- How other client settings would do.  Each system gets one sensible
  setting (``LOGSTORE_MAX_IN_FLIGHT``, ``REDIS_COUNT``, ``NATS_BATCH``),
  chosen by a few trial runs.  logstore depends on it most: a member's
  throughput is bounded by ``max_in_flight`` records per ack round trip, so
  the Consumer's default of 1,000 gives about a third of the rate of 10,000
  here (``--max-in-flight 1000``).
- Latency under load or across machines: the latency runs are at a low
  rate on one machine (one clock).  At 10,000 records/s
  (``--latency-rate 10000``) the 2 cores are busy (with ``linger_ms=0`` the
  logstore producer sends a request per record or two, which cost the
  broker about 50 us of CPU per record in trial runs), and queueing
  dominates the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import queue
import struct
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

_BENCH_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_DIR.parent
for _path in (str(_REPO_ROOT), str(_BENCH_DIR)):
    if _path not in sys.path:
        # Run as a plain script from a checkout (and in spawned members): make ``logstore`` and ``peers`` importable.
        sys.path.insert(0, _path)

import broker_bench  # noqa: E402
import peers  # noqa: E402

PARTITIONS = peers.PARTITIONS
VALUE_SIZE = peers.VALUE_SIZE
KEY_SPACE = peers.KEY_SPACE
KEYS = tuple(key.encode() for key in peers.KEYS)
KEY_PARTITION = peers.KEY_PARTITION
DEFAULT_RECORDS = peers.DEFAULT_RECORDS
QUICK_RECORDS = peers.QUICK_RECORDS
MB = 1_000_000
LOOPBACK = "127.0.0.1"

# Record value layout (every system).
_TAG = struct.Struct("<Qq")  # bytes 0..7: record index; 8..15: monotonic_ns() just before the send (0: none)
_STAMP_AT = struct.calcsize("<Q")  # the stamp's offset in the value
assert _TAG.size == 16 and _STAMP_AT == 8
_FILLER = peers.VALUE[_TAG.size :]
assert _TAG.size + len(_FILLER) == VALUE_SIZE

LOGSTORE_MAX_IN_FLIGHT = 10_000  # Join.max_in_flight_records per member
ACK_DEADLINE_MS = 60_000  # nothing may be redelivered during a run, even on a slow machine
REDIS_COUNT = 100  # XREADGROUP COUNT, per stream (100..1,000 measured alike; 100 was a little faster)
REDIS_BLOCK_MS = 100
NATS_BATCH = 1_000
NATS_LAT_FETCH_TIMEOUT_S = 0.005  # latency phase: a fetch returns what arrived within 5 ms
NATS_MAX_ACK_PENDING = 20_000  # the server's default (1,000) would starve 4 members fetching 1,000 each

IDLE_S = 1.0  # a member stops after this long without records (once it had one); not timed
LAT_RATE = 1_000  # records/s in the latency phase (--latency-rate)
LAT_SECONDS = 5.0
QUICK_LAT_SECONDS = 2.0
LAT_WARMUP_S = 0.5
_TICK_NS = 1_000_000  # the latency producer sends what is due every millisecond
_SPAWN_TIMEOUT_S = 120.0
_STABLE_TIMEOUT_S = 60.0
_CHECK_TIMEOUT_S = 20.0
_PRELOAD_CHUNK = 50_000

TARGET = 400_000  # records/s, for 1 and for 4 members (issue 4)
ANCHORS = {"redis": 268_000, "nats": 38_000}  # the measurements of the peers on this machine
SYSTEM_NAMES = {"logstore": "logstore", "redis": "Redis", "nats": "NATS"}


def bulk_value(i: int) -> bytes:
    return _TAG.pack(i, 0) + _FILLER


def _log(line: str) -> None:
    print(line, flush=True)


class BenchError(Exception):
    """A run could not be measured or its result is wrong."""


# --------------------------------------------------------------------------- member processes


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """What one member process does."""

    system: str  # "logstore" | "redis" | "nats"
    style: str  # logstore: "batch" | "message"; peers: ""
    address: str  # HOST:PORT of the server
    group: str
    topic: str  # logstore topic / Redis stream prefix / NATS stream
    member: int
    size: int  # records in the run (the size of the receipt table)
    warmup: int | None  # latency phase: indexes below it are not measured; None: throughput phase
    timeout_s: float  # give up this long after starting to consume
    tuning: int = 0  # logstore max_in_flight / Redis COUNT / NATS fetch batch; 0: the module's constant


@dataclass(frozen=True, slots=True)
class ProducerSpec:
    """The latency phase's paced producer."""

    system: str
    address: str
    topic: str
    total: int
    rate: int
    linger_ms: float = 0.0  # logstore Producer only


@dataclass(slots=True)
class MemberResult:
    member: int
    seen: bytes  # receipts per record index (at most 255: the latency loop saturates, the throughput loop raises)
    first_ns: int  # monotonic_ns of the first record (0: none)
    last_ns: int  # monotonic_ns after the last record was acked
    cpu_s: float  # this process, from ready to done
    latencies_ns: list[int]
    stale: int = 0
    note: str = ""


@dataclass(slots=True)
class ProducerResult:
    sent: int
    span_ns: int
    max_behind_ns: int
    cpu_s: float = 0.0  # the producer process over the paced sending


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _member_main(spec: MemberSpec, go, stop, out) -> None:  # noqa: ANN001 - multiprocessing objects
    """Entry point of a member process: report ready, consume, report the result (or the error)."""
    try:
        run = {"logstore": _logstore_member, "redis": _redis_member, "nats": _nats_member}[spec.system]
        result = run(spec, go, stop, lambda: out.put(("ready", f"member {spec.member}", None)))
        out.put(("done", f"member {spec.member}", result))
    except BaseException:  # noqa: BLE001 - reported to the parent
        out.put(("error", f"member {spec.member}", traceback.format_exc()))


def _count(seen: bytearray, index: int) -> None:
    if seen[index] < 255:
        seen[index] += 1


def _logstore_member(spec: MemberSpec, go, stop, ready: Callable[[], None]) -> MemberResult:  # noqa: ANN001
    from logstore.client import Consumer

    seen = bytearray(spec.size)
    latencies: list[int] = []
    unpack_from = _TAG.unpack_from
    now_ns = time.monotonic_ns
    measure = spec.warmup is not None
    warmup = spec.warmup or 0
    first = 0
    last = 0
    consumer = Consumer(
        spec.address,
        group=spec.group,
        topics=[spec.topic],
        max_in_flight=spec.tuning or LOGSTORE_MAX_IN_FLIGHT,
        ack_deadline_ms=ACK_DEADLINE_MS,
        start="earliest" if measure else "latest",
        client_id=f"bench-{spec.member}",
    )
    cpu0 = time.process_time()
    ready()
    started = now_ns()
    done = threading.Event()

    def watchdog() -> None:
        # Ends the iteration (close() flushes the acks, then leaves) once the member went idle.
        while not done.wait(0.05):
            now = now_ns()
            if (last and now - last > IDLE_S * 1e9) or stop.is_set() or now - started > spec.timeout_s * 1e9:
                break
        consumer.close()

    watcher = threading.Thread(target=watchdog, name="bench-watchdog", daemon=True)
    watcher.start()
    try:
        if spec.style == "batch":
            for batch in consumer.batches():
                if not first:
                    first = now_ns()
                if measure:
                    for msg in batch:
                        index, stamp = unpack_from(msg.value)
                        if index >= warmup:
                            latencies.append(now_ns() - stamp)
                        _count(seen, index)
                else:
                    for msg in batch:
                        seen[unpack_from(msg.value)[0]] += 1
                batch.ack()
                last = now_ns()
        else:
            for msg in consumer:
                if measure:
                    index, stamp = unpack_from(msg.value)
                    if index >= warmup:
                        latencies.append(now_ns() - stamp)
                    _count(seen, index)
                else:
                    seen[unpack_from(msg.value)[0]] += 1
                msg.ack()
                last = now_ns()
                if not first:
                    first = last
    finally:
        done.set()
        watcher.join()
        consumer.close()
    return MemberResult(
        spec.member, bytes(seen), first, last, time.process_time() - cpu0, latencies, consumer.stale_count
    )


def _redis_member(spec: MemberSpec, go, stop, ready: Callable[[], None]) -> MemberResult:  # noqa: ANN001
    import redis

    client = redis.Redis(host=LOOPBACK, port=_port(spec.address), socket_timeout=60)
    client.ping()
    streams = {f"{spec.topic}:{p}": ">" for p in range(PARTITIONS)}
    name = f"c{spec.member}"
    group = spec.group
    count = spec.tuning or REDIS_COUNT
    seen = bytearray(spec.size)
    latencies: list[int] = []
    unpack_from = _TAG.unpack_from
    now_ns = time.monotonic_ns
    measure = spec.warmup is not None
    warmup = spec.warmup or 0
    first = last = 0
    acked = 0
    cpu0 = time.process_time()
    ready()
    go.wait()
    started = now_ns()
    pipe = client.pipeline(transaction=False)
    acks: list[tuple[bytes, list[bytes]]] = []
    try:
        while True:
            for stream, ids in acks:
                pipe.xack(stream, group, *ids)
            pipe.xreadgroup(group, name, streams, count=count, block=REDIS_BLOCK_MS)
            replies = pipe.execute()
            acked += sum(replies[:-1])
            page = replies[-1]
            acks = []
            if page:
                if not first:
                    first = now_ns()
                for stream, entries in page:
                    ids = []
                    if measure:
                        for entry_id, fields in entries:
                            (value,) = fields.values()
                            index, stamp = unpack_from(value)
                            if index >= warmup:
                                latencies.append(now_ns() - stamp)
                            _count(seen, index)
                            ids.append(entry_id)
                    else:
                        for entry_id, fields in entries:
                            (value,) = fields.values()
                            seen[unpack_from(value)[0]] += 1
                            ids.append(entry_id)
                    acks.append((stream, ids))
                last = now_ns()  # the acks leave with the next XREADGROUP, in the same write
                continue
            now = now_ns()
            if (last and now - last > IDLE_S * 1e9) or stop.is_set() or now - started > spec.timeout_s * 1e9:
                break
    finally:
        client.close()
    return MemberResult(spec.member, bytes(seen), first, last, time.process_time() - cpu0, latencies,
                        note=f"XACK acked {acked:,}")


def _nats_member(spec: MemberSpec, go, stop, ready: Callable[[], None]) -> MemberResult:  # noqa: ANN001
    return asyncio.run(_nats_member_async(spec, go, stop, ready))


async def _nats_member_async(spec: MemberSpec, go, stop, ready: Callable[[], None]) -> MemberResult:  # noqa: ANN001
    import nats
    import nats.errors

    nc = await nats.connect(f"nats://{spec.address}", allow_reconnect=False)
    seen = bytearray(spec.size)
    latencies: list[int] = []
    unpack_from = _TAG.unpack_from
    now_ns = time.monotonic_ns
    measure = spec.warmup is not None
    warmup = spec.warmup or 0
    first = last = 0
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(durable=spec.group, stream=spec.topic)
        cpu0 = time.process_time()
        ready()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        started = now_ns()
        fetch = sub.fetch
        # Throughput: fetch(timeout=None) -- nats-py then waits for each message without a timer
        # (about 2x the rate of a fetch with a timeout here); this loop watches for idleness itself
        # and cancels a fetch only when nothing arrived for IDLE_S (only when the consumer has
        # nothing left to deliver, so no message is lost in the cancelled fetch).  Latency: a
        # fetch with a short timeout, which returns what arrived by then.
        fetch_timeout = NATS_LAT_FETCH_TIMEOUT_S if measure else None
        batch = spec.tuning or NATS_BATCH
        pending: asyncio.Future | None = None
        while True:
            if pending is None:
                pending = asyncio.ensure_future(fetch(batch, timeout=fetch_timeout))
            done, _ = await asyncio.wait((pending,), timeout=0.1)
            if not done:
                now = now_ns()
                if (last and now - last > IDLE_S * 1e9) or stop.is_set() or now - started > spec.timeout_s * 1e9:
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
                    break
                continue
            finished, pending = pending, None
            try:
                msgs = finished.result()
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                msgs = []
            if not msgs:  # the fetch timed out (or found nothing)
                now = now_ns()
                if (last and now - last > IDLE_S * 1e9) or stop.is_set() or now - started > spec.timeout_s * 1e9:
                    break
                continue
            if not first:
                first = now_ns()
            if measure:
                for msg in msgs:
                    index, stamp = unpack_from(msg.data)
                    if index >= warmup:
                        latencies.append(now_ns() - stamp)
                    _count(seen, index)
                    await msg.ack()
            else:
                for msg in msgs:
                    seen[unpack_from(msg.data)[0]] += 1
                    await msg.ack()
            last = now_ns()
        await nc.flush()
        cpu = time.process_time() - cpu0
    finally:
        await nc.close()
    return MemberResult(spec.member, bytes(seen), first, last, cpu, latencies)


# --------------------------------------------------------------------------- the latency producer


def _producer_main(spec: ProducerSpec, go, stop, out) -> None:  # noqa: ANN001
    """Entry point of the latency phase's producer process."""
    try:
        run = {"logstore": _logstore_producer, "redis": _redis_producer, "nats": _nats_producer}[spec.system]
        result = run(spec, go, lambda: out.put(("ready", "producer", None)))
        out.put(("done", "producer", result))
    except BaseException:  # noqa: BLE001 - reported to the parent
        out.put(("error", "producer", traceback.format_exc()))


def _paced(spec: ProducerSpec, send_due: Callable[[int, int], None], sleep: Callable[[float], None]) -> ProducerResult:
    """Call send_due(first, stop) for the records due every tick, ``spec.rate`` a second in all."""
    interval = 1_000_000_000 / spec.rate
    now_ns = time.monotonic_ns
    cpu0 = time.process_time()
    t0 = now_ns()
    sent = 0
    behind = 0
    while sent < spec.total:
        now = now_ns()
        due = min(spec.total, int((now - t0) / interval) + 1)
        if due <= sent:
            sleep(max(0.0, min(_TICK_NS, t0 + sent * interval - now)) / 1e9)
            continue
        behind = max(behind, int(now - (t0 + sent * interval)))
        send_due(sent, due)
        sent = due
    return ProducerResult(sent, now_ns() - t0, behind, time.process_time() - cpu0)


def _logstore_producer(spec: ProducerSpec, go, ready: Callable[[], None]) -> ProducerResult:  # noqa: ANN001
    from logstore.client import Producer

    pack = _TAG.pack
    now_ns = time.monotonic_ns
    with Producer(spec.address, acks="leader", linger_ms=spec.linger_ms) as producer:
        # Open the stream and look up the topic before pacing starts, with a record the members never see.
        producer.send(f"{spec.topic}-warm", _FILLER).result(30)
        send = producer.send
        topic = spec.topic

        def send_due(first: int, stop: int) -> None:
            for i in range(first, stop):
                send(topic, pack(i, now_ns()) + _FILLER, key=KEYS[i % KEY_SPACE])

        ready()
        go.wait()
        result = _paced(spec, send_due, time.sleep)
        if producer.flush(60):
            raise BenchError("the latency producer's records were not all acknowledged")
    return result


def _redis_producer(spec: ProducerSpec, go, ready: Callable[[], None]) -> ProducerResult:  # noqa: ANN001
    import redis

    client = redis.Redis(host=LOOPBACK, port=_port(spec.address), socket_timeout=60)
    client.ping()
    pack = _TAG.pack
    now_ns = time.monotonic_ns
    streams = [f"{spec.topic}:{p}" for p in range(PARTITIONS)]
    pipe = client.pipeline(transaction=False)
    command = pipe.execute_command

    def send_due(first: int, stop: int) -> None:
        for i in range(first, stop):
            k = i % KEY_SPACE
            command("XADD", streams[KEY_PARTITION[k]], "*", KEYS[k], pack(i, now_ns()) + _FILLER)
        pipe.execute()

    try:
        ready()
        go.wait()
        return _paced(spec, send_due, time.sleep)
    finally:
        client.close()


def _nats_producer(spec: ProducerSpec, go, ready: Callable[[], None]) -> ProducerResult:  # noqa: ANN001
    return asyncio.run(_nats_producer_async(spec, go, ready))


async def _nats_producer_async(spec: ProducerSpec, go, ready: Callable[[], None]) -> ProducerResult:  # noqa: ANN001
    import nats

    nc = await nats.connect(f"nats://{spec.address}", allow_reconnect=False)
    try:
        js = nc.jetstream(publish_async_max_pending=peers._NATS_MAX_PENDING)
        pack = _TAG.pack
        now_ns = time.monotonic_ns
        subjects = [f"{spec.topic}.{p}" for p in range(PARTITIONS)]
        ready()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        interval = 1_000_000_000 / spec.rate
        cpu0 = time.process_time()
        t0 = now_ns()
        sent = 0
        behind = 0
        while sent < spec.total:  # _paced, with awaits
            now = now_ns()
            due = min(spec.total, int((now - t0) / interval) + 1)
            if due <= sent:
                await asyncio.sleep(max(0.0, min(_TICK_NS, t0 + sent * interval - now)) / 1e9)
                continue
            behind = max(behind, int(now - (t0 + sent * interval)))
            for i in range(sent, due):
                await js.publish_async(subjects[KEY_PARTITION[i % KEY_SPACE]], pack(i, now_ns()) + _FILLER)
            sent = due
        await js.publish_async_completed()
        return ProducerResult(sent, now_ns() - t0, behind, time.process_time() - cpu0)
    finally:
        await nc.close()


# --------------------------------------------------------------------------- running a team of processes


class _Team:
    """Spawned member processes (and the latency producer) of one run; stopped by PID on exit."""

    def __init__(self, specs: Sequence[MemberSpec], producer: ProducerSpec | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork: grpc and asyncio state must not be inherited
        self.go = ctx.Event()
        self.stop = ctx.Event()
        self._out = ctx.Queue()
        self._procs = [
            ctx.Process(target=_member_main, args=(s, self.go, self.stop, self._out), name=f"member-{s.member}", daemon=True)
            for s in specs
        ]
        if producer is not None:
            self._procs.append(
                ctx.Process(target=_producer_main, args=(producer, self.go, self.stop, self._out), name="producer", daemon=True)
            )
        self.members: list[MemberResult] = []
        self.producer: ProducerResult | None = None
        self.errors: list[str] = []
        self._expected = {f"member {s.member}" for s in specs} | ({"producer"} if producer else set())
        self._pending = set(self._expected)
        self._ready: set[str] = set()
        for proc in self._procs:
            proc.start()

    def __enter__(self) -> "_Team":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.go.set()
        for proc in self._procs:
            proc.join(10)
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM to that PID
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def _take(self, timeout: float) -> None:
        kind, who, payload = self._out.get(timeout=timeout)
        if kind == "ready":
            self._ready.add(who)
        elif kind == "error":
            self._pending.discard(who)
            self.errors.append(f"{who}: {payload.strip().splitlines()[-1]}")
            _log(f"  {who} failed:\n{payload}")
            self.stop.set()
        else:
            self._pending.discard(who)
            if who == "producer":
                self.producer = payload
            else:
                self.members.append(payload)

    def wait_ready(self, timeout: float = _SPAWN_TIMEOUT_S) -> None:
        """Until every process reported ready (connected, subscribed or joined); BenchError if one failed."""
        deadline = time.monotonic() + timeout
        while not self._expected <= self._ready:
            if self.errors:
                break
            try:
                self._take(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"not ready within {timeout:.0f} s: {sorted(self._expected - self._ready)}") from None
        if self.errors:
            raise BenchError("; ".join(self.errors))

    def collect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._pending:
            try:
                self._take(max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop.set()
                raise BenchError(f"no result within {timeout:.0f} s from {sorted(self._pending)}") from None
        if self.errors:
            raise BenchError("; ".join(self.errors))


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class Row:
    """One system, consume loop and member count: its throughput run and its latency run."""

    system: str  # "logstore" | "redis" | "nats"
    label: str
    members: int
    records: int = 0
    seconds: float = 0.0
    received: int = 0
    duplicates: int = 0
    missing: int = 0
    member_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    stale: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    latency_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.seconds > 0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.rate * VALUE_SIZE / MB

    def latency_ms(self, pct: float) -> float:
        return broker_bench.percentile(sorted(self.latencies_ns), pct) / 1e6


@dataclass(frozen=True, slots=True)
class Tally:
    received: int  # receipts, duplicates included
    distinct: int
    missing: int
    first_missing: int  # -1: none

    @property
    def duplicates(self) -> int:
        return self.received - self.distinct


def tally(results: Sequence[MemberResult], size: int) -> Tally:
    """Receipts per record over all members: the OR of the members' tables is non-zero where anyone got it."""
    received = sum(sum(r.seen) for r in results)
    combined = 0
    for r in results:
        combined |= int.from_bytes(r.seen, "little")
    anyone = combined.to_bytes(size, "little")
    missing = anyone.count(0)
    return Tally(received, size - missing, missing, anyone.find(0))


def _peer_throughput(kind: str, address: str, group: str, members: int, settings, server_pid, row) -> None:  # noqa: ANN001
    """One peer throughput run: ``members`` member processes of ``kind`` drain stream "bench" as ``group``."""
    timeout = _throughput_timeout(settings.records)
    specs = [
        MemberSpec(kind, "", address, group, "bench", k, settings.records, None, timeout) for k in range(members)
    ]
    with _Team(specs) as team:
        team.wait_ready()
        cpu0 = _cpu(server_pid)
        t0_ns = time.monotonic_ns()
        team.go.set()
        team.collect(timeout)
        cpu1 = _cpu(server_pid)
    _apply_throughput(row, team, settings.records, t0_ns, cpu1 - cpu0)


def _apply_throughput(row: Row, team: _Team, records: int, t0_ns: int, server_cpu_s: float) -> None:
    t = tally(team.members, records)
    last = max((r.last_ns for r in team.members), default=0)
    row.records = records
    row.seconds = (last - t0_ns) / 1e9 if last > t0_ns else 0.0
    row.received = t.received
    row.duplicates = t.duplicates
    row.missing = t.missing
    row.member_cpu_s = sum(r.cpu_s for r in team.members)
    row.server_cpu_s = server_cpu_s
    row.stale = sum(r.stale for r in team.members)
    per_member = ", ".join(
        f"{r.member}: {sum(r.seen):,}" + (f" ({r.note})" if r.note else "") for r in sorted(team.members, key=lambda r: r.member)
    )
    row.notes.append(f"records per member {per_member}")
    if t.missing:
        row.error = f"{t.missing:,} of {records:,} records never received (first index {t.first_missing})"


def _apply_latency(row: Row, team: _Team, total: int, warmup: int, server_cpu_s: float) -> None:
    t = tally(team.members, total)
    lat = [x for r in team.members for x in r.latencies_ns]
    row.latencies_ns = lat
    p = team.producer
    if p is not None:
        span_s = p.span_ns / 1e9
        row.notes.append(
            f"latency run: {p.sent:,} records sent at {p.sent / span_s:,.0f}/s "
            f"(at most {p.max_behind_ns / 1e6:.1f} ms behind schedule), {len(lat):,} measured, "
            f"{t.duplicates:,} duplicates; CPU per record sent: server {server_cpu_s / p.sent * 1e6:.1f} us, "
            f"producer {p.cpu_s / p.sent * 1e6:.1f} us, members {sum(r.cpu_s for r in team.members) / p.sent * 1e6:.1f} us"
        )
    if t.missing:
        row.latency_error = f"latency run: {t.missing:,} of {total:,} records never received"


def _cpu(pid: int | None) -> float:
    return broker_bench._proc_cpu_s(pid) if pid else 0.0


def _throughput_timeout(records: int) -> float:
    return 60.0 + records / 5_000  # NATS at ~40,000/s needs 25 s for 1,000,000


def _latency_total(settings: "Settings") -> tuple[int, int]:
    """Records the latency producer sends, and how many of them (the first) are not measured."""
    rate = settings.lat_rate
    return int((LAT_WARMUP_S + settings.lat_seconds) * rate), int(LAT_WARMUP_S * rate)


# --------------------------------------------------------------------------- logstore


STYLES = (("batch", "batches() + batch.ack()"), ("message", "for msg: msg.ack()"))


def _groups_api():  # noqa: ANN202
    from logstore._proto.logstore.v1 import groups_pb2, groups_pb2_grpc

    return groups_pb2, groups_pb2_grpc


def _wait_stable(stub, pb, group: str, topic: str, members: int) -> None:  # noqa: ANN001
    """Until DescribeGroup shows ``members`` members, each owning partitions, and all 8 partitions owned."""
    deadline = time.monotonic() + _STABLE_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        last = stub.DescribeGroup(pb.DescribeGroupRequest(group=group), timeout=10)
        owned = {(a.topic, a.partition) for m in last.members for a in m.assignment}
        if (
            len(last.members) == members
            and all(m.assignment for m in last.members)
            and len({p for t, p in owned if t == topic}) == PARTITIONS
        ):
            return
        time.sleep(0.05)
    raise BenchError(f"group {group} did not settle within {_STABLE_TIMEOUT_S:.0f} s: {last}")


def _check_committed(stub, pb, group: str, topic: str, expected: dict[int, int]) -> None:  # noqa: ANN001
    """Until the group's committed offsets equal the log end on every partition (the acks were applied)."""
    deadline = time.monotonic() + _CHECK_TIMEOUT_S
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        d = stub.DescribeGroup(pb.DescribeGroupRequest(group=group), timeout=10)
        committed = {p.partition: p.committed_offset for p in d.partitions if p.topic == topic}
        if committed == expected:
            return
        time.sleep(0.1)
    raise BenchError(f"group {group}: committed offsets {committed} != log end offsets {expected} after {_CHECK_TIMEOUT_S:.0f} s")


def _log_ends(admin, topic: str) -> dict[int, int]:  # noqa: ANN001
    return {p.partition: p.log_end_offset for p in admin.describe_topic(topic).partitions}


def _run_logstore(settings: "Settings", parent: str) -> list[Row]:
    from logstore.client import Admin, Producer

    runs = [(style, Row("logstore", f"logstore {label}", m)) for style, label in STYLES for m in settings.members]
    rows = [row for _, row in runs]
    try:
        with broker_bench.running_broker(parent) as broker, Admin(broker.address) as admin:
            import grpc

            pb, pb_grpc = _groups_api()
            channel = grpc.insecure_channel(broker.address)
            stub = pb_grpc.GroupsStub(channel)
            topic = "bench"
            admin.create_topic(topic, PARTITIONS)
            t0 = time.perf_counter()
            with Producer(broker.address, acks="leader") as producer:
                for base in range(0, settings.records, _PRELOAD_CHUNK):
                    stop = min(settings.records, base + _PRELOAD_CHUNK)
                    producer.send_many(topic, [bulk_value(i) for i in range(base, stop)],
                                       keys=[KEYS[i % KEY_SPACE] for i in range(base, stop)])
                if producer.flush(300):
                    raise BenchError("preload: records left unacknowledged")
            ends = _log_ends(admin, topic)
            if sum(ends.values()) != settings.records:
                raise BenchError(f"preload: topic holds {sum(ends.values()):,} records, expected {settings.records:,}")
            _log(f"[logstore] preloaded {settings.records:,} records in {time.perf_counter() - t0:.1f} s "
                 f"(per partition {', '.join(f'{ends[p]:,}' for p in sorted(ends))})")
            for style, row in runs:
                m = row.members
                _log(f"[logstore] {row.label}, {m} member(s): throughput ...")
                try:
                    group = f"g-{style}-{m}"
                    specs = [
                        MemberSpec("logstore", style, broker.address, group, topic, k, settings.records, None,
                                   _throughput_timeout(settings.records), settings.max_in_flight)
                        for k in range(m)
                    ]
                    with _Team(specs) as team:
                        team.wait_ready()
                        _wait_stable(stub, pb, group, topic, m)
                        cpu0 = _cpu(broker.pid)
                        t0_ns = time.monotonic_ns()
                        stub.SeekGroup(
                            pb.SeekGroupRequest(
                                group=group, topic=topic,
                                target=pb.SeekTarget(offset_position=pb.OFFSET_POSITION_EARLIEST),
                            ),
                            timeout=30,
                        )
                        team.collect(_throughput_timeout(settings.records))
                        cpu1 = _cpu(broker.pid)
                    _apply_throughput(row, team, settings.records, t0_ns, cpu1 - cpu0)
                    _check_committed(stub, pb, group, topic, ends)
                    _log(f"[logstore]   {row.rate:,.0f} records/s, {row.duplicates:,} duplicates")
                except Exception as exc:  # noqa: BLE001 - one broken run must not hide the others
                    row.error = row.error or f"{type(exc).__name__}: {exc}"
                    _log(f"[logstore]   FAILED: {row.error}")
                    continue
                _log(f"[logstore] {row.label}, {m} member(s): latency at {settings.lat_rate:,}/s ...")
                try:
                    lat_topic = f"lat-{style}-{m}"
                    admin.create_topic(lat_topic, PARTITIONS)
                    admin.create_topic(f"{lat_topic}-warm", 1)  # the producer's first record, outside the measurement
                    total, warmup = _latency_total(settings)
                    specs = [
                        MemberSpec("logstore", style, broker.address, f"lat-{style}-{m}", lat_topic, k, total, warmup,
                                   settings.lat_seconds + 60, settings.max_in_flight)
                        for k in range(m)
                    ]
                    producer_spec = ProducerSpec("logstore", broker.address, lat_topic, total, settings.lat_rate)
                    with _Team(specs, producer_spec) as team:
                        team.wait_ready()
                        _wait_stable(stub, pb, f"lat-{style}-{m}", lat_topic, m)
                        cpu0 = _cpu(broker.pid)
                        team.go.set()
                        team.collect(settings.lat_seconds + 90)
                        cpu1 = _cpu(broker.pid)
                    _apply_latency(row, team, total, warmup, cpu1 - cpu0)
                    _check_committed(stub, pb, f"lat-{style}-{m}", lat_topic, _log_ends(admin, lat_topic))
                    _log(f"[logstore]   p50 {row.latency_ms(50):.2f} ms, p99 {row.latency_ms(99):.2f} ms")
                except Exception as exc:  # noqa: BLE001
                    row.latency_error = row.latency_error or f"{type(exc).__name__}: {exc}"
                    _log(f"[logstore]   latency FAILED: {row.latency_error}")
            channel.close()
    except Exception as exc:  # noqa: BLE001 - the broker itself failed
        for row in rows:
            if not row.ok:
                row.error = row.error or f"{type(exc).__name__}: {exc}"
        _log(f"[logstore] FAILED: {type(exc).__name__}: {exc}")
    return rows


# --------------------------------------------------------------------------- Redis Streams


def _run_redis(settings: "Settings", parent: str) -> list[Row]:
    label = "Redis XREADGROUP + XACK"
    rows = [Row("redis", label, m) for m in settings.members]
    peer = peers.RedisPeer()
    try:
        with peer.running(parent) as running:
            import redis

            address = f"{LOOPBACK}:{running.port}"
            client = redis.Redis(host=LOOPBACK, port=running.port, socket_timeout=60)
            streams = [f"bench:{p}" for p in range(PARTITIONS)]
            t0 = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for base in range(0, settings.records, 2_000):
                for i in range(base, min(settings.records, base + 2_000)):
                    k = i % KEY_SPACE
                    pipe.execute_command("XADD", streams[KEY_PARTITION[k]], "*", KEYS[k], bulk_value(i))
                pipe.execute()
            held = sum(client.xlen(s) for s in streams)
            if held != settings.records:
                raise BenchError(f"preload: the streams hold {held:,} entries, expected {settings.records:,}")
            _log(f"[redis] preloaded {settings.records:,} records in {time.perf_counter() - t0:.1f} s")
            for row in rows:
                m = row.members
                _log(f"[redis] {m} member(s): throughput ...")
                try:
                    group = f"g{m}"
                    for s in streams:
                        client.xgroup_create(s, group, id="0")
                    _peer_throughput("redis", address, group, m, settings, running.server_pid, row)
                    _check_redis(client, streams, group)
                    _log(f"[redis]   {row.rate:,.0f} records/s, {row.duplicates:,} duplicates")
                except Exception as exc:  # noqa: BLE001
                    row.error = row.error or f"{type(exc).__name__}: {exc}"
                    _log(f"[redis]   FAILED: {row.error}")
                    continue
                _log(f"[redis] {m} member(s): latency at {settings.lat_rate:,}/s ...")
                try:
                    prefix = f"lat{m}"
                    lat_streams = [f"{prefix}:{p}" for p in range(PARTITIONS)]
                    for s in lat_streams:
                        client.xgroup_create(s, "lat", id="0", mkstream=True)
                    total, warmup = _latency_total(settings)
                    specs = [
                        MemberSpec("redis", "", address, "lat", prefix, k, total, warmup, settings.lat_seconds + 60)
                        for k in range(m)
                    ]
                    with _Team(specs, ProducerSpec("redis", address, prefix, total, settings.lat_rate)) as team:
                        team.wait_ready()
                        cpu0 = _cpu(running.server_pid)
                        team.go.set()
                        team.collect(settings.lat_seconds + 90)
                        cpu1 = _cpu(running.server_pid)
                    _apply_latency(row, team, total, warmup, cpu1 - cpu0)
                    _check_redis(client, lat_streams, "lat")
                    _log(f"[redis]   p50 {row.latency_ms(50):.2f} ms, p99 {row.latency_ms(99):.2f} ms")
                except Exception as exc:  # noqa: BLE001
                    row.latency_error = row.latency_error or f"{type(exc).__name__}: {exc}"
                    _log(f"[redis]   latency FAILED: {row.latency_error}")
            client.close()
    except peers.PeerUnavailable as exc:
        _log(f"[redis] skipped: {exc}")
        for row in rows:
            row.error = f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001
        _log(f"[redis] FAILED: {type(exc).__name__}: {exc}")
        for row in rows:
            if not row.ok:
                row.error = row.error or f"{type(exc).__name__}: {exc}"
    return rows


def _check_redis(client, streams: Sequence[str], group: str) -> None:  # noqa: ANN001
    """Every entry of every stream was delivered to the group and acked (pending 0, lag 0)."""
    problems = []
    for s in streams:
        pending = client.xpending(s, group)["pending"]
        info = next(g for g in client.xinfo_groups(s) if g["name"] in (group, group.encode()))
        lag = info.get("lag")
        if pending or lag:
            problems.append(f"{s}: pending {pending}, lag {lag}")
    if problems:
        raise BenchError("not everything acked: " + "; ".join(problems))


# --------------------------------------------------------------------------- NATS JetStream


def _run_nats(settings: "Settings", parent: str) -> list[Row]:
    label = "NATS pull fetch + msg.ack()"
    rows = [Row("nats", label, m) for m in settings.members]
    peer = peers.NatsPeer()
    try:
        with peer.running(parent) as running:
            address = f"{LOOPBACK}:{running.port}"
            t0 = time.perf_counter()
            asyncio.run(_nats_preload(address, settings.records))
            _log(f"[nats] preloaded {settings.records:,} records in {time.perf_counter() - t0:.1f} s")
            for row in rows:
                m = row.members
                _log(f"[nats] {m} member(s): throughput ...")
                try:
                    group = f"g{m}"
                    asyncio.run(_nats_add_consumer(address, "bench", group))
                    _peer_throughput("nats", address, group, m, settings, running.server_pid, row)
                    asyncio.run(_nats_check(address, "bench", group))
                    _log(f"[nats]   {row.rate:,.0f} records/s, {row.duplicates:,} duplicates")
                except Exception as exc:  # noqa: BLE001
                    row.error = row.error or f"{type(exc).__name__}: {exc}"
                    _log(f"[nats]   FAILED: {row.error}")
                    continue
                _log(f"[nats] {m} member(s): latency at {settings.lat_rate:,}/s ...")
                try:
                    stream = f"lat{m}"
                    asyncio.run(_nats_add_stream(address, stream))
                    asyncio.run(_nats_add_consumer(address, stream, "lat"))
                    total, warmup = _latency_total(settings)
                    specs = [
                        MemberSpec("nats", "", address, "lat", stream, k, total, warmup, settings.lat_seconds + 60)
                        for k in range(m)
                    ]
                    with _Team(specs, ProducerSpec("nats", address, stream, total, settings.lat_rate)) as team:
                        team.wait_ready()
                        cpu0 = _cpu(running.server_pid)
                        team.go.set()
                        team.collect(settings.lat_seconds + 90)
                        cpu1 = _cpu(running.server_pid)
                    _apply_latency(row, team, total, warmup, cpu1 - cpu0)
                    asyncio.run(_nats_check(address, stream, "lat"))
                    _log(f"[nats]   p50 {row.latency_ms(50):.2f} ms, p99 {row.latency_ms(99):.2f} ms")
                except Exception as exc:  # noqa: BLE001
                    row.latency_error = row.latency_error or f"{type(exc).__name__}: {exc}"
                    _log(f"[nats]   latency FAILED: {row.latency_error}")
    except peers.PeerUnavailable as exc:
        _log(f"[nats] skipped: {exc}")
        for row in rows:
            row.error = f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001
        _log(f"[nats] FAILED: {type(exc).__name__}: {exc}")
        for row in rows:
            if not row.ok:
                row.error = row.error or f"{type(exc).__name__}: {exc}"
    return rows


@contextlib.asynccontextmanager
async def _nats(address: str):  # noqa: ANN202
    import nats

    nc = await nats.connect(f"nats://{address}", allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def _nats_add_stream(address: str, stream: str) -> None:
    from nats.js.api import StorageType

    async with _nats(address) as nc:
        await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.*"], storage=StorageType.FILE)


async def _nats_preload(address: str, records: int) -> None:
    from nats.js.api import StorageType

    async with _nats(address) as nc:
        js = nc.jetstream(publish_async_max_pending=peers._NATS_MAX_PENDING)
        await js.add_stream(name="bench", subjects=["bench.*"], storage=StorageType.FILE)
        subjects = [f"bench.{p}" for p in range(PARTITIONS)]
        for i in range(records):
            await js.publish_async(subjects[KEY_PARTITION[i % KEY_SPACE]], bulk_value(i))
        await js.publish_async_completed()
        info = await js.stream_info("bench")
        if info.state.messages != records:
            raise BenchError(f"preload: the stream holds {info.state.messages:,} messages, expected {records:,}")


async def _nats_add_consumer(address: str, stream: str, durable: str) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    async with _nats(address) as nc:
        await nc.jetstream().add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_DEADLINE_MS / 1000,
                max_ack_pending=NATS_MAX_ACK_PENDING,
            ),
        )


async def _nats_check(address: str, stream: str, durable: str) -> None:
    """The consumer has nothing pending and nothing awaiting an ack (the acks were applied)."""
    async with _nats(address) as nc:
        js = nc.jetstream()
        deadline = time.monotonic() + _CHECK_TIMEOUT_S
        while True:
            info = await js.consumer_info(stream, durable)
            if not info.num_pending and not info.num_ack_pending:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"consumer {durable}: {info.num_pending} pending, {info.num_ack_pending} awaiting ack")
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Settings:
    records: int
    quick: bool
    lat_seconds: float
    members: tuple[int, ...]
    peers: tuple[str, ...]
    max_in_flight: int  # logstore members' max_in_flight
    lat_rate: int  # records/s in the latency runs


def _machine_line() -> str:
    import grpc
    import google.protobuf
    from google.protobuf.internal import api_implementation

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    return (
        f"Machine: {broker_bench._cpu_model()}, {os.cpu_count()} cores ({usable} usable), "
        f"{platform.system()} {platform.release()}, {platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, protobuf {google.protobuf.__version__} ({api_implementation.Type()}); "
        f"load average {broker_bench._load_average()}"
    )


def _fmt_ms(ms: float) -> str:
    return "-" if ms != ms else broker_bench._fmt_ms(ms)


def _print_table(rows: Sequence[Row], settings: Settings) -> None:
    best = {
        (r.system, r.members): r.rate for r in rows if r.system != "logstore" and r.ok
    }
    peer_systems = [s for s in ("redis", "nats") if s in settings.peers]
    ratio_titles = "".join(f" {'vs ' + SYSTEM_NAMES[s]:>9}" for s in peer_systems)
    header = (
        f"{'system, consume loop':<34} {'members':>7} {'records/s':>11} {'MB/s':>6} {'e2e p50':>8} {'e2e p99':>8} "
        f"{'dups':>6} {'missing':>7}{ratio_titles} {'member cores':>12} {'server cores':>12} {'server us/rec':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r.ok:
            print(f"{r.label:<34} {r.members:>7} {r.error.splitlines()[0] if r.error else 'no result'}")
            continue
        ratios = ""
        for s in peer_systems:
            peer_rate = best.get((s, r.members))
            ratios += f" {r.rate / peer_rate:>8.2f}x" if r.system == "logstore" and peer_rate else f" {'':>9}"
        p50 = _fmt_ms(r.latency_ms(50)) if r.latencies_ns else "-"
        p99 = _fmt_ms(r.latency_ms(99)) if r.latencies_ns else "-"
        print(
            f"{r.label:<34} {r.members:>7} {r.rate:>11,.0f} {r.mbps:>6.1f} {p50:>8} {p99:>8} {r.duplicates:>6,} "
            f"{r.missing:>7,}{ratios} {r.member_cpu_s / r.seconds:>12.2f} {r.server_cpu_s / r.seconds:>12.2f} "
            f"{r.server_cpu_s / r.records * 1e6:>13.2f}"
        )
    print("notes:")
    for r in rows:
        parts = []
        if r.ok:
            parts.append(f"{r.records:,} records in {r.seconds:.2f} s")
            if r.stale:
                parts.append(f"{r.stale:,} stale ack ids reported")
        if r.latencies_ns:
            parts.append(f"e2e p99.9 {_fmt_ms(r.latency_ms(99.9))} ms, max {_fmt_ms(max(r.latencies_ns) / 1e6)} ms")
        if r.latency_error:
            parts.append(f"LATENCY FAILED: {r.latency_error.splitlines()[0]}")
        parts.extend(r.notes)
        if parts:
            print(f"  {r.label}, {r.members} member(s): {'; '.join(parts)}")
    print()


def _print_targets(rows: Sequence[Row], settings: Settings) -> None:
    print(f"Targets (issue 4): logstore >= {TARGET:,} records/s with 1 and with 4 members, acking every record")
    for r in rows:
        if r.system == "logstore" and r.label.endswith(STYLES[0][1]) and r.members in (1, 4):
            if r.ok:
                verdict = "PASS" if r.rate >= TARGET else "MISS"
                print(f"  {r.label}, {r.members} member(s): {r.rate:>11,.0f} records/s  {verdict}")
            else:
                print(f"  {r.label}, {r.members} member(s): NOT MEASURED ({r.error.splitlines()[0] if r.error else '?'})")
    for system, anchor in ANCHORS.items():
        if system not in settings.peers:
            continue
        measured = [r for r in rows if r.system == system and r.members == 1 and r.ok]
        now = f"{measured[0].rate:,.0f}/s in this run" if measured else "not measured in this run"
        print(f"  anchor {SYSTEM_NAMES[system]}, 1 member: {anchor:,}/s in the issue; {now}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help=f"records (default {DEFAULT_RECORDS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records, {QUICK_LAT_SECONDS:g} s latency runs")
    parser.add_argument("--peers", default="redis,nats", help="comma-separated peers: redis,nats ('' for none)")
    parser.add_argument("--members", default="1,4", help="comma-separated member counts (default 1,4)")
    parser.add_argument(
        "--max-in-flight", type=int, default=LOGSTORE_MAX_IN_FLIGHT, metavar="N",
        help=f"logstore members' max_in_flight (default {LOGSTORE_MAX_IN_FLIGHT:,}; the Consumer's own default is 1,000)",
    )
    parser.add_argument(
        "--latency-rate", type=int, default=LAT_RATE, metavar="N",
        help=f"records/s in the latency runs (default {LAT_RATE:,})",
    )
    parser.add_argument("--dir", default=None, help="parent directory for the brokers' data (default: tmp)")
    args = parser.parse_args(argv)
    records = args.records if args.records is not None else (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    if records < 1:
        parser.error("--records must be at least 1")
    try:
        members = tuple(int(x) for x in args.members.split(",") if x.strip())
    except ValueError:
        parser.error(f"--members: {args.members!r} is not a list of numbers")
    if not members or min(members) < 1 or max(members) > PARTITIONS:
        parser.error(f"--members: each count must be in 1..{PARTITIONS}")
    wanted = tuple(s.strip() for s in args.peers.split(",") if s.strip())
    unknown = set(wanted) - {"redis", "nats"}
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))} (known: redis, nats)")
    if not 1 <= args.max_in_flight <= 100_000:
        parser.error("--max-in-flight must be in 1..100,000")
    if not 10 <= args.latency_rate <= 100_000:
        parser.error("--latency-rate must be in 10..100,000")
    settings = Settings(
        records, args.quick, QUICK_LAT_SECONDS if args.quick else LAT_SECONDS, members, wanted,
        args.max_in_flight, args.latency_rate,
    )

    started = time.monotonic()
    print(_machine_line())
    print(
        f"Settings: {'--quick' if args.quick else 'full'} run; {records:,} records x {VALUE_SIZE} B, keys k0..k999, "
        f"{PARTITIONS} partitions, one group per run, members {','.join(map(str, members))} (one process each); "
        f"latency runs {settings.lat_rate:,} records/s for {settings.lat_seconds:g} s (+{LAT_WARMUP_S:g} s warm-up); "
        f"peers: {', '.join(wanted) or 'none'}"
    )
    print(
        f"Tuning: logstore max_in_flight {settings.max_in_flight:,}; Redis COUNT {REDIS_COUNT:,} per stream; "
        f"NATS fetch batch {NATS_BATCH:,}, max_ack_pending {NATS_MAX_ACK_PENDING:,}; ack deadlines {ACK_DEADLINE_MS / 1000:g} s"
    )
    print()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="logstore-group-bench-", dir=args.dir) as parent:
        rows += _run_logstore(settings, parent)
        if "redis" in wanted:
            rows += _run_redis(settings, parent)
        if "nats" in wanted:
            rows += _run_nats(settings, parent)
    print()
    print(
        f"Results ({records:,} records, one group, every record acked; records/s from go to the last ack; "
        f"MB = 10^6 B of values; e2e = produce call -> member loop, ms, at {settings.lat_rate:,}/s; "
        "ratio = logstore / peer, same member count; cores = CPU s / wall s over the timed run)"
    )
    _print_table(rows, settings)
    _print_targets(rows, settings)
    print(f"load average after: {broker_bench._load_average()}; whole run {time.monotonic() - started:.0f} s")
    failed = any(r.error and not r.error.startswith("skipped") or r.latency_error for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
