"""Restarting the broker: state survives a clean stop, the data directory is locked against a
second broker, and ``logstore serve`` shuts down cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time

import grpc
import pytest

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc
from logstore.errors import FailedPrecondition

from server_helpers import (
    CLEAN_MARKER,
    PYTHON,
    REPO_ROOT,
    child_env,
    fetch_range,
    free_port,
    kill_process,
    partition_dirs,
    precord,
    wait_serving,
)


def _snapshot(admin: admin_pb2_grpc.AdminStub, log: log_pb2_grpc.LogStub) -> dict:
    """Every topic (config included), every partition's description and every record."""
    state = {}
    for topic in admin.ListTopics(admin_pb2.ListTopicsRequest(), timeout=10).topics:
        desc = admin.DescribeTopic(admin_pb2.DescribeTopicRequest(topic=topic.name), timeout=10)
        state[topic.name] = (
            topic.SerializeToString(deterministic=True),
            [(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes, p.segment_count) for p in desc.partitions],
            [
                [(o, r.SerializeToString(deterministic=True)) for o, r in fetch_range(log, topic.name, p.partition)]
                for p in desc.partitions
            ],
        )
    return state


def _fill(admin: admin_pb2_grpc.AdminStub, log: log_pb2_grpc.LogStub) -> None:
    admin.CreateTopic(
        admin_pb2.CreateTopicRequest(
            topic="configured",
            partition_count=2,
            config=admin_pb2.TopicConfig(
                retention_ms=-1,
                retention_bytes=1 << 30,
                segment_bytes=4096,
                durability=admin_pb2.DURABILITY_INTERVAL,
                durability_interval_ms=250,
                max_record_bytes=2048,
                max_batch_bytes=8192,
            ),
        ),
        timeout=10,
    )
    admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="plain", partition_count=1), timeout=10)
    admin.CreatePartitions(admin_pb2.CreatePartitionsRequest(topic="plain", partition_count=3), timeout=10)
    for i in range(120):
        log.Produce(
            log_pb2.ProduceRequest(
                topic="configured",
                records=[precord(f"c{i}-{j}".encode() * 20, key=f"k{j}".encode(), headers=[("i", str(i).encode())]) for j in range(3)],
            ),
            timeout=10,
        )
    log.Produce(
        log_pb2.ProduceRequest(topic="plain", records=[precord(f"p{i}".encode(), key=f"key{i}".encode(), timestamp_ms=1000 + i) for i in range(50)]),
        timeout=10,
    )
    log.Produce(log_pb2.ProduceRequest(topic="plain", partition=2, records=[precord(), precord(b"", key=b"")]), timeout=10)


def test_clean_restart_keeps_topics_configs_and_records(data_dir, start_server, connect):
    """After a clean stop, a new broker on the same directory has the same topics, partition counts, configs and records."""
    first = start_server()
    admin, log = connect(first)
    _fill(admin, log)
    before = _snapshot(admin, log)
    assert set(before) == {"configured", "plain"}
    assert len(before["plain"][1]) == 3
    assert max(p[4] for p in before["configured"][1]) > 1, "the configured topic should have rolled segments"
    first.stop(1)
    for topic in ("configured", "plain"):
        dirs = partition_dirs(data_dir, topic)
        assert len(dirs) == len(before[topic][1])
        assert all((d / CLEAN_MARKER).is_file() for d in dirs), f"{topic}: clean-shutdown marker missing"

    second = start_server()
    admin, log = connect(second)
    after = _snapshot(admin, log)
    assert after == before
    configured = admin_pb2.Topic.FromString(after["configured"][0])
    assert configured.config.durability == admin_pb2.DURABILITY_INTERVAL
    assert (configured.config.segment_bytes, configured.config.max_record_bytes, configured.config.durability_interval_ms) == (4096, 2048, 250)
    # The log goes on where it stopped, and the restored limits are enforced.
    end = after["plain"][1][2][2]
    resp = log.Produce(log_pb2.ProduceRequest(topic="plain", partition=2, records=[precord(b"next")]), timeout=10)
    assert resp.partitions[0].base_offset == end
    with pytest.raises(grpc.RpcError) as info:
        log.Produce(log_pb2.ProduceRequest(topic="configured", partition=0, records=[precord(b"x" * 3000)]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "2048" in info.value.details()


def test_second_serve_on_the_same_data_dir_fails(data_dir, start_server, connect, tmp_path):
    """A second serve() on a data directory in use fails with FailedPrecondition naming the directory; the first keeps serving."""
    first = start_server()
    admin, log = connect(first)
    admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="held", partition_count=1), timeout=10)
    with pytest.raises(FailedPrecondition) as info:
        start_server(data_dir)
    assert str(data_dir) in info.value.message
    assert "in use" in info.value.message
    # The failed attempt did not disturb the running broker or release its lock.
    log.Produce(log_pb2.ProduceRequest(topic="held", partition=0, records=[precord(b"ok")]), timeout=10)
    assert [r.value for _, r in fetch_range(log, "held", 0)] == [b"ok"]
    with pytest.raises(FailedPrecondition):
        start_server(data_dir)
    # Another directory is fine, and once the first broker stops the directory is free again.
    start_server(tmp_path / "other")
    first.stop(1)
    admin, log = connect(start_server(data_dir))
    assert [r.value for _, r in fetch_range(log, "held", 0)] == [b"ok"]


def _serve_command(data_dir, port: int) -> list[str]:  # noqa: ANN001
    return [PYTHON, "-m", "logstore", "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]


def test_cli_serve_stops_cleanly_on_sigterm_and_locks_its_directory(data_dir, start_server, connect):
    """`logstore serve` exits 0 on SIGTERM leaving clean-shutdown markers; a second one on the same directory exits non-zero naming the lock holder."""
    port = free_port()
    proc = subprocess.Popen(
        _serve_command(data_dir, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=REPO_ROOT
    )
    try:
        wait_serving(f"127.0.0.1:{port}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            admin, log = admin_pb2_grpc.AdminStub(ch), log_pb2_grpc.LogStub(ch)
            admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="cli", partition_count=3), timeout=10)
            log.Produce(log_pb2.ProduceRequest(topic="cli", records=[precord(f"{i}".encode(), key=f"{i}".encode()) for i in range(30)]), timeout=10)

            second = subprocess.run(
                _serve_command(data_dir, free_port()), capture_output=True, env=child_env(), cwd=REPO_ROOT, timeout=60
            )
            message = second.stderr.decode()
            assert second.returncode != 0, f"a second broker started on a locked directory: {message}"
            assert str(data_dir) in message, message
            assert f"pid {proc.pid}" in message, f"the message does not name the lock holder (pid {proc.pid}): {message}"
            assert "Traceback" not in message, message
            # The first broker is unaffected.
            log.Produce(log_pb2.ProduceRequest(topic="cli", partition=0, records=[precord(b"after")]), timeout=10)

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("logstore serve did not exit within 20 s of SIGTERM") from None
        stderr = proc.stderr.read().decode()
        assert code == 0, f"exit code {code} after SIGTERM: {stderr}"
        assert "Traceback" not in stderr, stderr
    finally:
        kill_process(proc)
    dirs = partition_dirs(data_dir, "cli")
    assert len(dirs) == 3
    missing = [d.name for d in dirs if not (d / CLEAN_MARKER).is_file()]
    assert not missing, f"partitions without a clean-shutdown marker: {missing}"
    # Everything acknowledged before SIGTERM is there on restart.
    admin, log = connect(start_server(data_dir))
    got = sorted(r.value for p in range(3) for _, r in fetch_range(log, "cli", p))
    assert got == sorted([f"{i}".encode() for i in range(30)] + [b"after"])


def test_cli_serve_sigterm_ends_open_subscriptions(data_dir):
    """SIGTERM to `logstore serve` ends a live Subscribe with UNAVAILABLE and the process still exits 0 promptly."""
    port = free_port()
    proc = subprocess.Popen(
        _serve_command(data_dir, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(), cwd=REPO_ROOT
    )
    try:
        wait_serving(f"127.0.0.1:{port}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            admin_pb2_grpc.AdminStub(ch).CreateTopic(admin_pb2.CreateTopicRequest(topic="live", partition_count=1), timeout=10)
            call = log_pb2_grpc.LogStub(ch).Subscribe(
                log_pb2.SubscribeRequest(topic="live", partition=0, start_position=log_pb2.LOG_POSITION_LATEST), timeout=30
            )
            assert next(call).start_offset == 0
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as info:
                for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
            assert proc.wait(timeout=20) == 0
            assert time.monotonic() - start < 10
    finally:
        kill_process(proc)


def test_damaged_batch_is_answered_with_data_loss(data_dir, start_server, connect):
    """A stored batch whose bytes were damaged on disk is never served: Fetch and Subscribe reach it with DATA_LOSS, earlier batches still read."""
    admin, log = connect(start_server())
    admin.CreateTopic(admin_pb2.CreateTopicRequest(topic="damaged", partition_count=1), timeout=10)
    for value in (b"first", b"second", b"DAMAGE-ME" * 10, b"fourth"):
        log.Produce(log_pb2.ProduceRequest(topic="damaged", partition=0, records=[precord(value)]), timeout=10)
    start_server.stop_all()
    [segment] = sorted((partition_dirs(data_dir, "damaged")[0]).glob("*.log"))
    raw = bytearray(segment.read_bytes())
    at = raw.index(b"DAMAGE-ME") + 3
    raw[at] ^= 0x20  # one flipped bit inside the third record's value
    segment.write_bytes(bytes(raw))

    admin, log = connect(start_server())
    assert [r.value for _, r in fetch_range(log, "damaged", 0, 0, 2)] == [b"first", b"second"]
    with pytest.raises(grpc.RpcError) as info:
        log.Fetch(log_pb2.FetchRequest(topic="damaged", partition=0, offset=2), timeout=10)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS, info.value.details()
    served = []
    with pytest.raises(grpc.RpcError) as info:
        for resp in log.Subscribe(log_pb2.SubscribeRequest(topic="damaged", partition=0, start_offset=0), timeout=10):
            served.extend(r.value for b in resp.batches for r in b.records)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS, info.value.details()
    assert served == [b"first", b"second"], "damaged (or later) bytes were served"
