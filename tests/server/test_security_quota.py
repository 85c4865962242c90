"""The per-principal produce quota on a real broker: a principal pushing far above
its quota is slowed to it (measured over seconds of real traffic), is told so in
``throttle_time_ms``, and is never refused; another principal producing at the
same time is not slowed at all.  (The token bucket itself is tested without a
broker in test_security_limits_core.py; this measures the wired-up whole.)"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import pytest

from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2
from logstore.client import Admin, Producer
from logstore.server.app import RunningServer
from security_helpers import Tokens, make_tokens, security_config, security_toml

QUOTA = 2 << 20  # bytes per second for principal "slow"
REQUEST_VALUE = 64 << 10
WARMUP_S = 1.0  # the first second spends the burst (burst_ms = 1000)
MEASURE_S = 3.5
ALL = 'topics = { "*" = ["produce", "consume", "admin"] }'


@pytest.fixture
def tokens() -> Tokens:
    return make_tokens("slow", "fast")


@pytest.fixture
def quota_server(start_server: Callable[..., RunningServer], tmp_path: Path, tokens: Tokens) -> RunningServer:
    text = security_toml(tokens, {"slow": ALL, "fast": ALL}, extra=f"[quotas.principals]\nslow = {QUOTA}\n")
    running = start_server(security=security_config(tmp_path / "security.toml", text))
    with Admin(running.address, token=tokens["fast"]) as admin:
        admin.create_topic("bulk", 2)
    return running


@dataclass
class Traffic:
    """What one principal's senders saw: (completion time, request bytes, throttle ms, latency s) per request."""

    done: list[tuple[float, int, int, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rate(self, start: float, end: float) -> float:
        """Bytes per second of the requests answered in [start, end)."""
        return sum(n for t, n, _, _ in self.done if start <= t < end) / (end - start)


def _push(address: str, token: str, partition: int, traffic: Traffic, until: float) -> None:
    """Send Produce requests of a known size back to back until ``until``."""
    request = log_pb2.ProduceRequest(
        topic="bulk", partition=partition, records=[records_pb2.ProducerRecord(value=b"v" * REQUEST_VALUE)]
    )
    size = request.ByteSize()
    with grpc.insecure_channel(address) as channel:
        produce = log_pb2_grpc.LogStub(channel).Produce
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                response = produce(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
            except grpc.RpcError as exc:
                with traffic.lock:
                    traffic.errors.append(exc)
                return
            now = time.monotonic()
            assert [p.error.code for p in response.partitions] == [0]
            with traffic.lock:
                traffic.done.append((now, size, response.throttle_time_ms, now - sent))


def test_a_producer_over_quota_is_slowed_to_it_and_others_are_not(quota_server: RunningServer, tokens: Tokens) -> None:
    """4 senders of 'slow' get within 10% of its 2 MiB/s, with throttle_time_ms > 0 and no error; 'fast' is never throttled."""
    slow, fast = Traffic(), Traffic()
    start = time.monotonic()
    until = start + WARMUP_S + MEASURE_S
    threads = [threading.Thread(target=_push, args=(quota_server.address, tokens["slow"], i % 2, slow, until))
               for i in range(4)]
    threads.append(threading.Thread(target=_push, args=(quota_server.address, tokens["fast"], 1, fast, until)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert slow.errors == [] and fast.errors == []
    measured = slow.rate(start + WARMUP_S, until)
    print(f"slow: {measured / QUOTA:.3f} of its quota; fast: {fast.rate(start + WARMUP_S, until) / QUOTA:.1f}x that quota")
    assert abs(measured - QUOTA) / QUOTA < 0.10, f"measured {measured:.0f} B/s against a quota of {QUOTA}"
    throttled = [ms for t, _, ms, _ in slow.done if t >= start + WARMUP_S]
    assert throttled and min(throttled) > 0
    assert all(ms == 0 for _, _, ms, _ in fast.done)
    assert fast.rate(start + WARMUP_S, until) > 3 * QUOTA
    assert statistics.median(lat for _, _, _, lat in fast.done) < 0.1 < statistics.median(lat for _, _, _, lat in slow.done)


def test_the_python_producer_is_throttled_on_its_stream(quota_server: RunningServer, tokens: Tokens) -> None:
    """Through Producer (ProduceStream) the slow principal's acked bytes also stay within 10% of its quota."""
    acked: list[tuple[float, int]] = []
    lock = threading.Lock()
    value = b"s" * (16 << 10)

    def on_done(future) -> None:  # noqa: ANN001
        if future.exception() is None:
            with lock:
                acked.append((time.monotonic(), len(value)))

    start = time.monotonic()
    until = start + WARMUP_S + MEASURE_S
    with Producer(quota_server.address, token=tokens["slow"], batch_bytes=64 << 10, linger_ms=1) as producer:
        while time.monotonic() < until:
            producer.send("bulk", value, partition=0).add_done_callback(on_done)
    measured = sum(n for t, n in acked if start + WARMUP_S <= t < until) / MEASURE_S
    print(f"producer: {measured / QUOTA:.3f} of its quota")
    assert abs(measured - QUOTA) / QUOTA < 0.10, f"measured {measured:.0f} B/s against a quota of {QUOTA}"


def test_produce_stream_reports_throttle_time_per_response(quota_server: RunningServer, tokens: Tokens) -> None:
    """On ProduceStream every answer past the burst carries its own throttle_time_ms; none is an error."""
    request = log_pb2.ProduceRequest(topic="bulk", partition=0, records=[records_pb2.ProducerRecord(value=b"x" * (256 << 10))])
    stream = [log_pb2.ProduceStreamRequest(request_id=i, produce=request) for i in range(16)]  # 4 MiB: 2 s at 2 MiB/s
    with grpc.insecure_channel(quota_server.address) as channel:
        answers = list(log_pb2_grpc.LogStub(channel).ProduceStream(
            iter(stream), metadata=[("authorization", f"Bearer {tokens['slow']}")], timeout=60))
    assert [a.request_id for a in answers] == list(range(16))
    assert all(a.HasField("response") for a in answers)
    waits = [a.response.throttle_time_ms for a in answers]
    # The burst (2 MiB) covers the first ~8 requests; each later one waits for its own 256 KiB (~125 ms).
    assert waits[0] == 0 and all(100 <= w <= 200 for w in waits[9:]) and sum(waits) > 800


def test_quota_applies_to_anonymous_without_authentication(start_server: Callable[..., RunningServer], tmp_path: Path) -> None:
    """Without tokens the default quota applies to 'anonymous' and Produce reports the wait."""
    config = security_config(tmp_path / "s.toml", "[quotas]\nproduce_bytes_per_second = 100000\nburst_ms = 100\n")
    running = start_server(security=config)
    request = log_pb2.ProduceRequest(topic="t", partition=0, records=[records_pb2.ProducerRecord(value=b"a" * 50_000)])
    with grpc.insecure_channel(running.address) as channel:
        Admin(_channel=(channel, running.address)).create_topic("t", 1)
        produce = log_pb2_grpc.LogStub(channel).Produce
        first, second = produce(request, timeout=10), produce(request, timeout=10)
    assert first.throttle_time_ms > 0 and second.throttle_time_ms > first.throttle_time_ms
    assert second.partitions[0].base_offset == 1


def test_a_throttled_request_cancelled_by_its_client_appends_nothing(quota_server: RunningServer, tokens: Tokens) -> None:
    """A request held back for quota and cancelled meanwhile is dropped, not appended; the broker serves on."""
    metadata = [("authorization", f"Bearer {tokens['slow']}")]
    big = log_pb2.ProduceRequest(topic="bulk", partition=0, records=[records_pb2.ProducerRecord(value=b"b" * (768 << 10))] * 4)
    latest = log_pb2.ListOffsetsRequest(topic="bulk", partitions=[0], position=log_pb2.LOG_POSITION_LATEST)
    with grpc.insecure_channel(quota_server.address) as channel:
        log = log_pb2_grpc.LogStub(channel)
        first = log.Produce(big, metadata=metadata, timeout=30)  # spends the burst and leaves ~1 MiB of debt
        assert first.partitions[0].base_offset == 0
        held = log.Produce.future(big, metadata=metadata, timeout=30)  # must wait ~2 s
        time.sleep(0.3)
        assert not held.done()
        held.cancel()
        time.sleep(0.5)
        assert log.ListOffsets(latest, metadata=metadata, timeout=10).partitions[0].log_end_offset == 4
        fast = [("authorization", f"Bearer {tokens['fast']}")]
        assert log.Produce(big, metadata=fast, timeout=10).partitions[0].base_offset == 4
