"""`logstore groups retry-policy` and `logstore dlq list|redrive|purge`: real runs of the installed
script against a broker on loopback whose clock (a ManualClock) stamps the dead letters."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from logstore.client import Admin, Consumer, Producer, RetryPolicy
from logstore.clock import ManualClock

REPO = Path(__file__).resolve().parent.parent
LOGSTORE = REPO / ".venv" / "bin" / "logstore"
if not LOGSTORE.exists():  # installed elsewhere: next to the running interpreter
    LOGSTORE = Path(sys.executable).parent / "logstore"
WAIT_S = 10.0

_names = itertools.count()


def run_cli(*args: str, broker: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LOGSTORE_BROKER"] = broker
    return subprocess.run([str(LOGSTORE), *args], capture_output=True, env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clock: ManualClock) -> Iterator[object]:
    from logstore.server.app import serve

    running = serve(tmp_path_factory.mktemp("cli-dlq-broker") / "data", listen="127.0.0.1:0", clock=clock)
    yield running
    running.stop(grace=1.0)


@pytest.fixture
def broker(server) -> str:  # noqa: ANN001
    return server.address


@pytest.fixture
def names(broker: str) -> tuple[str, str]:
    """A fresh two-partition topic and a group name."""
    n = next(_names)
    topic, group = f"cli-dt{n}", f"cli-dg{n}"
    with Admin(broker) as admin:
        admin.create_topic(topic, 2)
    return topic, group


def dead_letter(broker: str, clock: ManualClock, group: str, topic: str, values: list[bytes]) -> list[int]:
    """Produce ``values`` (key ``k<i>``, partition ``i % 2``) and dead-letter each at once (max_attempts 1),
    one at a time, the clock 1000 ms later for each; returns their dead-lettered times."""
    with Admin(broker) as admin:
        admin.set_retry_policy(group, topic, RetryPolicy(1))
        with Producer(broker, linger_ms=20) as producer:
            for i, value in enumerate(values):
                producer.send(topic, value, key=b"k%d" % i, partition=i % 2)
        times = []
        with Consumer(broker, group, topic, start="earliest") as consumer:
            for n in range(len(values)):
                message = consumer.poll(WAIT_S)
                assert message is not None
                times.append(clock.advance(1000))
                message.nack("boom")
                deadline = time.monotonic() + WAIT_S
                while len(list(admin.list_dead_letters(group, topic))) < n + 1:
                    assert time.monotonic() < deadline, "the dead letter did not arrive"
                    time.sleep(0.01)
    return times


def one_error_line(result: subprocess.CompletedProcess, status: int) -> str:
    err = result.stderr.decode()
    assert result.returncode == status, (result.returncode, err)
    assert err.startswith("logstore: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- groups retry-policy -------------------------------------------------------------------------


def test_retry_policy_with_delays_or_backoff_prints_the_retry_topics_and_the_dlq(broker: str, names) -> None:
    """--delays (ms, s, m) and --backoff INITIAL,MULTIPLIER,MAX print their tiers in order and the DLQ, which exist; --clear clears."""
    topic, group = names
    result = run_cli("groups", "retry-policy", group, topic, "--max-attempts", "4", "--delays", "500,1.5s,1m", broker=broker)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    tiers = re.findall(r"^  (\S+)$", out, re.MULTILINE)
    assert tiers == [f"{topic}.{group}.retry.{ms}ms" for ms in (500, 1500, 60000)], out
    assert f"dead-letter topic: {topic}.{group}.dlq\n" in out and "at most 4 attempt(s)" in out
    result = run_cli(
        "groups", "retry-policy", group, topic, "--max-attempts", "5", "--backoff", "1s,3,10s", "--jitter", "0.1",
        broker=broker,
    )
    assert result.returncode == 0, result.stderr
    tiers = re.findall(r"^  (\S+)$", result.stdout.decode(), re.MULTILINE)
    assert tiers == [f"{topic}.{group}.retry.{ms}ms" for ms in (1000, 3000, 9000, 10000)]
    with Admin(broker) as admin:
        assert set(tiers) <= {t.name for t in admin.list_topics()}
    single = run_cli("groups", "retry-policy", group, topic, "--max-attempts", "1", "--delays", "0", broker=broker)
    assert single.returncode == 0 and b"retry topics: none\n" in single.stdout, single
    cleared = run_cli("groups", "retry-policy", group, topic, "--clear", broker=broker)
    assert cleared.returncode == 0 and cleared.stdout.decode().startswith("cleared the retry policy"), cleared


def test_retry_policy_usage_errors_exit_2(broker: str, names) -> None:
    """Missing waits, --delays with --backoff, --clear with other flags, and bad durations are usage errors."""
    topic, group = names
    for args, needle in (
        (("--max-attempts", "3"), "--delays"),
        (("--max-attempts", "3", "--delays", "1s", "--backoff", "1s"), "not allowed"),
        (("--clear", "--jitter", "0.1"), "--clear"),
        (("--clear", "--max-attempts", "3"), "not allowed"),
        (("--max-attempts", "3", "--delays", "5h"), "duration"),
        (("--max-attempts", "3", "--backoff", "1s,fast"), "MULTIPLIER"),
        ((), "required"),
    ):
        result = run_cli("groups", "retry-policy", group, topic, *args, broker=broker)
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr.decode(), (args, result.stderr)


def test_retry_policy_refused_by_the_broker_prints_its_message_and_exits_1(broker: str, names) -> None:
    """An out-of-range jitter or an unknown topic: one 'logstore: error:' line with the broker's message, exit 1."""
    topic, group = names
    jitter = run_cli("groups", "retry-policy", group, topic, "--max-attempts", "3", "--delays", "1s", "--jitter", "0.9",
                     broker=broker)
    assert "jitter" in one_error_line(jitter, 1)
    missing = run_cli("groups", "retry-policy", group, "no-such-topic", "--max-attempts", "3", "--delays", "1s",
                      broker=broker)
    assert "no-such-topic" in one_error_line(missing, 1)


# -- dlq list ------------------------------------------------------------------------------------


def test_dlq_list_prints_a_table_with_provenance_and_previews(broker: str, clock: ManualClock, names) -> None:
    """The table has one row per dead letter: its place, origin, attempts, time, error, key and clipped value."""
    topic, group = names
    long = b"x" * 100
    dead_letter(broker, clock, group, topic, [b"plain", long, b"\xff\x00bin"])
    result = run_cli("dlq", "list", group, topic, broker=broker)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["PARTITION", "OFFSET", "ORIGIN", "ATTEMPTS", "DEAD-LETTERED", "ERROR", "KEY", "VALUE"]
    assert len(lines) == 4
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(rf"\s*0\s+0\s+{topic}/0@0\s+1\s+{stamp}\s+boom\s+k0\s+plain", lines[1]), lines[1]
    assert re.fullmatch(rf"\s*0\s+1\s+{topic}/0@1\s+1\s+{stamp}\s+boom\s+k2\s+\\xff\\x00bin", lines[2]), lines[2]
    assert re.fullmatch(rf"\s*1\s+0\s+{topic}/1@0\s+1\s+{stamp}\s+boom\s+k1\s+x{{37}}\.\.\.", lines[3]), lines[3]


def test_dlq_list_json_and_its_key_and_time_filters(broker: str, clock: ManualClock, names) -> None:
    """--json prints every field (headers and base64 for non-UTF-8 included); --key, --since and --until filter."""
    topic, group = names
    times = dead_letter(broker, clock, group, topic, [b"v0", b"v1", b"\xff", b"v3"])
    result = run_cli("dlq", "list", group, topic, "--json", broker=broker)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["partition"], r["offset"], r["value"]) for r in rows] == [
        (0, 0, "v0"), (0, 1, {"base64": "/w=="}), (1, 0, "v1"), (1, 1, "v3"),
    ]
    first = rows[0]
    assert (first["origin_topic"], first["origin_partition"], first["origin_offset"]) == (topic, 0, 0)
    assert (first["attempts"], first["error"], first["key"], first["dead_lettered_ms"]) == (1, "boom", "k0", times[0])
    assert first["first_failure_ms"] == times[0] and ["logstore.origin.topic", topic] in first["headers"]
    keyed = run_cli("dlq", "list", group, topic, "--json", "--key", "k3", broker=broker)
    assert [json.loads(line)["value"] for line in keyed.stdout.splitlines()] == ["v3"]
    window = run_cli("dlq", "list", group, topic, "--json", "--since", str(times[1]), "--until", str(times[3]),
                     broker=broker)
    assert sorted(json.loads(line)["dead_lettered_ms"] for line in window.stdout.splitlines()) == times[1:3]
    empty = run_cli("dlq", "list", group, topic, "--key", "nobody", broker=broker)
    assert empty.returncode == 0 and empty.stdout == b"" and b"no dead letters" in empty.stderr


def test_dlq_commands_for_a_group_without_a_policy_exit_1_with_the_brokers_message(broker: str, names) -> None:
    """list, redrive and purge of a group that never had a retry policy print the broker's NOT_FOUND message."""
    topic, group = names
    for args in (("list",), ("redrive",), ("purge", "--yes")):
        result = run_cli("dlq", args[0], group, topic, *args[1:], broker=broker)
        assert f"{topic}.{group}.dlq" in one_error_line(result, 1), args


# -- dlq redrive and purge -----------------------------------------------------------------------


def test_dlq_redrive_with_progress_shows_counts_rate_and_eta_then_empties_the_dlq(
    broker: str, clock: ManualClock, names
) -> None:
    """--progress draws '\\r  done / total (pct%)  N rec/s  ETA' lines with thousands separators on stderr,
    ends at 100%, prints 'redrove N dead letter(s)', and the records are back in the group's path."""
    topic, group = names
    with Admin(broker) as admin:
        admin.set_retry_policy(group, topic, RetryPolicy(1))
        with Producer(broker, linger_ms=20) as producer:
            for i in range(1200):
                producer.send(topic, b"v%d" % i, key=b"k%d" % i)
        with Consumer(broker, group, topic, start="earliest", max_in_flight=2000) as consumer:
            nacked = 0
            while nacked < 1200:
                batch = consumer.poll_batch(WAIT_S)
                assert batch is not None
                batch.nack("down")
                nacked += len(batch)
            deadline = time.monotonic() + WAIT_S
            while len(list(admin.list_dead_letters(group, topic, page_size=1000))) < 1200:
                assert time.monotonic() < deadline, "the dead letters did not arrive"
                time.sleep(0.02)
    result = run_cli("dlq", "redrive", group, topic, "--rate", "4000", "--progress", broker=broker)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"redrove 1200 dead letter(s)\n"
    err = result.stderr.decode()
    draws = err.rstrip("\n").split("\r")[1:]
    assert len(draws) >= 2 and err.endswith("\n"), err
    pattern = re.compile(r"  ([\d,]+) / 1,200 \((\d+)%\)  [\d,]+ rec/s  ETA (\d+[smh][\dsm]*|-)\s*")
    found = [pattern.fullmatch(d) for d in draws]
    assert all(found), draws
    assert found[-1].group(1) == "1,200" and found[-1].group(2) == "100"  # type: ignore[union-attr]
    assert any(int(m.group(2)) < 100 for m in found if m), "no intermediate progress was drawn"
    with Admin(broker) as admin:
        assert list(admin.list_dead_letters(group, topic)) == []
        assert admin.list_offsets(f"{topic}.{group}.redrive") and sum(
            p.offset for p in admin.list_offsets(f"{topic}.{group}.redrive").values()
        ) == 1200


def test_dlq_redrive_without_a_terminal_prints_only_the_result(broker: str, clock: ManualClock, names) -> None:
    """With stderr not a TTY and no --progress, redrive writes nothing to stderr and one line to stdout."""
    topic, group = names
    dead_letter(broker, clock, group, topic, [b"a", b"b"])
    result = run_cli("dlq", "redrive", group, topic, broker=broker)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"redrove 2 dead letter(s)\n", b"")
    again = run_cli("dlq", "redrive", group, topic, broker=broker)
    assert again.stdout == b"redrove 0 dead letter(s)\n"


def test_dlq_purge_refuses_without_yes_and_drops_everything_with_it(broker: str, clock: ManualClock, names) -> None:
    """purge without --yes exits 2 naming --yes and drops nothing; with --yes it reports and drops them all."""
    topic, group = names
    dead_letter(broker, clock, group, topic, [b"a", b"b", b"c"])
    refused = run_cli("dlq", "purge", group, topic, broker=broker)
    assert "--yes" in one_error_line(refused, 2)
    with Admin(broker) as admin:
        assert len(list(admin.list_dead_letters(group, topic))) == 3
    purged = run_cli("dlq", "purge", group, topic, "--yes", broker=broker)
    assert (purged.returncode, purged.stdout) == (0, b"purged 3 dead letter(s)\n"), purged.stderr
    with Admin(broker) as admin:
        assert list(admin.list_dead_letters(group, topic)) == []


def test_dlq_redrive_interrupted_says_so_exits_130_and_a_second_run_finishes_it(
    broker: str, clock: ManualClock, names
) -> None:
    """Ctrl-C (SIGINT) during a slow redrive prints how far it got and exits 130; running it again redrives the rest."""
    topic, group = names
    dead_letter(broker, clock, group, topic, [b"v%d" % i for i in range(12)])
    env = dict(os.environ, LOGSTORE_BROKER=broker)
    proc = subprocess.Popen(
        [str(LOGSTORE), "dlq", "redrive", group, topic, "--rate", "4", "--progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        seen = b""
        while b"(0%)" not in seen or not re.search(rb"\r  [1-9]\d* / 12", seen):
            chunk = proc.stderr.read1(256)  # type: ignore[union-attr]
            assert chunk, f"redrive ended before showing progress: {seen!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    found = re.search(rb"logstore: interrupted after redriving (\d+) dead letter\(s\); run the command again", err)
    assert found and out == b"", (out, seen + err)
    rest = run_cli("dlq", "redrive", group, topic, "--rate", "1000", broker=broker)
    again = re.fullmatch(rb"redrove (\d+) dead letter\(s\)\n", rest.stdout)
    assert again and 0 < int(again.group(1)) <= 12 - int(found.group(1)), (rest.stdout, rest.stderr)
    with Admin(broker) as admin:
        assert list(admin.list_dead_letters(group, topic)) == []
        redriven = sum(p.offset for p in admin.list_offsets(f"{topic}.{group}.redrive").values())
    # At-least-once (groups.proto): a redrive cut short repeats at most the chunk in flight,
    # one record at --rate 4.
    assert 12 <= redriven <= 13, f"{redriven} records redriven over the two runs"
