"""Shared helpers for the gRPC integration tests: plain-stub calls and the
client-side rules of the contract (dropping records outside a requested range,
the per-partition offset rule of ProduceResponse).

Everything here talks to a real broker through the generated stubs, the way
a client in any language would; nothing replaces logstore code.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logstore._proto.logstore.v1 import log_pb2, records_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
CLEAN_MARKER = ".clean-shutdown"
BROKER_SCRIPT = (
    "import sys\n"
    "from logstore.server.app import serve\n"
    "running = serve(sys.argv[1], sys.argv[2])\n"
    "print('ready', running.address, flush=True)\n"
    "running.wait()\n"
)
"""``python -c`` body of a broker child process: ``BROKER_SCRIPT DATA_DIR HOST:PORT``."""


# -- calls and statuses ------------------------------------------------------------------


def rpc_error(call: Callable[..., object], *args: object, **kwargs: object) -> grpc.RpcError:
    """Run a unary call (or drain a stream) that must fail, and return its error."""
    kwargs.setdefault("timeout", 10)
    try:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString") and not isinstance(result, bytes):
            for _ in result:  # a response stream: the error comes while reading
                pass
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected the call to fail, but it succeeded: {result!r}")


def expect_status(code: grpc.StatusCode, call: Callable[..., object], *args: object, **kwargs: object) -> str:
    """Assert that the call fails with ``code`` and a non-empty message; return the message."""
    err = rpc_error(call, *args, **kwargs)
    assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()!r}"
    details = err.details() or ""
    assert details.strip(), f"{code.name} came without a message"
    return details


# -- records -----------------------------------------------------------------------------


def precord(
    value: bytes | None = None,
    key: bytes | None = None,
    timestamp_ms: int = 0,
    headers: Iterable[tuple[str, bytes]] = (),
    partition: int | None = None,
) -> records_pb2.ProducerRecord:
    """A ProducerRecord; ``None`` leaves key/value/partition absent (null)."""
    r = records_pb2.ProducerRecord(timestamp_ms=timestamp_ms, headers=[records_pb2.Header(name=n, value=v) for n, v in headers])
    if key is not None:
        r.key = key
    if value is not None:
        r.value = value
    if partition is not None:
        r.partition = partition
    return r


def record_offsets(response: log_pb2.ProduceResponse, count: int) -> list[tuple[int, int]]:
    """(partition, offset) of each of the ``count`` records of a request, by the
    rule documented on ProduceResponse."""
    bases = {p.partition: p.base_offset for p in response.partitions}
    if response.record_partitions:
        assert len(response.record_partitions) == count, "record_partitions must have one entry per record"
        partitions = list(response.record_partitions)
    else:
        assert len(response.partitions) == 1, "without record_partitions there must be exactly one partition"
        partitions = [response.partitions[0].partition] * count
    seen: dict[int, int] = {}
    out = []
    for p in partitions:
        out.append((p, bases[p] + seen.get(p, 0)))
        seen[p] = seen.get(p, 0) + 1
    for result in response.partitions:
        assert result.record_count == seen.get(result.partition, 0), "record_count disagrees with record_partitions"
    return out


def batch_records(batch: records_pb2.RecordBatch) -> list[tuple[int, records_pb2.Record]]:
    """(offset, record) pairs of a batch: record i has offset base_offset + i."""
    assert batch.record_count == len(batch.records), "record_count must equal len(records)"
    return [(batch.base_offset + i, r) for i, r in enumerate(batch.records)]


def fetch_range(
    log_stub, topic: str, partition: int, start: int = 0, end: int | None = None
) -> list[tuple[int, records_pb2.Record]]:
    """Every record of ``[start, end)`` (``end`` defaults to the log end), read with
    Fetch and checked for gaps, repeats and the partition field."""
    out: list[tuple[int, records_pb2.Record]] = []
    offset = start
    while True:
        resp = log_stub.Fetch(log_pb2.FetchRequest(topic=topic, partition=partition, offset=offset), timeout=10)
        stop = resp.log_end_offset if end is None else end
        if offset >= stop:
            return out
        assert resp.batches, f"Fetch at {offset} < log end {resp.log_end_offset} returned no batch"
        for batch in resp.batches:
            assert batch.partition == partition
            assert batch.base_offset <= offset, f"batch at {batch.base_offset} skips offsets from {offset}"
            for o, r in batch_records(batch):
                if o >= offset and o < stop:
                    out.append((o, r))
            offset = max(offset, batch.base_offset + batch.record_count)
        if offset >= stop:
            return [(o, r) for o, r in out if o < stop]


@dataclass
class Subscription:
    """What a finished Subscribe stream delivered, after the client's drop rules."""

    responses: list[log_pb2.SubscribeResponse]
    records: list[tuple[int, records_pb2.Record]]
    start_offset: int
    stop_offset: int | None


def collect_subscription(responses: Iterable[log_pb2.SubscribeResponse]) -> Subscription:
    """Read a Subscribe stream to its end, checking the stream rules as it goes:
    start_offset only in the first response, stop_offset only in the last, and
    batches continuing exactly where the previous ones ended."""
    got = list(responses)
    assert got, "a Subscribe stream must send its first response at once"
    first = got[0]
    assert first.HasField("start_offset"), "the first response must carry start_offset"
    start = first.start_offset
    for r in got[1:]:
        assert not r.HasField("start_offset"), "only the first response carries start_offset"
    for r in got[:-1]:
        assert not r.HasField("stop_offset"), "only the last response carries stop_offset"
    stop = got[-1].stop_offset if got[-1].HasField("stop_offset") else None
    records = []
    expected_next: int | None = None
    for r in got:
        for batch in r.batches:
            if expected_next is None:
                assert batch.base_offset <= start < batch.base_offset + batch.record_count
            else:
                assert batch.base_offset == expected_next, f"gap or repeat: batch at {batch.base_offset}, expected {expected_next}"
            expected_next = batch.base_offset + batch.record_count
            for o, rec in batch_records(batch):
                if o >= start and (stop is None or o < stop):
                    records.append((o, rec))
    return Subscription(got, records, start, stop)


def values(records: Iterable[tuple[int, records_pb2.Record]]) -> list[bytes]:
    return [r.value for _, r in records]


# -- servers and processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(address: str, timeout: float = 20.0) -> None:
    """Poll the gRPC health service at ``address`` until it says SERVING."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
    raise AssertionError(f"no SERVING broker at {address} after {timeout}s: {last}")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_broker_process(data_dir: Path, port: int) -> subprocess.Popen:
    """A broker in a child process (``serve()`` on a fixed port), once it prints ready."""
    proc = subprocess.Popen(
        [PYTHON, "-c", BROKER_SCRIPT, str(data_dir), f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode()
            if line.startswith("ready"):
                return proc
        if proc.poll() is not None:
            raise AssertionError(f"broker child exited with {proc.returncode}: {proc.stderr.read().decode()}")
    kill_process(proc)
    raise AssertionError("broker child did not become ready within 30 s")


def kill_process(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def partition_dirs(data_dir: Path, topic: str) -> list[Path]:
    root = Path(data_dir) / "topics" / topic
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


class BrokerProcess:
    """One broker data directory and port, served by a child process that is SIGKILLed and restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.stderr: list[str] = []
        """What each killed broker wrote to stderr (warnings and errors), one entry per life."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_broker_process(self.data_dir, self.port)

    def kill(self) -> None:
        """SIGKILL; keep what the broker wrote to stderr.  Fails if it had exited by itself."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(15)
        assert proc.returncode == -signal.SIGKILL, f"the broker exited with {proc.returncode} before it was killed"
        assert proc.stderr is not None
        self.stderr.append(proc.stderr.read().decode(errors="replace"))
        kill_process(proc)

    def log_tail(self, chars: int = 3000) -> str:
        text = "".join(f"--- broker life {i} ---\n{t}" for i, t in enumerate(self.stderr) if t.strip())
        return text[-chars:]
