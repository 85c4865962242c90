"""The Node.js example (examples/node) talks to a real broker with nothing but
@grpc/grpc-js, @grpc/proto-loader and the .proto files, and agrees byte for byte
with the Python stubs: what Node produces Python reads back, and vice versa.

Skipped only when there is no ``node`` on PATH.  When node_modules is missing
or does not hold the pinned versions, ``npm ci`` installs it; a failed install
fails the tests rather than skipping them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc, records_pb2
from logstore.server.app import RunningServer, serve

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "examples" / "node"
NODE_TIMEOUT = 60
NPM_CI_TIMEOUT = 600

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (needed for examples/node)")


def _installed_matches_pins() -> bool:
    pins = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pins.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


@pytest.fixture(scope="module")
def node_modules() -> None:
    if _installed_matches_pins():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("examples/node/node_modules is missing and npm is not installed to run `npm ci`")
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`npm ci` in examples/node took longer than {NPM_CI_TIMEOUT}s")
    if result.returncode != 0 or not _installed_matches_pins():
        pytest.fail(f"`npm ci` in examples/node failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@pytest.fixture
def broker(tmp_path: Path, node_modules: None) -> Iterator[RunningServer]:
    running = serve(tmp_path / "data", "127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def channel(broker: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(broker.address) as chan:
        yield chan


def _node(broker: RunningServer, script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["node", str(NODE_DIR / script), *args, "--broker", broker.address],
        input=stdin.encode("utf-8"), capture_output=True, timeout=NODE_TIMEOUT, cwd=NODE_DIR,
    )


def _json_lines(result: subprocess.CompletedProcess[bytes]) -> list[dict]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.decode('utf-8', 'replace')}"
    assert result.stderr == b"", result.stderr.decode("utf-8", "replace")
    return [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]


def _read_partition(channel: grpc.Channel, topic: str, partition: int) -> dict[int, records_pb2.Record]:
    """Every record of a partition by offset, read with Subscribe from 0 up to the log end."""
    log = log_pb2_grpc.LogStub(channel)
    latest = log_pb2.ListOffsetsRequest(topic=topic, partitions=[partition], position=log_pb2.LOG_POSITION_LATEST)
    end = log.ListOffsets(latest, timeout=10).partitions[0].log_end_offset
    found: dict[int, records_pb2.Record] = {}
    request = log_pb2.SubscribeRequest(topic=topic, partition=partition, start_offset=0, stop_offset=end)
    for response in log.Subscribe(request, timeout=10):
        for batch in response.batches:
            for i, record in enumerate(batch.records):
                if batch.base_offset + i < end:
                    found[batch.base_offset + i] = record
    assert sorted(found) == list(range(end))
    return found


def _as_python(record: records_pb2.Record) -> dict:
    return {
        "key": record.key.decode() if record.HasField("key") else None,
        "value": record.value.decode() if record.HasField("value") else None,
        "headers": [[h.name, h.value.decode()] for h in record.headers],
    }


def _pairs(headers: dict | list) -> list[list[str]]:
    return [list(pair) for pair in (headers.items() if isinstance(headers, dict) else headers)]


def _create_topic(channel: grpc.Channel, topic: str, partition_count: int) -> None:
    request = admin_pb2.CreateTopicRequest(topic=topic, partition_count=partition_count)
    admin_pb2_grpc.AdminStub(channel).CreateTopic(request, timeout=10)


def _produce(channel: grpc.Channel, topic: str, partition: int, *records: records_pb2.ProducerRecord) -> None:
    """One Produce request, so one batch, to one partition."""
    request = log_pb2.ProduceRequest(topic=topic, partition=partition, records=records)
    response = log_pb2_grpc.LogStub(channel).Produce(request, timeout=10)
    assert [r.error.code for r in response.partitions] == [0]


def _record(timestamp_ms: int, key: bytes | None = None, value: bytes | None = None,
            headers: tuple[tuple[str, bytes], ...] = ()) -> records_pb2.ProducerRecord:
    record = records_pb2.ProducerRecord(
        timestamp_ms=timestamp_ms, headers=[records_pb2.Header(name=n, value=v) for n, v in headers]
    )
    if key is not None:
        record.key = key
    if value is not None:
        record.value = value
    return record


def test_node_produces_what_python_reads(broker: RunningServer, channel: grpc.Channel) -> None:
    """produce.js creates the topic, and each {partition, offset} it prints holds exactly the record it sent."""
    json_mode = [
        {"key": "user-1", "value": "first", "headers": {"trace": "t-1", "kind": "order"}},
        {"key": "user-2", "value": "", "headers": [["dup", "a"], ["dup", "b"], ["", ""]]},
        {"value": "no key"},
        {"key": "", "value": None},
        {"key": "ключ", "value": "värde ✓", "headers": {"ü": "ß"}},
        {"key": "user-1", "value": "second"},
    ]
    stdin = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in json_mode)
    # No partition named: the broker routes each record, so the response carries record_partitions.
    routed = _json_lines(_node(broker, "produce.js", "orders", "--json", "--partitions", "3", stdin=stdin))
    # The topic exists now; a named partition and plain lines, the empty one an empty value.
    pinned = _json_lines(_node(broker, "produce.js", "orders", "--partition", "2", "--key", "k", stdin="x\n\ny\n"))

    expected = [
        {"key": line.get("key"), "value": line.get("value"), "headers": _pairs(line.get("headers", {}))}
        for line in json_mode
    ] + [{"key": "k", "value": value, "headers": []} for value in ("x", "", "y")]
    placements = routed + pinned
    assert len(placements) == len(expected)
    assert all(set(p) == {"partition", "offset"} for p in placements)
    assert [p["partition"] for p in pinned] == [2, 2, 2]

    describe = admin_pb2.DescribeTopicRequest(topic="orders")
    assert admin_pb2_grpc.AdminStub(channel).DescribeTopic(describe, timeout=10).topic.partition_count == 3
    stored = {(p, offset): rec for p in range(3) for offset, rec in _read_partition(channel, "orders", p).items()}
    assert sorted((p["partition"], p["offset"]) for p in placements) == sorted(stored)
    assert [_as_python(stored[p["partition"], p["offset"]]) for p in placements] == expected
    # Keyed records were routed by key, so both "user-1" records share a partition.
    assert placements[0]["partition"] == placements[5]["partition"]


def test_python_produces_what_node_reads(broker: RunningServer, channel: grpc.Channel) -> None:
    """consume.js prints record i of a batch at base_offset + i, drops records before the start, tells null from ""."""
    ts = 1_700_000_000_000
    _create_topic(channel, "events", 2)
    _produce(  # one batch, offsets 0-3
        channel, "events", 0,
        _record(ts, b"k1", b"v1", (("h", b"1"), ("h", b"2"))),
        _record(ts + 1, value=b"no key"),
        _record(ts + 2, b"", b""),
        _record(ts + 3, key=b"null value"),
    )
    _produce(  # a second batch, offsets 4-5
        channel, "events", 0,
        _record(ts + 4, "ключ".encode(), "värde ✓".encode(), (("", b""),)),
        _record(ts + 5, b"k6", b"v6"),
    )
    _produce(channel, "events", 1, _record(ts, value=b"p1"))

    def line(offset: int, key: str | None, value: str | None, headers: list | None = None, partition: int = 0) -> dict:
        return {"topic": "events", "partition": partition, "offset": offset, "timestamp": ts + offset,
                "key": key, "value": value, "headers": headers or []}

    everything = [
        line(0, "k1", "v1", [["h", "1"], ["h", "2"]]),
        line(1, None, "no key"),
        line(2, "", ""),
        line(3, "null value", None),
        line(4, "ключ", "värde ✓", [["", ""]]),
        line(5, "k6", "v6"),
    ]

    def consume(*args: str) -> list[dict]:
        return _json_lines(_node(broker, "consume.js", "events", "--partition", "0", *args))

    assert consume("--from-beginning", "--max", "6") == everything
    # Offset 1 is inside the first batch: the batch's record 0 must be dropped.
    assert consume("--offset", "1", "--max", "5") == everything[1:]
    assert consume("--offset", "4", "--max", "1") == everything[4:5]

    # Following the log: a record appended after the subscription started is delivered.
    follower = subprocess.Popen(
        ["node", str(NODE_DIR / "consume.js"), "events", "--partition", "1", "--offset", "0", "--max", "2",
         "--broker", broker.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=NODE_DIR,
    )
    try:
        _produce(channel, "events", 1, _record(ts + 1, key=b"late"))
        out, err = follower.communicate(timeout=NODE_TIMEOUT)
    finally:
        follower.kill()
    followed = _json_lines(subprocess.CompletedProcess(follower.args, follower.returncode, out, err))
    assert followed == [line(0, None, "p1", partition=1), line(1, "late", None, partition=1)]


def test_node_consumer_refuses_bytes_it_cannot_print(broker: RunningServer, channel: grpc.Channel) -> None:
    """consume.js exits 1 naming the offset when a value is not UTF-8, instead of printing mangled text."""
    _create_topic(channel, "binary", 1)
    _produce(channel, "binary", 0, _record(0, value=b"ok"), _record(0, value=b"\xff\xfe"))
    result = _node(broker, "consume.js", "binary", "--partition", "0", "--from-beginning", "--max", "2")
    assert result.returncode == 1
    assert json.loads(result.stdout.decode().splitlines()[0])["value"] == "ok"
    assert b"offset 1 is not UTF-8" in result.stderr
