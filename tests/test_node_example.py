"""The Node.js example (examples/node) talks to a real broker with nothing but
@grpc/grpc-js, @grpc/proto-loader and the .proto files, and agrees byte for byte
with the Python stubs: what Node produces Python reads back, and vice versa.
consume_group.js joins a consumer group on the Groups.Consume stream, prints
every record once, and its acks become the group's committed offsets.  With
the LOGSTORE_TLS_* and LOGSTORE_TOKEN variables the three scripts talk to a
broker that requires mutual TLS and tokens (a throwaway PKI made by openssl).

Skipped only when there is no ``node`` on PATH.  When node_modules is missing
or does not hold the pinned versions, ``npm ci`` installs it; a failed install
fails the tests rather than skipping them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from logstore._proto.logstore.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    groups_pb2,
    groups_pb2_grpc,
    log_pb2,
    log_pb2_grpc,
    records_pb2,
)
from logstore.client import Admin, ClientTLS, Producer
from logstore.server.app import RunningServer, serve
from logstore.server.tls import ServerTLS

if str(Path(__file__).resolve().parent / "server") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "server"))
from security_helpers import Pki, Tokens, make_tokens, pki, security_config, security_toml  # noqa: E402, F401

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "examples" / "node"
NODE_TIMEOUT = 60
NPM_CI_TIMEOUT = 600
WAIT_TIMEOUT = 30

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


def _node(broker: RunningServer, script: str, *args: str, stdin: str = "",
          env: dict[str, str] | None = None, address: str | None = None) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOGSTORE_")}
    return subprocess.run(
        ["node", str(NODE_DIR / script), *args, "--broker", address or broker.address],
        input=stdin.encode("utf-8"), capture_output=True, timeout=NODE_TIMEOUT, cwd=NODE_DIR,
        env={**clean, **(env or {})},
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


# -- consume_group.js: a consumer-group member built from the stubs alone ---------


def _wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _produce_spread(broker: RunningServer, topic: str, count: int, partitions: int) -> dict[tuple[int, int], dict]:
    """Produce ``count`` keyed records round-robin over the partitions with the Python Producer; returns
    the JSON line consume_group.js should print for each, by (partition, offset), for a first delivery."""
    with Producer(broker.address, acks="durable") as producer:
        futures = [
            (i, producer.send(topic, value=f"value-{i}", key=f"key-{i}", headers={"n": str(i)}, partition=i % partitions))
            for i in range(count)
        ]
        placed = [(i, future.result(timeout=WAIT_TIMEOUT)) for i, future in futures]
    return {
        (meta.partition, meta.offset): {
            "topic": topic, "partition": meta.partition, "offset": meta.offset, "timestamp": meta.timestamp_ms,
            "key": f"key-{i}", "value": f"value-{i}", "headers": [["n", str(i)]], "attempt": 1,
        }
        for i, meta in placed
    }


def _log_ends(channel: grpc.Channel, topic: str) -> dict[tuple[str, int], int]:
    request = log_pb2.ListOffsetsRequest(topic=topic, position=log_pb2.LOG_POSITION_LATEST)
    response = log_pb2_grpc.LogStub(channel).ListOffsets(request, timeout=10)
    return {(topic, p.partition): p.log_end_offset for p in response.partitions}


def _committed(channel: grpc.Channel, group: str) -> dict[tuple[str, int], int]:
    request = groups_pb2.FetchCommittedOffsetsRequest(group=group)
    response = groups_pb2_grpc.GroupsStub(channel).FetchCommittedOffsets(request, timeout=10)
    return {(o.topic, o.partition): o.offset for o in response.offsets}


def _describe_group(channel: grpc.Channel, group: str) -> groups_pb2.DescribeGroupResponse | None:
    """The group as DescribeGroup shows it, or None while the broker does not know it."""
    try:
        return groups_pb2_grpc.GroupsStub(channel).DescribeGroup(groups_pb2.DescribeGroupRequest(group=group), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _group_member(broker: RunningServer, group: str, topic: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["node", str(NODE_DIR / "consume_group.js"), group, topic, *args, "--broker", broker.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=NODE_DIR,
    )


def _by_position(lines: list[dict]) -> dict[tuple[int, int], dict]:
    """Lines by (partition, offset); fails if a record was printed twice."""
    positions = [(line["partition"], line["offset"]) for line in lines]
    assert len(set(positions)) == len(positions), f"records printed twice: {sorted(positions)}"
    return dict(zip(positions, lines))


def test_node_group_member_prints_every_record_once_and_commits(broker: RunningServer, channel: grpc.Channel) -> None:
    """consume_group.js --count N prints each of N records once (attempt 1) and its acks commit the log end."""
    _create_topic(channel, "leads", 3)
    expected = _produce_spread(broker, "leads", 30, 3)

    result = _node(broker, "consume_group.js", "crm", "leads", "--start", "earliest", "--count", "30")

    assert _by_position(_json_lines(result)) == expected
    ends = _log_ends(channel, "leads")
    assert ends == {("leads", 0): 10, ("leads", 1): 10, ("leads", 2): 10}
    # The broker writes commits shortly after the acks that advance them.
    _wait_for(lambda: _committed(channel, "crm") == ends, "the committed offsets to reach the log end")


def test_node_group_member_acks_only_what_it_printed(broker: RunningServer, channel: grpc.Channel) -> None:
    """A member stopped by --count mid-delivery acks only the printed records; the next member gets the rest."""
    _create_topic(channel, "orders", 1)
    expected = _produce_spread(broker, "orders", 20, 1)

    first = _json_lines(_node(broker, "consume_group.js", "billing", "orders", "--start", "earliest", "--count", "5"))
    _wait_for(lambda: _committed(channel, "billing") == {("orders", 0): 5}, "offset 5 to be committed")
    second = _json_lines(_node(broker, "consume_group.js", "billing", "orders", "--count", "15"))

    assert [line["offset"] for line in first] == [0, 1, 2, 3, 4]
    assert [line["offset"] for line in second] == list(range(5, 20))
    # Records 5.. may have been in flight to the first member: only `attempt` may differ.
    assert [{**line, "attempt": 1} for line in first + second] == [expected[0, offset] for offset in range(20)]
    _wait_for(lambda: _committed(channel, "billing") == {("orders", 0): 20}, "offset 20 to be committed")


def test_two_node_members_share_a_group(broker: RunningServer, channel: grpc.Channel) -> None:
    """Two consume_group.js members split the partitions, print every record exactly once between them, and leave on SIGINT."""
    _create_topic(channel, "clicks", 4)
    members = [_group_member(broker, "web", "clicks", "--client-id", f"member-{n}") for n in range(2)]
    try:
        def balanced() -> bool:
            group = _describe_group(channel, "web")
            return group is not None and len(group.members) == 2 and all(len(m.assignment) == 2 for m in group.members)

        # Produce only once both have joined, so no rebalance moves records in flight.
        _wait_for(balanced, "both members to own two partitions each")
        expected = _produce_spread(broker, "clicks", 40, 4)
        ends = _log_ends(channel, "clicks")
        # A record is acked only after it is printed, so this means both printed everything they got.
        _wait_for(lambda: _committed(channel, "web") == ends, "the committed offsets to reach the log end")
        for member in members:
            member.send_signal(signal.SIGINT)
        outputs = [member.communicate(timeout=NODE_TIMEOUT) for member in members]
    finally:
        for member in members:
            member.kill()
            member.wait()

    printed = [
        _json_lines(subprocess.CompletedProcess(member.args, member.returncode, out, err))
        for member, (out, err) in zip(members, outputs)
    ]
    assert _by_position(printed[0] + printed[1]) == expected
    partitions = [{line["partition"] for line in lines} for lines in printed]
    assert len(partitions[0]) == len(partitions[1]) == 2 and not partitions[0] & partitions[1]
    group = _describe_group(channel, "web")
    assert group is not None and list(group.members) == []


def test_node_group_member_reports_a_refused_join(broker: RunningServer, channel: grpc.Channel) -> None:
    """consume_group.js exits 1 with the broker's status when the join names an unknown topic or an absurd option."""
    _create_topic(channel, "real", 1)

    unknown = _node(broker, "consume_group.js", "g", "no-such-topic", "--count", "1")
    absurd = _node(broker, "consume_group.js", "g", "real", "--max-in-flight", "1000000", "--count", "1")

    assert (unknown.returncode, unknown.stdout) == (1, b"")
    assert unknown.stderr.decode().startswith("consume_group.js: NOT_FOUND: ")
    assert b"no-such-topic" in unknown.stderr
    assert (absurd.returncode, absurd.stdout) == (1, b"")
    assert absurd.stderr.decode().startswith("consume_group.js: INVALID_ARGUMENT: ")
    assert b"max_in_flight_records" in absurd.stderr


def test_node_group_member_heartbeats_keep_a_quiet_member(broker: RunningServer, channel: grpc.Channel) -> None:
    """A consume_group.js member that gets nothing for many session timeouts stays in the group by heartbeats alone."""
    _create_topic(channel, "quiet", 1)
    member = _group_member(broker, "idle", "quiet", "--session-timeout-ms", "300", "--count", "3")
    try:
        def one_member() -> groups_pb2.DescribeGroupResponse | None:
            group = _describe_group(channel, "idle")
            return group if group is not None and len(group.members) == 1 else None

        joined = _wait_for(one_member, "the member to join")
        first = joined.members[0]

        def heard_from_long_after_join() -> groups_pb2.GroupMember | None:
            members = _describe_group(channel, "idle").members
            return next((m for m in members if m.last_seen_ms - first.joined_ms >= 1500), None)

        # 1.5 s is five session timeouts: without heartbeats the broker would have removed the member.
        latest = _wait_for(heard_from_long_after_join, "a heartbeat 1.5 s after the join")
        assert (latest.member_id, latest.joined_ms) == (first.member_id, first.joined_ms)
        assert _describe_group(channel, "idle").generation == joined.generation
        expected = _produce_spread(broker, "quiet", 3, 1)
        out, err = member.communicate(timeout=NODE_TIMEOUT)
    finally:
        member.kill()
        member.wait()
    printed = _json_lines(subprocess.CompletedProcess(member.args, member.returncode, out, err))
    assert _by_position(printed) == expected


def test_node_group_member_stops_at_bytes_it_cannot_print(broker: RunningServer, channel: grpc.Channel) -> None:
    """consume_group.js exits 1 at a value that is not UTF-8, having acked only the records printed before it."""
    _create_topic(channel, "mixed", 1)
    _produce(channel, "mixed", 0, _record(0, value=b"ok"), _record(0, value=b"\xff\xfe"), _record(0, value=b"later"))

    result = _node(broker, "consume_group.js", "printer", "mixed", "--start", "earliest", "--count", "3")

    assert result.returncode == 1
    assert [json.loads(line)["value"] for line in result.stdout.decode().splitlines()] == ["ok"]
    assert b"offset 1 is not UTF-8" in result.stderr
    _wait_for(lambda: _committed(channel, "printer") == {("mixed", 0): 1}, "offset 1 to be committed")
    group = _describe_group(channel, "printer")
    assert group is not None and list(group.members) == []


# -- TLS and tokens: LOGSTORE_TLS_CA / _CERT / _KEY and LOGSTORE_TOKEN ------------------------

NODE_GRANTS = {
    "writer": 'topics = { "*" = ["produce", "admin"] }',
    "reader": 'topics = { "secure" = ["consume"] }\ngroups = { "node" = ["consume"] }',
}


@pytest.fixture
def secure_broker(tmp_path: Path, node_modules: None, pki: Pki) -> Iterator[tuple[RunningServer, Tokens]]:  # noqa: F811
    """A broker that requires client certificates from the test CA and tokens."""
    tokens = make_tokens(*NODE_GRANTS)
    security = security_config(tmp_path / "security.toml", security_toml(tokens, NODE_GRANTS))
    running = serve(tmp_path / "data", "127.0.0.1:0", tls=ServerTLS.load(pki.server_cert, pki.server_key, pki.ca),
                    security=security)
    try:
        yield running, tokens
    finally:
        running.stop()


def _tls_env(pki: Pki, token: str | None, cert: Path | None = None, key: Path | None = None) -> dict[str, str]:  # noqa: F811
    """The LOGSTORE_TLS_* variables for the test CA and a client certificate, and LOGSTORE_TOKEN if given."""
    env = {"LOGSTORE_TLS_CA": str(pki.ca), "LOGSTORE_TLS_CERT": str(cert or pki.client_cert),
           "LOGSTORE_TLS_KEY": str(key or pki.client_key)}
    return {**env, "LOGSTORE_TOKEN": token} if token else env


def _by_name(broker: RunningServer) -> str:
    """The broker as localhost:PORT: the certificate names DNS:localhost and IP:127.0.0.1, and Node
    warns on stderr (DEP0123) when TLS is used with an IP address as the server name."""
    return f"localhost:{broker.port}"


def test_node_scripts_work_over_mutual_tls_with_tokens(secure_broker, pki: Pki) -> None:  # noqa: ANN001, F811
    """produce.js, consume.js and consume_group.js connect with the CA, a client certificate and a token."""
    broker, tokens = secure_broker
    at = _by_name(broker)
    produced = _json_lines(_node(broker, "produce.js", "secure", "--partitions", "1", stdin="a\nb\n", address=at,
                                 env=_tls_env(pki, tokens["writer"])))
    assert [p["offset"] for p in produced] == [0, 1]
    read = _json_lines(_node(broker, "consume.js", "secure", "--partition", "0", "--from-beginning", "--max", "2",
                             address=at, env=_tls_env(pki, tokens["reader"])))
    assert [line["value"] for line in read] == ["a", "b"]
    grouped = _json_lines(_node(broker, "consume_group.js", "node", "secure", "--start", "earliest", "--count", "2",
                                address=at, env=_tls_env(pki, tokens["reader"])))
    assert sorted(line["value"] for line in grouped) == ["a", "b"]
    with Admin(broker.address, tls=ClientTLS(pki.ca, pki.client_cert, pki.client_key), token=tokens["writer"]) as admin:
        assert admin.describe_topic("secure").partitions[0].log_end_offset == 2


def test_node_scripts_are_refused_without_token_permission_or_trusted_certificate(secure_broker, pki: Pki) -> None:  # noqa: ANN001, F811
    """No token: UNAUTHENTICATED; a token without the permission: PERMISSION_DENIED; another CA's certificate: UNAVAILABLE."""
    broker, tokens = secure_broker
    at = _by_name(broker)
    no_token = _node(broker, "produce.js", "secure", stdin="x\n", address=at, env=_tls_env(pki, None))
    assert no_token.returncode == 1 and no_token.stderr.decode().startswith("produce.js: UNAUTHENTICATED: ")
    denied = _node(broker, "consume_group.js", "other", "secure", "--count", "1", address=at,
                   env=_tls_env(pki, tokens["reader"]))
    assert denied.returncode == 1 and denied.stderr.decode().startswith("consume_group.js: PERMISSION_DENIED: ")
    assert b"group 'other'" in denied.stderr
    rogue = _node(broker, "consume.js", "secure", "--partition", "0", "--from-beginning", "--max", "1", address=at,
                  env=_tls_env(pki, tokens["reader"], pki.rogue_client_cert, pki.rogue_client_key))
    assert rogue.returncode == 1 and rogue.stderr.decode().startswith("consume.js: UNAVAILABLE: ")
    half = _node(broker, "consume.js", "secure", "--partition", "0", "--from-beginning", address=at,
                 env={"LOGSTORE_TLS_CA": str(pki.ca), "LOGSTORE_TLS_CERT": str(pki.client_cert)})
    assert half.returncode == 2 and b"LOGSTORE_TLS_KEY go together" in half.stderr
