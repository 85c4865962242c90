"""Broker benchmark: the logstore broker and its Python client over gRPC, with peers alongside.

Run it as::

    python benchmarks/broker_bench.py                 # 1,000,000 records, peers too: about 1.5 minutes
    python benchmarks/broker_bench.py --quick         # 100,000 records, short phases: about 25 seconds
    python benchmarks/broker_bench.py --no-peers      # logstore only
    python benchmarks/broker_bench.py --records 250000 --peers redis,nats

The broker is a separate process, ``python -m logstore serve --data-dir TMP
--listen 127.0.0.1:PORT``, started by this script and stopped with SIGTERM;
the clients (``Producer``, ``Reader``) run in this process.  Both share the
machine's cores.

Records: record ``i`` has key ``k{i % 1000}`` (bytes) and the 100-byte value
``peers.VALUE``; the topic has 8 partitions and the Producer routes by key
(murmur2).  Units: MB = 10**6 bytes of record values (keys, timestamps and
framing are not counted).  Percentiles are nearest-rank.

Phases, in order, each on a fresh topic unless said otherwise:

1. produce, ``acks="leader"`` (idempotent, the Producer's default; see
   ``idempotence_bench.py`` for what that costs): ``records`` sends, then ``flush()``.  The rate
   counts from the first ``send`` until every record is acknowledged.  The
   latency is send -> acknowledgement of every 1,000th record (a done
   callback); it is mostly time queued in the client behind earlier records.
2. produce, ``acks="durable"`` (the broker fsyncs before answering): same.
3. replay: a ``Reader`` over the topic of phase 1 from ``"earliest"`` with
   ``follow=False``, iterated to the end (the loop only counts messages).
   The rate counts from creating the Reader until iteration ends.
4. round trip: ``send(...).result()`` of one keyed record to partition 0
   with ``linger_ms=0``, ``RTT_SAMPLES`` times in sequence after
   ``RTT_WARMUP`` unmeasured ones, timed with ``time.perf_counter_ns``.
5. end to end: a producer thread paced at ``E2E_RATE`` records/s (with
   ``linger_ms=E2E_LINGER_MS``) puts ``perf_counter_ns()`` taken just before
   ``send`` into the first 8 bytes of the value; a ``Reader`` tailing
   ``"latest"`` in the main thread computes now - sent per record.  Records
   sent during the first ``E2E_WARMUP_S`` are not counted.  The producer
   uses the Producer's default ``linger_ms`` (5 ms), so up to 5 ms of each
   latency is the batch waiting for more records.

Every phase checks its result (every record acknowledged and on the broker,
every record replayed, every e2e record received) and fails loudly
otherwise.  Each phase also shows the CPU time the client process and the
broker process spent on it, per record and as cores busy over the phase (a
Python process near 1.0 core is bound by its GIL), and in the notes the
client's time in the garbage collector and both processes' page faults
(each costs a few microseconds on a VM).

Then the peers of ``benchmarks/peers.py`` (Redis Streams, NATS JetStream,
RabbitMQ Streams) run the same records one after the other, after the
logstore broker has stopped; a peer that cannot start is skipped with its
reason.  The final table compares logstore (produce at ``acks="leader"``,
replay, round trip) with each peer.

What this benchmark does NOT tell you:
- Durability differs: only logstore's ``acks="durable"`` row waits for an
  fsync; ``acks="leader"`` and every peer acknowledge before the data is on
  disk (see ``peers.py``).  Compare peers with the leader row.
- Each number is one run of one client process sharing the machine's cores
  with the broker; client and broker compete for CPU, and anything else
  running moves the numbers a lot.  On the 2-core development VM,
  back-to-back runs of the bulk phases differed by up to 20-30 %.  Compare
  runs made on a quiet machine (the load average before and after is
  printed for that reason).
- The replay reads data the broker has just written (page cache warm), and
  nothing is read from a cold disk.
- The end-to-end latency is measured in one process (producer thread,
  Reader threads and the measuring thread share one GIL); across machines
  or processes it would differ.
- The peers' clients differ from ours (asyncio, different batching); their
  numbers are what those Python clients reach here, not what the servers can do.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import os
import platform
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

_BENCH_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_DIR.parent
for _path in (str(_REPO_ROOT), str(_BENCH_DIR)):
    if _path not in sys.path:
        # Run as a plain script from a checkout: make ``logstore`` and ``peers`` importable.
        sys.path.insert(0, _path)

import peers  # noqa: E402
from logstore.client import Admin, Producer, Reader  # noqa: E402

PARTITIONS = peers.PARTITIONS
VALUE = peers.VALUE
VALUE_SIZE = peers.VALUE_SIZE
KEYS = tuple(key.encode() for key in peers.KEYS)
KEY_SPACE = len(KEYS)
DEFAULT_RECORDS = peers.DEFAULT_RECORDS
QUICK_RECORDS = peers.QUICK_RECORDS
MB = 1_000_000

LATENCY_SAMPLE_EVERY = KEY_SPACE  # produce phases: time send -> ack of every 1,000th record
RTT_SAMPLES = peers.RTT_SAMPLES
RTT_WARMUP = peers.RTT_WARMUP
E2E_RATE = 10_000  # records/s
E2E_SECONDS = 5.0
E2E_WARMUP_S = 0.5
E2E_LINGER_MS = inspect.signature(Producer).parameters["linger_ms"].default
"""The e2e producer's linger: the Producer's default (what a user gets without tuning)."""
E2E_DRAIN_S = 10.0  # how long the reader waits for the last records after the producer stopped
_STAMP = struct.Struct("<q")  # e2e value bytes 0..7: perf_counter_ns() just before send
assert _STAMP.size == 8
_E2E_PAD = VALUE[_STAMP.size :]

_BROKER_START_TIMEOUT_S = 60.0
_BROKER_STOP_TIMEOUT_S = 30.0

TARGET_PRODUCE_LEADER = 700_000  # records/s
GOAL_PRODUCE_LEADER = 1_000_000
TARGET_PRODUCE_DURABLE = 300_000
TARGET_REPLAY = 2_000_000
TARGET_RTT_P50_MS = 1.0
TARGET_E2E_P99_MS = 10.0


class BenchError(Exception):
    """A phase could not be measured or its result is wrong (records missing, errors)."""


@dataclass(frozen=True, slots=True)
class Settings:
    records: int
    quick: bool
    rtt_samples: int
    e2e_seconds: float
    peers: tuple[peers.Peer, ...]


@dataclass(frozen=True, slots=True)
class Costs:
    """What a phase cost each process (deltas over the timed part of the phase)."""

    client_cpu_s: float
    broker_cpu_s: float
    client_gc_s: float
    """Time this process spent in the cyclic garbage collector (``gc.callbacks``)."""
    client_gc_full: int
    """Full (generation 2) collections among them."""
    client_faults: int
    """Page faults of this process (minor + major)."""
    broker_faults: int

    def scaled(self, factor: float) -> "Costs":
        """The costs of a ``factor`` share of the phase's records (the e2e warm-up is left out)."""
        return Costs(
            self.client_cpu_s * factor,
            self.broker_cpu_s * factor,
            self.client_gc_s * factor,
            self.client_gc_full,
            int(self.client_faults * factor),
            int(self.broker_faults * factor),
        )


@dataclass(slots=True)
class PhaseResult:
    """One row of the logstore table."""

    name: str
    records: int
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)
    latency_label: str = ""
    costs: Costs | None = None
    note: str = ""

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.records * VALUE_SIZE / MB / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, pct: float) -> float:
        return percentile(sorted(self.latencies_ns), pct) / 1e6


def percentile(ordered: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return float(ordered[int(rank) - 1])


def _log(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _print_machine(settings: Settings, data_dir: str) -> None:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    import grpc
    import google.protobuf
    from google.protobuf.internal import api_implementation

    print("Machine")
    print(f"  CPU          : {_cpu_model()}")
    print(f"  cores        : {os.cpu_count()} online, {usable} usable by this process")
    print(f"  kernel       : {platform.system()} {platform.release()}")
    print(f"  Python       : {platform.python_implementation()} {platform.python_version()} ({sys.executable})")
    print(
        f"  grpcio       : {grpc.__version__}; protobuf {google.protobuf.__version__} "
        f"({api_implementation.Type()} backend)"
    )
    print(f"  data dir     : {data_dir}")
    print(f"  load average : {_load_average()} (1, 5, 15 min) before the run")
    print("Settings")
    print(
        f"  {'--quick' if settings.quick else 'full'} run; {settings.records:,} records x {VALUE_SIZE} B values, "
        f"keys k0..k{KEY_SPACE - 1}, {PARTITIONS} partitions; round trip {settings.rtt_samples:,} samples; "
        f"e2e {E2E_RATE:,} records/s for {settings.e2e_seconds:g} s (+{E2E_WARMUP_S:g} s warm-up)"
    )
    peer_names = ", ".join(p.slug for p in settings.peers) or "none"
    print(f"  peers: {peer_names}")
    print()


# --------------------------------------------------------------------------- CPU accounting


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread, exited ones included) of another process.

    Linux exposes each process's CPU-time clock as the clock id
    ``clock_getcpuclockid(pid)`` would return, ``(~pid << 3) | 2``
    (CPUCLOCK_SCHED, whole process), with nanosecond resolution.  Elsewhere,
    or if that fails, ``/proc/PID/stat`` (clock ticks, usually 10 ms); 0.0 if
    neither can be read.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except (OSError, AttributeError, OverflowError):
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def _proc_faults(pid: int) -> int:
    """Minor + major page faults of a process so far (all threads), from /proc; 0 if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[7]) + int(fields[9])  # minflt, majflt: fields 10, 12


class _GcClock:
    """Total time this process spent in garbage collections, and how many were full ones."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            if info.get("generation") == 2:
                self.full += 1


_GC_CLOCK: _GcClock | None = None


class _CpuMeter:
    """CPU time, GC time and page faults of this process and the broker between ``start()`` and ``stop()``."""

    def __init__(self, broker_pid: int) -> None:
        global _GC_CLOCK
        if _GC_CLOCK is None:
            _GC_CLOCK = _GcClock()
        self._gc = _GC_CLOCK
        self._pid = broker_pid

    def start(self) -> None:
        self._begin = self._now()

    def stop(self) -> Costs:
        end = self._now()
        return Costs(*(b - a for a, b in zip(self._begin, end)))

    def _now(self) -> tuple:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (
            time.process_time(),
            _proc_cpu_s(self._pid),
            self._gc.seconds,
            self._gc.full,
            usage.ru_minflt + usage.ru_majflt,
            _proc_faults(self._pid),
        )


# --------------------------------------------------------------------------- the broker process


class BrokerProcess:
    """``python -m logstore serve`` in its own process and session, stopped with SIGTERM."""

    def __init__(self, data_dir: Path) -> None:
        self.port = peers.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        argv = [
            sys.executable, "-m", "logstore", "serve",
            "--data-dir", str(data_dir), "--listen", self.address,
        ]  # fmt: skip
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=_REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in our terminal does not reach it; we stop it ourselves
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = _BROKER_START_TIMEOUT_S) -> float:
        """Block until the broker printed its ready line and accepts connections; the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the broker exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if " ready " in self.log_tail(50):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.settimeout(0.5)
                    if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                        return time.monotonic() - t0
            time.sleep(0.05)
        raise BenchError(f"the broker was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = _BROKER_STOP_TIMEOUT_S) -> str:
        """SIGTERM the PID and wait (SIGKILL after ``timeout_s``); how it ended, in words."""
        try:
            if self.proc.poll() is not None:
                return f"had already exited with {self.proc.returncode}"
            t0 = time.monotonic()
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
                return f"did not stop within {timeout_s:.0f} s of SIGTERM; killed"
            return f"stopped by SIGTERM in {time.monotonic() - t0:.1f} s, exit status {code}"
        except ProcessLookupError:
            return "was already gone"
        finally:
            self._log_file.close()


@contextlib.contextmanager
def running_broker(parent: str) -> Iterator[BrokerProcess]:
    data_dir = Path(parent) / "logstore-data"
    broker = BrokerProcess(data_dir)
    try:
        took = broker.wait_ready()
        _log(f"[logstore] broker pid {broker.pid} ready on {broker.address} in {took:.1f}s")
        yield broker
    finally:
        _log(f"[logstore] broker {broker.stop()}")


# --------------------------------------------------------------------------- phases


def _check_topic_holds(admin: Admin, topic: str, expected: int) -> None:
    description = admin.describe_topic(topic)
    held = sum(p.record_count for p in description.partitions)
    if held != expected:
        raise BenchError(f"topic {topic} holds {held:,} records, expected {expected:,}")


def phase_produce(
    broker: BrokerProcess, admin: Admin, topic: str, records: int, acks: str, *, idempotent: bool = True
) -> PhaseResult:
    """``records`` keyed sends with ``acks``, then flush; latency of every 1,000th record.
    The Producer is idempotent (its default) unless ``idempotent`` is False."""
    admin.create_topic(topic, PARTITIONS)
    latencies: list[int] = []
    sampled = []
    perf_ns = time.perf_counter_ns
    meter = _CpuMeter(broker.pid)
    with Producer(broker.address, acks=acks, idempotent=idempotent) as producer:
        # Open the stream before timing (the topic's metadata is looked up at the first timed send).
        warm = f"{topic}-warmup"
        admin.create_topic(warm, 1)
        producer.send(warm, VALUE).result(30)
        send = producer.send
        keys = KEYS
        rest = keys[1:]
        meter.start()
        started = perf_ns()
        for base in range(0, records, LATENCY_SAMPLE_EVERY):
            t0 = perf_ns()
            future = send(topic, VALUE, key=keys[0])
            future.add_done_callback(lambda _f, t0=t0: latencies.append(perf_ns() - t0))
            sampled.append(future)
            if base + LATENCY_SAMPLE_EVERY <= records:
                for key in rest:
                    send(topic, VALUE, key=key)
            else:
                for key in rest[: records - base - 1]:
                    send(topic, VALUE, key=key)
        unanswered = producer.flush(300)
        elapsed = (perf_ns() - started) / 1e9
        costs = meter.stop()
        if unanswered:
            raise BenchError(f"{unanswered:,} records were still unanswered after flush(300)")
        failed = [f.exception() for f in sampled if f.exception() is not None]
        if failed:
            raise BenchError(f"{len(failed)} sampled records failed, first: {failed[0]!r}")
    _check_topic_holds(admin, topic, records)
    return PhaseResult(
        f"produce acks={acks}" + ("" if idempotent else " (not idempotent)"),
        records,
        elapsed,
        latencies,
        "send->ack (queued)",
        costs,
        f"{len(latencies):,} sampled records",
    )


def phase_replay(broker: BrokerProcess, topic: str, records: int) -> PhaseResult:
    """Read the whole topic from earliest with follow=False; count the messages."""
    meter = _CpuMeter(broker.pid)
    meter.start()
    started = time.perf_counter_ns()
    count = 0
    first = None
    with Reader(broker.address, topic, start="earliest", follow=False) as reader:
        for message in reader:
            if first is None:
                first = message
            count += 1
    elapsed = (time.perf_counter_ns() - started) / 1e9
    costs = meter.stop()
    if count != records:
        raise BenchError(f"replay delivered {count:,} records, expected {records:,}")
    if first is None or first.value != VALUE or first.key not in KEYS:
        raise BenchError(f"replay delivered a wrong record: {first!r}")
    return PhaseResult("replay (Reader, earliest)", records, elapsed, [], "", costs)


def phase_rtt(broker: BrokerProcess, admin: Admin, topic: str, samples: int) -> PhaseResult:
    """Sequential single-record produces with linger_ms=0, each waited for."""
    admin.create_topic(topic, PARTITIONS)
    latencies: list[int] = []
    perf_ns = time.perf_counter_ns
    meter = _CpuMeter(broker.pid)
    with Producer(broker.address, acks="leader", linger_ms=0) as producer:
        send = producer.send
        key = KEYS[0]
        for _ in range(RTT_WARMUP):
            send(topic, VALUE, key=key, partition=0).result(30)
        meter.start()
        started = perf_ns()
        for _ in range(samples):
            t0 = perf_ns()
            send(topic, VALUE, key=key, partition=0).result(30)
            latencies.append(perf_ns() - t0)
        elapsed = (perf_ns() - started) / 1e9
        costs = meter.stop()
    _check_topic_holds(admin, topic, RTT_WARMUP + samples)
    return PhaseResult(
        "round trip (send().result())",
        samples,
        elapsed,
        latencies,
        "send->result",
        costs,
        "acks=leader, linger_ms=0, partition 0",
    )


def phase_e2e(broker: BrokerProcess, admin: Admin, topic: str, seconds: float) -> PhaseResult:
    """A paced producer thread stamping perf_counter_ns into the value; a Reader tailing latest."""
    admin.create_topic(topic, PARTITIONS)
    total = int((E2E_WARMUP_S + seconds) * E2E_RATE)
    warmup = int(E2E_WARMUP_S * E2E_RATE)
    perf_ns = time.perf_counter_ns
    pack = _STAMP.pack
    unpack_from = _STAMP.unpack_from
    errors: list[BaseException] = []
    send_span: list[int] = []
    max_behind_ns = 0
    meter = _CpuMeter(broker.pid)

    with Reader(broker.address, topic, start="latest", follow=True) as reader, Producer(
        broker.address, acks="leader", linger_ms=E2E_LINGER_MS
    ) as producer:
        reader.poll(0)  # opens the streams; returns once every partition's start is fixed
        warm = f"{topic}-warmup"
        admin.create_topic(warm, 1)
        producer.send(warm, VALUE).result(30)  # the produce stream is open before pacing starts

        def produce() -> None:
            nonlocal max_behind_ns
            send = producer.send
            keys = KEYS
            interval_ns = 1_000_000_000 // E2E_RATE
            try:
                t0 = perf_ns()
                for i in range(total):
                    due = t0 + i * interval_ns
                    now = perf_ns()
                    if now < due:
                        time.sleep((due - now) / 1e9)
                    elif now - due > max_behind_ns:
                        max_behind_ns = now - due
                    send(topic, pack(perf_ns()) + _E2E_PAD, key=keys[i % KEY_SPACE])
                send_span.append(perf_ns() - t0)
                producer.flush(60)
            except BaseException as exc:  # noqa: BLE001 - reported by the measuring thread
                errors.append(exc)

        thread = threading.Thread(target=produce, name="e2e-producer", daemon=True)
        meter.start()
        thread.start()
        latencies: list[int] = []
        received = 0
        started = perf_ns()
        while received < total:
            message = reader.poll(E2E_DRAIN_S if not thread.is_alive() else 1.0)
            if message is None:
                if errors or (not thread.is_alive() and perf_ns() - started > (seconds + E2E_WARMUP_S + E2E_DRAIN_S) * 1e9):
                    break
                continue
            now = perf_ns()
            received += 1
            sent = unpack_from(message.value, 0)[0]
            if received > warmup:
                latencies.append(now - sent)
        thread.join(60)
        costs = meter.stop()
    if errors:
        raise BenchError(f"the e2e producer failed: {errors[0]!r}")
    if received != total:
        raise BenchError(f"the e2e reader received {received:,} of {total:,} records")
    span_s = send_span[0] / 1e9 if send_span else float("nan")
    measured = total - warmup
    return PhaseResult(
        f"end to end @ {E2E_RATE:,}/s",
        measured,
        span_s * measured / total,
        latencies,
        "send->Reader",
        costs.scaled(measured / total),
        f"linger_ms={E2E_LINGER_MS:g} (Producer default); sent {total:,} at {total / span_s:,.0f}/s, "
        f"at most {max_behind_ns / 1e6:.1f} ms behind schedule",
    )


# --------------------------------------------------------------------------- reporting


def _fmt_ms(ms: float) -> str:
    if ms != ms:  # NaN
        return "-"
    if ms < 10:
        return f"{ms:.3f}"
    if ms < 1000:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def _print_results(results: list[PhaseResult], failures: list[tuple[str, str]]) -> None:
    print()
    print("logstore results (MB = 10^6 B of values; latency in ms; CPU per record and cores busy over the phase)")
    header = (
        f"{'phase':<30} {'records':>10} {'seconds':>8} {'records/s':>11} {'MB/s':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'client us/rec':>13} {'broker us/rec':>13} {'client cores':>12} {'broker cores':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cpu = ""
        c = r.costs
        if c is not None and r.records and r.seconds > 0:
            cpu = (
                f"{c.client_cpu_s / r.records * 1e6:>13.2f} {c.broker_cpu_s / r.records * 1e6:>13.2f} "
                f"{c.client_cpu_s / r.seconds:>12.2f} {c.broker_cpu_s / r.seconds:>12.2f}"
            )
        p50 = _fmt_ms(r.percentile_ms(50)) if r.latencies_ns else "-"
        p99 = _fmt_ms(r.percentile_ms(99)) if r.latencies_ns else "-"
        print(
            f"{r.name:<30} {r.records:>10,} {r.seconds:>8.2f} {r.records_per_s:>11,.0f} {r.mb_per_s:>7.1f} "
            f"{p50:>8} {p99:>8} {cpu}"
        )
    for name, reason in failures:
        print(f"{name:<30} FAILED: {reason.splitlines()[0]}")
    print("notes:")
    for r in results:
        parts = []
        if r.latency_label:
            latency = f"latency = {r.latency_label}"
            if r.latencies_ns:
                latency += f" (p99.9 {_fmt_ms(r.percentile_ms(99.9))}, max {_fmt_ms(max(r.latencies_ns) / 1e6)})"
            parts.append(latency)
        if r.note:
            parts.append(r.note)
        c = r.costs
        if c is not None:
            parts.append(
                f"client GC {c.client_gc_s:.2f} s ({c.client_gc_full} full), page faults client {c.client_faults:,} "
                f"broker {c.broker_faults:,}"
            )
        print(f"  {r.name}: {'; '.join(parts)}")
    print()


def _fmt_target(target: float, unit: str) -> str:
    return f"{target:>11,.0f}" if unit == "rec/s" else f"{target:>11.1f}"


def _print_targets(by_name: dict[str, PhaseResult]) -> None:
    print("Targets")

    def line(label: str, measured: float | None, target: float, unit: str, higher_is_better: bool, goal: str = "") -> None:
        if measured is None:
            print(f"  {label:<34} {'>=' if higher_is_better else '<='} {_fmt_target(target, unit)} {unit:<6}  NOT RUN")
            return
        ok = measured >= target if higher_is_better else measured <= target
        shown = f"{measured:>13,.0f}" if unit == "rec/s" else f"{measured:>13.3f}"
        print(
            f"  {label:<34} {'>=' if higher_is_better else '<='} {_fmt_target(target, unit)} {unit:<6}  measured {shown}  "
            f"{'PASS' if ok else 'MISS'}{goal}"
        )

    def rate(name: str) -> float | None:
        r = by_name.get(name)
        return r.records_per_s if r else None

    def pct(name: str, p: float) -> float | None:
        r = by_name.get(name)
        return r.percentile_ms(p) if r else None

    leader = rate("produce acks=leader")
    goal = ""
    if leader is not None:
        goal = f" (goal {GOAL_PRODUCE_LEADER:,}: {'reached' if leader >= GOAL_PRODUCE_LEADER else 'not reached'})"
    line("produce acks=leader", leader, TARGET_PRODUCE_LEADER, "rec/s", True, goal)
    line("produce acks=durable", rate("produce acks=durable"), TARGET_PRODUCE_DURABLE, "rec/s", True)
    line("replay", rate("replay (Reader, earliest)"), TARGET_REPLAY, "rec/s", True)
    line("round trip p50", pct("round trip (send().result())", 50), TARGET_RTT_P50_MS, "ms", False)
    line(f"end to end p99 @ {E2E_RATE:,}/s", pct(f"end to end @ {E2E_RATE:,}/s", 99), TARGET_E2E_P99_MS, "ms", False)
    print()


def _print_comparison(records: int, by_name: dict[str, PhaseResult], rows: list[tuple[str, dict[str, float] | str]]) -> None:
    print(
        f"Comparison ({records:,} records; logstore produce = acks=leader; ratio = logstore / peer, "
        ">1 means logstore is faster; rtt: lower is better)"
    )
    header = (
        f"{'system':<30} {'produce rec/s':>14} {'MB/s':>7} {'ratio':>7} {'replay rec/s':>13} {'MB/s':>7} "
        f"{'ratio':>7} {'rtt p50 ms':>11} {'rtt p99 ms':>11}"
    )
    print(header)
    print("-" * len(header))
    produce = by_name.get("produce acks=leader")
    replay = by_name.get("replay (Reader, earliest)")
    rtt = by_name.get("round trip (send().result())")

    def num(x: float | None, fmt: str, width: int) -> str:
        return f"{format(x, fmt):>{width}}" if x is not None and x == x else f"{'-':>{width}}"

    mine = {
        "produce_rps": produce.records_per_s if produce else None,
        "produce_mbps": produce.mb_per_s if produce else None,
        "replay_rps": replay.records_per_s if replay else None,
        "replay_mbps": replay.mb_per_s if replay else None,
        "rtt_p50_ms": rtt.percentile_ms(50) if rtt else None,
        "rtt_p99_ms": rtt.percentile_ms(99) if rtt else None,
    }

    def row(name: str, r: dict[str, float | None], ratios: bool) -> str:
        def ratio(key: str) -> str:
            if not ratios or mine[key] is None or not r.get(key):
                return f"{'':>7}"
            return f"{mine[key] / r[key]:>6.2f}x"  # type: ignore[operator]

        return (
            f"{name:<30} {num(r['produce_rps'], ',.0f', 14)} {num(r['produce_mbps'], '.1f', 7)} {ratio('produce_rps')} "
            f"{num(r['replay_rps'], ',.0f', 13)} {num(r['replay_mbps'], '.1f', 7)} {ratio('replay_rps')} "
            f"{num(r['rtt_p50_ms'], '.3f', 11)} {num(r['rtt_p99_ms'], '.3f', 11)}"
        )

    print(row("logstore (acks=leader)", mine, False))
    for name, result in rows:
        if isinstance(result, str):
            print(f"{name:<30} {result.splitlines()[0] if result else 'no result'}")
        else:
            print(row(name, result, True))  # type: ignore[arg-type]
    print()


# --------------------------------------------------------------------------- main


def _run_logstore(settings: Settings, parent: str) -> tuple[list[PhaseResult], list[tuple[str, str]]]:
    results: list[PhaseResult] = []
    failures: list[tuple[str, str]] = []

    def attempt(name: str, fn: Callable[[], PhaseResult]) -> PhaseResult | None:
        _log(f"[logstore] {name} ...")
        try:
            r = fn()
        except Exception as exc:  # one broken phase must not hide the others
            failures.append((name, f"{type(exc).__name__}: {exc}"))
            _log(f"[logstore] {name} FAILED: {type(exc).__name__}: {exc}")
            return None
        results.append(r)
        p = f", p50 {_fmt_ms(r.percentile_ms(50))} ms, p99 {_fmt_ms(r.percentile_ms(99))} ms" if r.latencies_ns else ""
        _log(f"[logstore] {name}: {r.records:,} records in {r.seconds:.2f}s, {r.records_per_s:,.0f} records/s{p}")
        return r

    n = settings.records
    try:
        with running_broker(parent) as broker, Admin(broker.address) as admin:
            leader = attempt("produce acks=leader", lambda: phase_produce(broker, admin, "bench-leader", n, "leader"))
            attempt("produce acks=durable", lambda: phase_produce(broker, admin, "bench-durable", n, "durable"))
            if leader is not None:
                attempt("replay", lambda: phase_replay(broker, "bench-leader", n))
            else:
                failures.append(("replay (Reader, earliest)", "not run: the produce phase it reads failed"))
            attempt("round trip", lambda: phase_rtt(broker, admin, "bench-rtt", settings.rtt_samples))
            attempt("end to end", lambda: phase_e2e(broker, admin, "bench-e2e", settings.e2e_seconds))
    except BenchError as exc:
        failures.append(("broker", str(exc)))
        _log(f"[logstore] FAILED: {exc}")
    return results, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help=f"records per phase (default {DEFAULT_RECORDS:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RECORDS:,} records and short latency phases"
    )
    parser.add_argument("--no-peers", action="store_true", help="run logstore only")
    parser.add_argument(
        "--peers",
        default=",".join(p.slug for p in peers.PEERS),
        help="comma-separated peers to run: " + ",".join(p.slug for p in peers.PEERS),
    )
    parser.add_argument("--dir", default=None, help="parent directory for the brokers' data (default: tmp)")
    args = parser.parse_args(argv)
    records = args.records if args.records is not None else (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    if records < 1:
        parser.error("--records must be at least 1")
    wanted = [s.strip() for s in args.peers.split(",") if s.strip()]
    unknown = set(wanted) - {p.slug for p in peers.PEERS}
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    selected = () if args.no_peers else tuple(p for p in peers.PEERS if p.slug in wanted)
    settings = Settings(
        records=records,
        quick=args.quick,
        rtt_samples=200 if args.quick else RTT_SAMPLES,
        e2e_seconds=2.0 if args.quick else E2E_SECONDS,
        peers=selected,
    )

    run_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="logstore-broker-bench-", dir=args.dir) as parent:
        _print_machine(settings, parent)
        results, failures = _run_logstore(settings, parent)
        rows: list[tuple[str, dict[str, float] | str]] = []
        if selected:
            rows = peers.run_peers(records, peers=selected, tmpdir=parent, rtt_samples=settings.rtt_samples, log=_log)
    by_name = {r.name: r for r in results}

    _print_results(results, failures)
    if selected:
        print(f"Peers ({records:,} records; rtt = {settings.rtt_samples:,} sequential single-record produces)")
        print(peers.format_table(rows))
        print()
    _print_targets(by_name)
    if selected:
        _print_comparison(records, by_name, rows)
    print(f"load average after: {_load_average()}; whole run {time.monotonic() - run_started:.0f} s")
    peer_failed = any(isinstance(r, str) and r.startswith("FAILED") for _, r in rows)
    return 1 if failures or peer_failed else 0


if __name__ == "__main__":
    sys.exit(main())
