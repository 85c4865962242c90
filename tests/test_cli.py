"""The ``logstore`` command: output formats, and real runs of the installed script against a
broker on loopback (produce -> consume, topics, errors, verify, serve)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from logstore.cli import _Progress, build_parser, json_bytes, main, message_to_json
from logstore.client import Message, Producer

REPO = Path(__file__).resolve().parent.parent
LOGSTORE = REPO / ".venv" / "bin" / "logstore"
if not LOGSTORE.exists():  # installed elsewhere: next to the running interpreter
    LOGSTORE = Path(sys.executable).parent / "logstore"


def run_cli(*args: str, broker: str | None = None, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LOGSTORE_BROKER", None)
    if broker is not None:
        env["LOGSTORE_BROKER"] = broker
    return subprocess.run(
        [str(LOGSTORE), *args], input=stdin, capture_output=True, env=env, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from logstore.server.app import serve

    running = serve(tmp_path_factory.mktemp("cli-broker") / "data", listen="127.0.0.1:0")
    yield running
    running.stop(grace=1.0)


# --- formatting (no broker) ---------------------------------------------------------------


def test_json_bytes_marks_non_utf8_as_base64() -> None:
    """UTF-8 bytes become strings, other bytes {"base64": ...} that decodes back, None stays null."""
    assert json_bytes(b"caf\xc3\xa9") == "café"
    assert json_bytes(b"") == ""
    assert json_bytes(None) is None
    marked = json_bytes(b"\xff\x00\xfe")
    assert marked == {"base64": base64.b64encode(b"\xff\x00\xfe").decode()}
    assert base64.b64decode(marked["base64"]) == b"\xff\x00\xfe"


def test_message_json_line_has_the_documented_keys() -> None:
    """A message is one JSON object with the documented keys; header values follow the base64 rule too."""
    line = message_to_json(Message("t", 2, 41, 1_700_000_000_123, None, b"\x80", (("h", b"v"), ("bin", b"\xff"))))
    assert "\n" not in line
    assert json.loads(line) == {
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_123,
        "key": None,
        "value": {"base64": "gA=="},
        "headers": [["h", "v"], ["bin", {"base64": "/w=="}]],
    }


def test_consume_help_documents_the_base64_marking() -> None:
    """`consume --help` explains the JSON fields and the base64 marking."""
    out = io.StringIO()
    parser = build_parser()
    consume = parser._subparsers._group_actions[0].choices["consume"]  # type: ignore[union-attr]
    consume.print_help(out)
    assert '{"base64":' in out.getvalue()
    assert "headers" in out.getvalue()


def test_serve_flags_parse() -> None:
    """`serve` takes --data-dir, --listen, --config and --log-level."""
    args = build_parser().parse_args(
        ["serve", "--data-dir", "/d", "--listen", "0.0.0.0:7000", "--config", "c.toml", "--log-level", "DEBUG"]
    )
    assert (args.data_dir, args.listen, args.config, args.log_level) == ("/d", "0.0.0.0:7000", "c.toml", "debug")


def test_progress_line_shows_bytes_and_percentage() -> None:
    """The verify progress display writes done/total and a percentage on one carriage-returned line."""
    stream = io.StringIO()
    progress = _Progress(200 << 20, stream, enabled=True)
    progress.update(100 << 20, "orders/0", force=True)
    progress.finish()
    text = stream.getvalue()
    assert "100.0 MiB / 200.0 MiB" in text and "50.0%" in text and text.startswith("\r")


def test_no_command_prints_usage_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`logstore` alone prints help on stderr and exits 2."""
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


# --- against a broker ---------------------------------------------------------------------


def test_produce_then_consume_round_trip(server) -> None:  # noqa: ANN001
    """Lines produced with key and headers come back from consume as JSON lines in order, non-UTF-8 base64-marked."""
    broker = server.address
    created = run_cli("topics", "create", "cli-orders", "--partitions", "3", broker=broker)
    assert created.returncode == 0, created.stderr
    produced = run_cli(
        "produce", "cli-orders", "--key", "user-1", "--header", "source=cli", "--header", "n=1",
        broker=broker, stdin=b"first\nsecond \xe2\x9c\x93\n\xff\xfe\n",
    )
    assert produced.returncode == 0, produced.stderr
    assert b"produced 3 record(s)" in produced.stderr
    consumed = run_cli("consume", "cli-orders", "--from-beginning", "--no-follow", broker=broker)
    assert consumed.returncode == 0, consumed.stderr
    rows = [json.loads(line) for line in consumed.stdout.decode().splitlines()]
    assert [r["value"] for r in rows] == ["first", "second ✓", {"base64": base64.b64encode(b"\xff\xfe").decode()}]
    assert [r["offset"] for r in rows] == [0, 1, 2]
    assert {r["key"] for r in rows} == {"user-1"}
    assert rows[0]["headers"] == [["source", "cli"], ["n", "1"]]
    assert len({r["partition"] for r in rows}) == 1
    assert all(isinstance(r["timestamp"], int) and r["timestamp"] > 1_600_000_000_000 for r in rows)


def test_consume_max_and_offset_and_partition(server) -> None:  # noqa: ANN001
    """--partition, --offset and --max select exactly the records asked for, even while following."""
    broker = server.address
    assert run_cli("topics", "create", "cli-sel", "--partitions", "2", broker=broker).returncode == 0
    data = b"".join(b"line-%d\n" % i for i in range(10))
    assert run_cli("produce", "cli-sel", "--partition", "1", broker=broker, stdin=data).returncode == 0
    consumed = run_cli("consume", "cli-sel", "--partition", "1", "--offset", "4", "--max", "3", broker=broker)
    assert consumed.returncode == 0, consumed.stderr
    rows = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [(r["partition"], r["offset"], r["value"]) for r in rows] == [(1, 4, "line-4"), (1, 5, "line-5"), (1, 6, "line-6")]


def test_topics_list_describe_delete(server) -> None:  # noqa: ANN001
    """topics list/describe show a topic (text and --json); delete removes it."""
    broker = server.address
    assert run_cli("topics", "create", "cli-admin", "--partitions", "2", "--retention-ms", "60000",
                   "--durability", "always", broker=broker).returncode == 0
    listed = run_cli("topics", "list", broker=broker)
    assert re.search(rb"^cli-admin\s+2\s+60000\s+always$", listed.stdout, re.MULTILINE), listed.stdout
    described = run_cli("topics", "describe", "cli-admin", "--json", broker=broker)
    info = json.loads(described.stdout)
    assert (info["partition_count"], info["config"]["retention_ms"], len(info["partitions"])) == (2, 60000, 2)
    assert run_cli("topics", "delete", "cli-admin", broker=broker).returncode == 0
    assert b"cli-admin" not in run_cli("topics", "list", broker=broker).stdout


def test_unknown_topic_gives_one_clear_line_and_nonzero_exit(server) -> None:  # noqa: ANN001
    """consume/produce/describe of a missing topic exit 1 with one 'logstore: error:' line, no traceback."""
    broker = server.address
    for args, stdin in (
        (("consume", "no-such-topic", "--no-follow"), b""),
        (("produce", "no-such-topic"), b"x\n"),
        (("topics", "describe", "no-such-topic"), b""),
    ):
        result = run_cli(*args, broker=broker, stdin=stdin)
        err = result.stderr.decode()
        assert result.returncode == 1, err
        assert err.startswith("logstore: error: ") and "no-such-topic" in err and "does not exist" in err
        assert "Traceback" not in err
        assert err.count("\n") == 1


def test_unreachable_broker_is_a_one_line_error() -> None:
    """A broker that is not listening gives exit 1 and a message naming the address."""
    result = run_cli("topics", "list", "--broker", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("logstore: error: broker 127.0.0.1:1 is unavailable")
    assert b"Traceback" not in result.stderr


# --- verify ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory written by a real broker (2 topics, several segments), then closed."""
    from logstore.server.app import serve

    data = tmp_path_factory.mktemp("verify") / "data"
    running = serve(data, listen="127.0.0.1:0")
    try:
        from logstore.client import Admin

        with Admin(running.address) as admin:
            admin.create_topic("alpha", 2, segment_bytes=64 * 1024)
            admin.create_topic("beta", 1)
        with Producer(running.address, linger_ms=1, batch_bytes=8 * 1024) as producer:
            for i in range(3000):
                producer.send("alpha", b"a" * 90 + b"%05d" % i, partition=i % 2)
            for i in range(100):
                producer.send("beta", b"b%d" % i)
    finally:
        running.stop(grace=1.0)
    return data


def _verify_rows(stdout: bytes) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.decode().splitlines()[1:]:
        parts = line.split(None, 5)
        if len(parts) == 6 and "/" in parts[0]:
            rows[parts[0]] = parts[1:]
    return rows


def test_verify_accepts_a_data_dir_written_by_the_broker(written_data_dir: Path) -> None:
    """verify exits 0 and counts every record, with several segments where the topic rolled."""
    result = run_cli("verify", str(written_data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _verify_rows(result.stdout)
    assert {name for name in rows if not name.startswith("__")} == {"alpha/0", "alpha/1", "beta/0"}
    assert "__consumer_offsets/0" in rows  # internal topics are verified too
    assert int(rows["alpha/0"][2]) + int(rows["alpha/1"][2]) == 3000
    assert int(rows["beta/0"][2]) == 100
    assert int(rows["alpha/0"][0]) > 1  # rolled segments
    assert all(row[4] == "ok" for row in rows.values())
    assert b"all batches ok" in result.stdout


def test_verify_reports_the_first_corrupt_batch_and_exits_1(written_data_dir: Path, tmp_path: Path) -> None:
    """A flipped byte in a copy is reported as a CRC mismatch at its byte and offset, with exit status 1."""
    copy = tmp_path / "copy"
    shutil.copytree(written_data_dir, copy)
    segment = sorted((copy / "topics" / "alpha" / "1").glob("*.log"))[0]
    raw = bytearray(segment.read_bytes())
    from logstore.storage.batch import read_header

    first = read_header(raw, 0)
    second_pos = first.length
    raw[second_pos + 100] ^= 0xFF  # inside the second batch's records
    segment.write_bytes(bytes(raw))
    result = run_cli("verify", str(copy))
    assert result.returncode == 1
    rows = _verify_rows(result.stdout)
    assert rows["alpha/0"][4] == "ok" and rows["beta/0"][4] == "ok"
    status = rows["alpha/1"][4]
    assert status.startswith("CORRUPT") and "CRC32C mismatch" in status
    assert f"byte {second_pos} (offset {first.record_count})" in status
    assert b"1 partition(s) CORRUPT" in result.stdout


def test_verify_rejects_a_directory_that_is_not_a_data_dir(tmp_path: Path) -> None:
    """verify on a directory without topics/ exits 2 with a one-line error."""
    result = run_cli("verify", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(b"logstore: error:") and b"data directory" in result.stderr


# --- serve -------------------------------------------------------------------------------


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    """`logstore serve` listens where --listen says, answers the CLI, and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [str(LOGSTORE), "serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--log-level", "warning"],
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stderr.readline().decode()  # type: ignore[union-attr]
        found = re.search(r"logstore (\S+:\d+) ready", line)
        assert found, line
        address = found.group(1)
        assert run_cli("topics", "create", "served", broker=address).returncode == 0
        assert b"served" in run_cli("topics", "list", broker=address).stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
