"""`logstore groups ...` and `logstore consume --group`: real runs of the installed script
against a broker on loopback."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from logstore.cli import message_to_json
from logstore.client import Admin, Consumer, Producer, Reader

REPO = Path(__file__).resolve().parent.parent
LOGSTORE = REPO / ".venv" / "bin" / "logstore"
if not LOGSTORE.exists():  # installed elsewhere: next to the running interpreter
    LOGSTORE = Path(sys.executable).parent / "logstore"

_names = itertools.count()


def run_cli(*args: str, broker: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LOGSTORE_BROKER"] = broker
    return subprocess.run([str(LOGSTORE), *args], capture_output=True, env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from logstore.server.app import serve

    running = serve(tmp_path_factory.mktemp("cli-groups-broker") / "data", listen="127.0.0.1:0")
    yield running
    running.stop(grace=1.0)


@pytest.fixture
def broker(server) -> str:  # noqa: ANN001
    return server.address


@pytest.fixture
def names(broker: str) -> tuple[str, str]:
    """A fresh two-partition topic holding 5 records per partition (timestamps 1000..5000), and a group name."""
    n = next(_names)
    topic, group = f"cli-gt{n}", f"cli-gg{n}"
    with Admin(broker) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker, linger_ms=20) as producer:
        for p in range(2):
            for i in range(5):
                producer.send(topic, b"p%d-%d" % (p, i), key=b"k%d" % i, partition=p, timestamp_ms=(i + 1) * 1000)
    return topic, group


def committed(broker: str, group: str) -> dict[int, int]:
    with Admin(broker) as admin:
        return {p: c.offset for (_t, p), c in admin.fetch_committed_offsets(group).items()}


def test_consume_group_prints_like_consume_and_acks_what_it_printed(broker: str, names: tuple[str, str]) -> None:
    """consume --group --from-beginning --count N prints N JSON lines identical to plain consume's and commits them."""
    topic, group = names
    result = run_cli("consume", topic, "--group", group, "--from-beginning", "--count", "10", broker=broker)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 10
    with Reader(broker, topic, start="earliest", follow=False) as reader:
        expected = {message_to_json(m) for m in reader}
    assert set(lines) == expected
    assert committed(broker, group) == {0: 5, 1: 5}


def test_consume_group_count_stops_midway_and_a_second_run_continues(broker: str, names: tuple[str, str]) -> None:
    """--count 3 prints and commits three records, then leaves; the next run of the group prints the other seven, none twice."""
    topic, group = names
    first = run_cli("consume", topic, "--group", group, "--from-beginning", "--max", "3", broker=broker)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.decode().splitlines()]
    assert len(rows) == 3
    assert sum(committed(broker, group).values()) == 3
    second = run_cli("consume", topic, "--group", group, "--no-follow", broker=broker)
    assert second.returncode == 0, second.stderr
    rows += [json.loads(line) for line in second.stdout.decode().splitlines()]
    assert sorted((r["partition"], r["offset"]) for r in rows) == [(p, o) for p in range(2) for o in range(5)]
    assert committed(broker, group) == {0: 5, 1: 5}


def test_consume_group_no_follow_on_a_caught_up_group_prints_nothing(broker: str, names: tuple[str, str]) -> None:
    """--no-follow exits 0 at once, printing nothing, when the group already committed the log end (a new group at 'latest')."""
    topic, group = names
    started = time.monotonic()
    result = run_cli("consume", topic, "--group", group, "--no-follow", broker=broker)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert time.monotonic() - started < 20
    assert committed(broker, group) == {0: 5, 1: 5}


def test_consume_group_rejects_offset_and_partition(broker: str, names: tuple[str, str]) -> None:
    """--offset or --partition with --group exit 2 with one line pointing at `groups seek`."""
    topic, group = names
    for extra in (("--offset", "2"), ("--partition", "1")):
        result = run_cli("consume", topic, "--group", group, *extra, broker=broker)
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert err.startswith("logstore: error: ") and "groups seek" in err and err.count("\n") == 1


def test_consume_group_unknown_topic_is_a_one_line_error(broker: str) -> None:
    """consume --group of a missing topic exits 1 with one 'logstore: error:' line naming it."""
    result = run_cli("consume", "no-such-topic", "--group", "g", broker=broker)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("logstore: error: ") and "no-such-topic" in err and "Traceback" not in err


def test_groups_list_text_and_json(broker: str, names: tuple[str, str]) -> None:
    """groups list shows the group with its member count and topics; --json gives one object per group."""
    topic, group = names
    assert run_cli("groups", "seek", group, topic, "--to-earliest", broker=broker).returncode == 0
    with Consumer(broker, group + "-live", topic):
        listed = run_cli("groups", "list", broker=broker)
        assert listed.returncode == 0, listed.stderr
        text = listed.stdout.decode()
        assert re.search(rf"^{re.escape(group)}\s+0\s+{re.escape(topic)}$", text, re.MULTILINE), text
        assert re.search(rf"^{re.escape(group)}-live\s+1\s+{re.escape(topic)}$", text, re.MULTILINE), text
        as_json = [json.loads(line) for line in run_cli("groups", "list", "--json", broker=broker).stdout.splitlines()]
    assert {"name": group, "member_count": 0, "topics": [topic]} in as_json


def test_groups_describe_shows_members_and_the_partition_table(broker: str, names: tuple[str, str]) -> None:
    """groups describe prints the member with its assignment and per partition committed, log end, lag, owner, in-flight."""
    topic, group = names
    with Consumer(broker, group, topic, start="earliest", client_id="desc-cli") as consumer:
        held = [consumer.poll(10) for _ in range(10)]
        assert all(m is not None for m in held)
        for m in held:
            if m.partition == 1 and m.offset < 2:  # type: ignore[union-attr]
                m.ack()  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while consumer.committed.get((topic, 1)) != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        result = run_cli("groups", "describe", group, broker=broker)
        assert result.returncode == 0, result.stderr
        text = result.stdout.decode()
        member = consumer.member_id
        assert f"group: {group}" in text and "delivery mode: partition_ordered" in text and "members: 1" in text
        assert re.search(rf"^\s+{member}\s+desc-cli\s+\S+\s+8\s+{topic}/0, {topic}/1$", text, re.MULTILINE), text
        assert re.search(rf"^{topic}\s+0\s+0\s+5\s+5\s+{member}\s+5$", text, re.MULTILINE), text
        assert re.search(rf"^{topic}\s+1\s+2\s+5\s+3\s+{member}\s+3$", text, re.MULTILINE), text
        info = json.loads(run_cli("groups", "describe", group, "--json", broker=broker).stdout)
        assert info["members"][0]["assignment"] == [[topic, 0], [topic, 1]]
        assert [(p["partition"], p["committed_offset"], p["lag"]) for p in info["partitions"]] == [(0, 0, 5), (1, 2, 3)]


def test_groups_seek_each_target_and_partitions(broker: str, names: tuple[str, str]) -> None:
    """groups seek moves offsets to latest, earliest (one partition), an offset, a time in ms or ISO 8601, and prints them."""
    topic, group = names
    for args, expected in (
        (("--to-latest",), {0: 5, 1: 5}),
        (("--to-earliest", "--partitions", "1"), {0: 5, 1: 0}),
        (("--to-offset", "2"), {0: 2, 1: 2}),
        (("--to-time", "3000", "--partitions", "0"), {0: 2, 1: 2}),
        (("--to-time", "1970-01-01T00:00:04Z", "--partitions", "0,1"), {0: 3, 1: 3}),
    ):
        result = run_cli("groups", "seek", group, topic, *args, broker=broker)
        assert result.returncode == 0, result.stderr
        assert committed(broker, group) == expected, args
        printed = dict(re.findall(r"^\s+(\d+)\s+(\d+)$", result.stdout.decode(), re.MULTILINE))
        assert {int(p) for p in printed} <= {0, 1} and printed, result.stdout


def test_groups_seek_needs_a_target_and_valid_partitions(broker: str, names: tuple[str, str]) -> None:
    """groups seek without a --to-* flag, or with a bad --partitions list, is a usage error (exit 2)."""
    topic, group = names
    assert run_cli("groups", "seek", group, topic, broker=broker).returncode == 2
    bad = run_cli("groups", "seek", group, topic, "--to-earliest", "--partitions", "x", broker=broker)
    assert bad.returncode == 2 and b"partitions" in bad.stderr


def test_groups_delete_and_unknown_group(broker: str, names: tuple[str, str]) -> None:
    """groups delete removes a group (describe then exits 1 with one line); deleting it again exits 1."""
    topic, group = names
    assert run_cli("groups", "seek", group, topic, "--to-earliest", broker=broker).returncode == 0
    deleted = run_cli("groups", "delete", group, broker=broker)
    assert deleted.returncode == 0 and f"deleted group {group!r}".encode() in deleted.stdout
    for args in (("groups", "describe", group), ("groups", "delete", group)):
        result = run_cli(*args, broker=broker)
        err = result.stderr.decode()
        assert result.returncode == 1 and err.startswith("logstore: error: ") and err.count("\n") == 1, err
