"""The ``logstore`` command: manage topics and consumer groups (with their
retry policies and dead letters), produce and consume records (alone or as a
member of a group), verify a data directory offline, and run the broker.

Every command that talks to a broker takes ``--broker HOST:PORT`` (default:
the ``LOGSTORE_BROKER`` environment variable, else ``127.0.0.1:50051``), and
for a broker with TLS or tokens ``--tls-ca FILE`` (or ``--tls`` for the
system's roots), ``--tls-cert FILE --tls-key FILE`` (mutual TLS) and
``--token-file FILE``, or the variables ``LOGSTORE_TLS_CA``, ``LOGSTORE_TLS``,
``LOGSTORE_TLS_CERT``, ``LOGSTORE_TLS_KEY`` and ``LOGSTORE_TOKEN``
(docs/security.md).  ``auth new-token`` mints a token for the broker's
security config.
Failures print one line, ``logstore: error: ...``, on stderr and exit with
status 1 (2 for usage errors); no traceback is shown for errors the broker
or the network report.

What the command does not do: take a token on the command line (it would
show in the process list; use ``--token-file`` or ``LOGSTORE_TOKEN``), commit offsets by
hand (``groups seek`` moves them), or any output format but the ones
documented per command (``consume`` writes JSON lines; the rest write text
meant for people, ``--json`` where offered).  ``dlq list`` cannot filter on
a key that is not UTF-8, and its table shows only a preview of long keys,
values and errors (``--json`` has them whole).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import mmap
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from itertools import islice
from typing import Any, Callable, TextIO

from logstore import __version__
from logstore.errors import LogstoreError

__all__ = ["main", "build_parser", "json_bytes", "message_to_json"]

DEFAULT_BROKER = "127.0.0.1:50051"
BROKER_ENV = "LOGSTORE_BROKER"

_PROGRESS_MIN_BYTES = 64 << 20  # verify shows progress on a TTY above this much data
_SEGMENT_LOG = re.compile(r"^(\d{20})\.log$")


# --- output helpers -----------------------------------------------------------------------


def json_bytes(data: bytes | None) -> Any:
    """A key, value or header value for JSON output: ``None`` stays null, valid
    UTF-8 becomes a string, anything else ``{"base64": "..."}``."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def message_to_json(message: Any) -> str:
    """One consumed message as the JSON line ``consume`` prints (without the newline)."""
    return json.dumps(
        {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "timestamp": message.timestamp_ms,
            "key": json_bytes(message.key),
            "value": json_bytes(message.value),
            "headers": [[name, json_bytes(value)] for name, value in message.headers],
        },
        ensure_ascii=False,
    )


def _err(text: str) -> None:
    print(f"logstore: {text}", file=sys.stderr)


def _broker(args: argparse.Namespace) -> str:
    return (
        getattr(args, "broker", None)
        or getattr(args, "global_broker", None)
        or os.environ.get(BROKER_ENV)
        or DEFAULT_BROKER
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The ``tls`` and ``token`` keyword arguments of a client, from the options or the environment."""
    ca = getattr(args, "tls_ca", None) or os.environ.get("LOGSTORE_TLS_CA") or None
    cert = getattr(args, "tls_cert", None) or os.environ.get("LOGSTORE_TLS_CERT") or None
    key = getattr(args, "tls_key", None) or os.environ.get("LOGSTORE_TLS_KEY") or None
    options: dict[str, Any] = {}
    if ca or cert or key or getattr(args, "tls", False) or _env_flag("LOGSTORE_TLS"):
        from logstore.client import ClientTLS

        options["tls"] = ClientTLS(ca_file=ca, cert_file=cert, key_file=key)
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            options["token"] = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LogstoreError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
    elif os.environ.get("LOGSTORE_TOKEN", "").strip():
        options["token"] = os.environ["LOGSTORE_TOKEN"].strip()
    return options


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _ms_text(value: int | None) -> str:
    if value is None:
        return "default"
    if value < 0:
        return "unlimited"
    return str(value)


# --- topics -------------------------------------------------------------------------------


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        topic = admin.create_topic(
            args.name,
            args.partitions,
            retention_ms=args.retention_ms,
            retention_bytes=args.retention_bytes,
            segment_bytes=args.segment_bytes,
            durability=args.durability,
            durability_interval_ms=args.durability_interval_ms,
            max_record_bytes=args.max_record_bytes,
            max_batch_bytes=args.max_batch_bytes,
        )
    print(f"created topic {topic.name!r} with {topic.partition_count} partition(s)")
    return 0


def _config_dict(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__slots__}


def _cmd_topics_list(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        topics = admin.list_topics(include_internal=args.internal)
    if args.json:
        for t in topics:
            print(json.dumps({"name": t.name, "partition_count": t.partition_count, "config": _config_dict(t.config)}))
        return 0
    if not topics:
        print("no topics", file=sys.stderr)
        return 0
    width = max(len("TOPIC"), *(len(t.name) for t in topics))
    print(f"{'TOPIC':<{width}}  PARTITIONS  RETENTION_MS  DURABILITY")
    for t in topics:
        print(f"{t.name:<{width}}  {t.partition_count:>10}  {_ms_text(t.config.retention_ms):>12}  {t.config.durability}")
    return 0


def _cmd_topics_describe(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        d = admin.describe_topic(args.name)
    if args.json:
        print(
            json.dumps(
                {
                    "name": d.name,
                    "partition_count": d.partition_count,
                    "config": _config_dict(d.config),
                    "partitions": [
                        {name: getattr(p, name) for name in p.__slots__} for p in d.partitions
                    ],
                }
            )
        )
        return 0
    print(f"topic: {d.name}")
    print(f"partitions: {d.partition_count}")
    print("config:")
    for name, value in _config_dict(d.config).items():
        print(f"  {name}: {value if value is not None else 'default'}")
    print(f"{'PARTITION':>9}  {'START':>12}  {'END':>12}  {'RECORDS':>12}  {'SIZE':>10}  SEGMENTS")
    for p in d.partitions:
        print(
            f"{p.partition:>9}  {p.log_start_offset:>12}  {p.log_end_offset:>12}  {p.record_count:>12}  "
            f"{_human_bytes(p.size_bytes):>10}  {p.segment_count}"
        )
    return 0


def _cmd_topics_delete(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        admin.delete_topic(args.name)
    print(f"deleted topic {args.name!r}")
    return 0


# --- produce ------------------------------------------------------------------------------


def _parse_header(text: str) -> tuple[str, bytes]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"a header is NAME=VALUE, got {text!r}")
    return name, value.encode("utf-8")


class _ProduceSummary:
    """Offsets seen per partition, folded in as futures complete."""

    def __init__(self) -> None:
        self.count = 0
        self.ranges: dict[int, list[int]] = {}
        self.error: BaseException | None = None

    def add(self, future: Any) -> None:
        exc = future.exception()
        if exc is not None:
            if self.error is None:
                self.error = exc
            return
        meta = future.result()
        self.count += 1
        r = self.ranges.get(meta.partition)
        if r is None:
            self.ranges[meta.partition] = [meta.offset, meta.offset, 1]
        else:
            r[0] = min(r[0], meta.offset)
            r[1] = max(r[1], meta.offset)
            r[2] += 1


def _cmd_produce(args: argparse.Namespace) -> int:
    from logstore.client import Producer

    key = args.key.encode("utf-8") if args.key is not None else None
    headers = args.header or None
    summary = _ProduceSummary()
    pending: collections.deque = collections.deque()
    started = time.monotonic()
    stdin = sys.stdin.buffer
    # A CLI user wants to hear soon that the broker is down, not after the default 60 s.
    with Producer(_broker(args), acks=args.acks, linger_ms=args.linger_ms, max_block_ms=10_000,
                  **_connection(args)) as producer:
        send = producer.send
        for line in stdin:
            if line.endswith(b"\n"):
                line = line[:-1]
            pending.append(send(args.topic, line, key=key, headers=headers, partition=args.partition))
            if len(pending) > 100_000:
                summary.add(pending.popleft())
                if summary.error is not None:
                    break
            elif pending[-1].done() and pending[-1].exception() is not None:
                break  # e.g. the topic does not exist: stop reading at once
        producer.flush()
        while pending:
            summary.add(pending.popleft())
    elapsed = time.monotonic() - started
    if summary.error is not None:
        message = summary.error.message if isinstance(summary.error, LogstoreError) else str(summary.error)
        _err(f"error: {message}")
        if summary.count:
            _err(f"{summary.count} record(s) were produced before the error")
        return 1
    if args.acks == "none":
        detail = "acks=none: offsets not reported"
    else:
        detail = ", ".join(
            f"partition {p}: offsets {lo}-{hi}" if lo != hi else f"partition {p}: offset {lo}"
            for p, (lo, hi, _n) in sorted(summary.ranges.items())
        )
    print(
        f"produced {summary.count} record(s) to {args.topic!r} in {elapsed:.2f} s"
        + (f" ({detail})" if detail else ""),
        file=sys.stderr,
    )
    return 0


# --- consume ------------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; use e.g. 2024-05-01T12:00:00Z or 2024-05-01 12:00"
        ) from None


def _cmd_consume(args: argparse.Namespace) -> int:
    from logstore.client import Reader

    if args.group is not None:
        return _cmd_consume_group(args)
    start: Any = "latest"
    if args.from_beginning:
        start = "earliest"
    elif args.offset is not None:
        start = args.offset
    elif args.since is not None:
        start = args.since
    out = sys.stdout.buffer
    remaining = args.max
    reader = Reader(
        _broker(args),
        args.topic,
        partitions=args.partition,
        start=start,
        follow=not args.no_follow,
        **_connection(args),
    )
    try:
        with reader:
            while remaining is None or remaining > 0:
                message = reader.poll(0.2)
                if message is None:
                    out.flush()
                    if reader.finished:
                        break
                    continue
                out.write(message_to_json(message).encode("utf-8") + b"\n")
                if remaining is not None:
                    remaining -= 1
            out.flush()
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


def _caught_up(admin: Any, group: str, topic: str, ends: dict[int, Any]) -> bool:
    """True once the group's committed offsets reached the log ends in ``ends``."""
    committed = admin.fetch_committed_offsets(group, topic)
    for partition, end in ends.items():
        if end.offset <= end.log_start_offset:
            continue  # nothing to read there
        found = committed.get((topic, partition))
        if found is None or found.offset < end.offset:
            return False
    return True


def _cmd_consume_group(args: argparse.Namespace) -> int:
    from logstore.client import Admin, Consumer

    for given, flag in ((args.offset is not None, "--offset"), (args.partition, "--partition")):
        if given:
            _err(
                f"error: {flag} cannot be used with --group: the broker assigns partitions and keeps the group's "
                f"offsets (move them with `logstore groups seek`)"
            )
            return 2
    start: Any = "latest"
    if args.from_beginning:
        start = "earliest"
    elif args.since is not None:
        start = args.since
    broker = _broker(args)
    connection = _connection(args)
    out = sys.stdout.buffer
    remaining = args.max
    admin = Admin(broker, **connection)
    try:
        ends = admin.list_offsets(args.topic, None, "latest") if args.no_follow else None
        next_check = 0.0
        with Consumer(broker, args.group, [args.topic], start=start, client_id="logstore-cli", **connection) as consumer:
            while remaining is None or remaining > 0:
                batch = consumer.poll_batch(0.2)
                if batch is not None:
                    messages = list(islice(batch, remaining)) if remaining is not None else list(batch)
                    out.write(b"".join(message_to_json(m).encode("utf-8") + b"\n" for m in messages))
                    out.flush()  # printed before acked: an ack never covers a record not yet written
                    if len(messages) == len(batch):
                        batch.ack()
                    else:
                        for message in messages:
                            message.ack()
                    if remaining is not None:
                        remaining -= len(messages)
                if ends is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.2
                    if _caught_up(admin, args.group, args.topic, ends):
                        break
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        admin.close()
    return 0


# --- groups -------------------------------------------------------------------------------


def _cmd_groups_list(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        groups = admin.list_groups()
    if args.json:
        for g in groups:
            print(json.dumps({"name": g.name, "member_count": g.member_count, "topics": list(g.topics)}))
        return 0
    if not groups:
        print("no groups", file=sys.stderr)
        return 0
    width = max(len("GROUP"), *(len(g.name) for g in groups))
    print(f"{'GROUP':<{width}}  MEMBERS  TOPICS")
    for g in groups:
        print(f"{g.name:<{width}}  {g.member_count:>7}  {', '.join(g.topics)}")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]], right: set[int]) -> list[str]:
    """Lines of a text table, columns as wide as their widest cell; ``right``
    names the columns aligned to the right."""
    cells = [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) if cells else len(header[i]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [line(header)] + [line(r) for r in cells]


def _cmd_groups_describe(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        d = admin.describe_group(args.group)
    if args.json:
        print(
            json.dumps(
                {
                    "group": d.group,
                    "generation": d.generation,
                    "delivery_mode": d.delivery_mode,
                    "delivery_guarantee": d.delivery_guarantee,
                    "members": [
                        {name: getattr(m, name) for name in m.__slots__} | {"assignment": [list(tp) for tp in m.assignment]}
                        for m in d.members
                    ],
                    "partitions": [{name: getattr(p, name) for name in p.__slots__} for p in d.partitions],
                }
            )
        )
        return 0
    print(f"group: {d.group}")
    print(f"generation: {d.generation}")
    print(f"delivery mode: {d.delivery_mode}")
    print(f"guarantee: {d.delivery_guarantee}")
    print(f"members: {len(d.members)}")
    if d.members:
        rows = [
            (
                m.member_id,
                m.client_id or "-",
                m.peer or "-",
                m.in_flight_records,
                ", ".join(f"{t}/{p}" for t, p in m.assignment) or "-",
            )
            for m in d.members
        ]
        for text in _table(("MEMBER", "CLIENT", "PEER", "IN-FLIGHT", "ASSIGNMENT"), rows, {3}):
            print(f"  {text}")
    print(f"lag: {d.lag}")
    rows = [
        (
            p.topic,
            p.partition,
            "-" if p.committed_offset is None else p.committed_offset,
            p.log_end_offset,
            p.lag,
            p.member_id or "-",
            p.in_flight_records,
        )
        for p in d.partitions
    ]
    for text in _table(("TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER", "IN-FLIGHT"), rows, {1, 2, 3, 4, 6}):
        print(text)
    return 0


def _cmd_groups_seek(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    partitions = sorted({p for chunk in args.partitions for p in chunk}) if args.partitions else None
    target: dict[str, Any]
    if args.to_earliest:
        target = {"earliest": True}
    elif args.to_latest:
        target = {"latest": True}
    elif args.to_offset is not None:
        target = {"offset": args.to_offset}
    else:
        target = {"timestamp_ms": args.to_time}
    with Admin(_broker(args), **_connection(args)) as admin:
        offsets = admin.seek_group(args.group, args.topic, partitions=partitions, **target)
    print(f"moved group {args.group!r} on topic {args.topic!r}:")
    for text in _table(("PARTITION", "OFFSET"), [(p, o.offset) for p, o in sorted(offsets.items())], {0, 1}):
        print(f"  {text}")
    return 0


def _cmd_groups_delete(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        admin.delete_group(args.group)
    print(f"deleted group {args.group!r}")
    return 0


def _parse_partitions(text: str) -> list[int]:
    try:
        found = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"partitions are numbers separated by commas, e.g. 0,2,5; got {text!r}") from None
    if not found or any(p < 0 for p in found):
        raise argparse.ArgumentTypeError(f"partitions are numbers >= 0 separated by commas, e.g. 0,2,5; got {text!r}")
    return found


def _parse_time_ms(text: str) -> int:
    """Epoch milliseconds, given as a number or as an ISO 8601 time."""
    if text.isdigit():
        return int(text)
    return int(_parse_time(text).timestamp() * 1000)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")
_DURATION_UNITS_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000}


def _parse_duration_ms(text: str) -> int:
    """Milliseconds from ``500``, ``500ms``, ``1.5s`` or ``2m`` (a bare number is milliseconds)."""
    found = _DURATION.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 500ms, 5s or 2m (a bare number is milliseconds)"
        )
    return round(float(found.group(1)) * _DURATION_UNITS_MS[found.group(2)])


def _parse_delays(text: str) -> list[int]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"--delays takes durations separated by commas, e.g. 1s,5s,30s; got {text!r}")
    return [_parse_duration_ms(part) for part in parts]


def _parse_backoff(text: str) -> tuple[int, float, int]:
    """``INITIAL[,MULTIPLIER[,MAX]]`` as (initial ms, multiplier, max ms); defaults 2 and 60 s."""
    parts = [part.strip() for part in text.split(",")]
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"--backoff is INITIAL[,MULTIPLIER[,MAX]], e.g. 1s or 500ms,3,1m; got {text!r}"
        )
    initial = _parse_duration_ms(parts[0])
    multiplier = 2.0
    if len(parts) > 1:
        try:
            multiplier = float(parts[1])
        except ValueError:
            raise argparse.ArgumentTypeError(f"the MULTIPLIER of --backoff is a number, e.g. 2 or 1.5; got {parts[1]!r}") from None
    maximum = _parse_duration_ms(parts[2]) if len(parts) > 2 else 60_000
    return initial, multiplier, maximum


def _parse_fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.2, got {text!r}") from None


def _cmd_groups_retry_policy(args: argparse.Namespace) -> int:
    from logstore.client import Admin, RetryPolicy

    policy = None
    if args.clear:
        given = [flag for flag, value in (("--delays", args.delays), ("--backoff", args.backoff), ("--jitter", args.jitter))
                 if value is not None]
        if given:
            _err(f"error: {', '.join(given)} cannot be used with --clear")
            return 2
    elif args.delays is None and args.backoff is None:
        _err("error: --max-attempts needs the waits between attempts: --delays 1s,5s,30s or --backoff INITIAL[,MULTIPLIER[,MAX]]")
        return 2
    elif args.delays is not None:
        policy = RetryPolicy(args.max_attempts, delays_ms=tuple(args.delays), jitter=args.jitter or 0.0)
    else:
        initial, multiplier, maximum = args.backoff
        policy = RetryPolicy(
            args.max_attempts,
            initial_delay_ms=initial,
            multiplier=multiplier,
            max_delay_ms=maximum,
            jitter=args.jitter or 0.0,
        )
    with Admin(_broker(args), **_connection(args)) as admin:
        retry_topics, dead_letter_topic = admin.set_retry_policy(args.group, args.topic, policy)
    if policy is None:
        print(f"cleared the retry policy of group {args.group!r} for topic {args.topic!r}")
        return 0
    print(f"set the retry policy of group {args.group!r} for topic {args.topic!r}: at most {policy.max_attempts} attempt(s)")
    print("retry topics:" + ("" if retry_topics else " none"))
    for name in retry_topics:
        print(f"  {name}")
    print(f"dead-letter topic: {dead_letter_topic}")
    return 0


# --- dead letters -------------------------------------------------------------------------


def _clip(text: str, width: int) -> str:
    """``text`` on one line (control characters escaped), cut to ``width`` with '...'."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _preview(data: bytes | None, width: int) -> str:
    if data is None:
        return "-"
    if not data:
        return '""'
    return _clip(data.decode("utf-8", errors="backslashreplace"), width)


def _local_time_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="milliseconds")


def _dead_letter_json(d: Any) -> str:
    return json.dumps(
        {
            "partition": d.partition,
            "offset": d.offset,
            "timestamp": d.timestamp_ms,
            "key": json_bytes(d.key),
            "value": json_bytes(d.value),
            "headers": [[name, json_bytes(value)] for name, value in d.headers],
            "origin_topic": d.origin_topic,
            "origin_partition": d.origin_partition,
            "origin_offset": d.origin_offset,
            "attempts": d.attempts,
            "first_failure_ms": d.first_failure_ms,
            "error": d.error,
            "dead_lettered_ms": d.dead_lettered_ms,
        },
        ensure_ascii=False,
    )


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    with Admin(_broker(args), **_connection(args)) as admin:
        letters = admin.list_dead_letters(
            args.group, args.topic, key=args.key, since=args.since, until=args.until, page_size=1000
        )
        if args.json:
            try:
                for d in letters:
                    sys.stdout.write(_dead_letter_json(d) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 0
        rows = [
            (
                d.partition,
                d.offset,
                f"{d.origin_topic}/{d.origin_partition}@{d.origin_offset}",
                d.attempts,
                _local_time_ms(d.dead_lettered_ms),
                _clip(d.error, 40) or "-",
                _preview(d.key, 24),
                _preview(d.value, 40),
            )
            for d in letters
        ]
    if not rows:
        print("no dead letters", file=sys.stderr)
        return 0
    header = ("PARTITION", "OFFSET", "ORIGIN", "ATTEMPTS", "DEAD-LETTERED", "ERROR", "KEY", "VALUE")
    for text in _table(header, rows, {0, 1, 3}):
        print(text)
    return 0


def _duration_text(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


class _RedriveProgress:
    """The ``progress`` callback of a redrive: one line on ``stream``, redrawn
    at most 10 times a second, e.g. ``  1,234 / 5,000 (24%)  998 rec/s  ETA 4s``."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.redriven = 0
        self.total = 0
        self._started: float | None = None
        self._last = 0.0
        self._width = 0
        self._drawn: tuple[int, int] | None = None  # the counts on the line now

    def __call__(self, redriven: int, total: int) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self.redriven, self.total = redriven, total
        if self.enabled and (now - self._last >= 0.1 or redriven >= total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        done, total = self.redriven, self.total
        elapsed = now - (self._started if self._started is not None else now)
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = min(100, done * 100 // total) if total else 100
        eta = _duration_text(max(0, total - done) / rate) if rate > 0 else ("0s" if done >= total else "-")
        text = f"  {done:,} / {total:,} ({pct}%)  {rate:,.0f} rec/s  ETA {eta}"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)
        self._drawn = (done, total)

    def finish(self) -> None:
        """Draw the final state and end the line (if anything was drawn)."""
        if self.enabled and self._started is not None:
            if self._drawn != (self.redriven, self.total):
                self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def _cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    progress = _RedriveProgress(sys.stderr, args.progress or sys.stderr.isatty())
    with Admin(_broker(args), **_connection(args)) as admin:
        try:
            redriven = admin.redrive_dead_letters(
                args.group, args.topic, records_per_second=args.rate, progress=progress
            )
        except KeyboardInterrupt:
            progress.finish()
            _err(f"interrupted after redriving {progress.redriven} dead letter(s); run the command again to resume")
            return 130
        except BaseException:
            progress.finish()
            raise
    progress.finish()
    print(f"redrove {redriven} dead letter(s)")
    return 0


def _cmd_dlq_purge(args: argparse.Namespace) -> int:
    from logstore.client import Admin

    if not args.yes:
        _err(
            f"error: purge drops every dead letter of group {args.group!r} for topic {args.topic!r} "
            "for good; add --yes to do it"
        )
        return 2
    with Admin(_broker(args), **_connection(args)) as admin:
        purged = admin.purge_dead_letters(args.group, args.topic)
    print(f"purged {purged} dead letter(s)")
    return 0


# --- verify -------------------------------------------------------------------------------


class _PartitionReport:
    def __init__(self, name: str) -> None:
        self.name = name
        self.segments = 0
        self.batches = 0
        self.records = 0
        self.bytes = 0
        self.first_offset: int | None = None
        self.next_offset: int | None = None
        self.problem: str | None = None


class _Progress:
    """A one-line progress display on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = enabled
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, advanced: int, label: str, force: bool = False) -> None:
        self.done += advanced
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        rate = self.done / max(now - self._started, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        self.stream.write(
            f"\rverifying {_human_bytes(self.done)} / {_human_bytes(self.total)} ({pct:5.1f}%) "
            f"{_human_bytes(rate)}/s  {label[:40]:<40}"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()


def _verify_segment(path: Path, base: int, report: _PartitionReport, progress: _Progress) -> None:
    """Scan one ``.log`` file; record the first problem in ``report`` and stop there."""
    from logstore.storage.batch import check_header, read_header, verify_crc

    size = path.stat().st_size
    report.segments += 1
    report.bytes += size
    if report.next_offset is not None and base != report.next_offset:
        report.problem = (
            f"{path.name}: the segment starts at offset {base} but the previous one ends at "
            f"{report.next_offset} (offsets must be contiguous)"
        )
        return
    if report.first_offset is None:
        report.first_offset = base
    expected = base
    if size == 0:
        report.next_offset = expected
        return
    label = f"{report.name} {path.name}"
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        pos = 0
        while pos < size:
            where = f"{path.name} at byte {pos} (offset {expected})"
            try:
                header = read_header(mm, pos)
                check_header(header, size - pos)
            except LogstoreError as exc:
                report.problem = f"{where}: {exc.message}"
                break
            if header.base_offset != expected:
                report.problem = (
                    f"{where}: the batch says base offset {header.base_offset}, expected {expected}"
                )
                break
            if not verify_crc(mm, pos, header.length):
                report.problem = f"{where}: batch CRC32C mismatch ({header.record_count} records, {header.length} bytes)"
                break
            report.batches += 1
            report.records += header.record_count
            expected = header.base_offset + header.record_count
            pos += header.length
            progress.update(header.length, label)
        progress.update(size - pos, label)
    report.next_offset = expected


def _cmd_verify(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    topics_dir = data_dir / "topics"
    if not topics_dir.is_dir():
        _err(f"error: {topics_dir} is not a directory; is {data_dir} a logstore data directory?")
        return 2
    partitions: list[tuple[str, Path]] = []
    for topic_dir in sorted(topics_dir.iterdir()):
        if topic_dir.name.startswith(".") or not topic_dir.is_dir():
            continue  # .creating-* / .deleted-*: half-done operations the broker cleans up
        numbered = [p for p in topic_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        for part_dir in sorted(numbered, key=lambda p: int(p.name)):
            partitions.append((f"{topic_dir.name}/{part_dir.name}", part_dir))
    plans: list[tuple[_PartitionReport, list[tuple[int, Path]]]] = []
    total = 0
    for name, part_dir in partitions:
        segments = []
        for entry in part_dir.iterdir():
            found = _SEGMENT_LOG.match(entry.name)
            if found and entry.is_file():
                segments.append((int(found.group(1)), entry))
                total += entry.stat().st_size
        plans.append((_PartitionReport(name), sorted(segments)))
    progress = _Progress(total, sys.stderr, sys.stderr.isatty() and total > _PROGRESS_MIN_BYTES and not args.quiet)
    reports = []
    for report, segments in plans:
        for base, path in segments:
            if report.problem is not None:
                report.segments += 1
                report.bytes += path.stat().st_size
                progress.update(path.stat().st_size, report.name)
                continue
            _verify_segment(path, base, report, progress)
        reports.append(report)
    progress.finish()

    bad = [r for r in reports if r.problem is not None]
    if not args.quiet:
        width = max([len("PARTITION")] + [len(r.name) for r in reports])
        print(f"{'PARTITION':<{width}}  {'SEGMENTS':>8}  {'BATCHES':>9}  {'RECORDS':>12}  {'BYTES':>14}  STATUS")
        for r in reports:
            status = "ok" if r.problem is None else f"CORRUPT: {r.problem}"
            print(f"{r.name:<{width}}  {r.segments:>8}  {r.batches:>9}  {r.records:>12}  {r.bytes:>14}  {status}")
    summary = (
        f"{len(reports)} partition(s), {sum(r.segments for r in reports)} segment(s), "
        f"{sum(r.batches for r in reports)} batch(es), {sum(r.records for r in reports)} record(s), "
        f"{_human_bytes(sum(r.bytes for r in reports))}"
    )
    if bad:
        print(f"verify: {summary}: {len(bad)} partition(s) CORRUPT", file=sys.stderr if args.quiet else sys.stdout)
        return 1
    print(f"verify: {summary}: all batches ok", file=sys.stderr if args.quiet else sys.stdout)
    return 0


# --- serve --------------------------------------------------------------------------------


def _cmd_auth_new_token(args: argparse.Namespace) -> int:
    from logstore.server.auth import check_principal_name, hash_token, new_token, principal_config

    check_principal_name(args.principal)
    token = new_token()
    print(token)
    print(principal_config(args.principal, hash_token(token)), end="")
    print(
        "the first line is the token: give it to the client ($LOGSTORE_TOKEN or --token-file); it is not "
        "stored anywhere.  Add the rest to the broker's security config, fill in the permissions, restart the broker.",
        file=sys.stderr,
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from logstore.server.app import run_serve

    return run_serve(args)


# --- the parser ---------------------------------------------------------------------------

_CONSUME_EPILOG = """\
output: one JSON object per line:
  {"topic": "t", "partition": 0, "offset": 42, "timestamp": 1714564800000,
   "key": "k", "value": "text", "headers": [["name", "value"]]}
timestamp is in milliseconds since the Unix epoch.  key and value are null for a
null key/value.  A key, value or header value that is valid UTF-8 is written as
a JSON string; any other bytes are written as {"base64": "<standard base64>"}.

start: the log end (new records only) unless --from-beginning, --offset or --since
is given.  --since takes an ISO 8601 time; without a UTC offset it is local time.

--group G: consume as a member of consumer group G.  The broker assigns the
partitions and keeps the group's committed offsets; each record is acked once
it has been printed, so a later run continues after it.  --from-beginning and
--since then say where a new group starts (default: the log end); --offset and
--partition do not apply.  --max stops after N records and leaves the group;
--no-follow stops once the group has committed everything up to the log end
found at start.
"""

_GROUPS_EPILOG = """\
describe prints the members with their assignments, then one row per partition:
the committed offset ("-" if none yet), the log end offset, the lag (records not
yet done), the owning member and the records in flight.  seek moves the group's
committed offsets for one topic in one atomic write; members that are consuming
restart from the new offsets.  retry-policy sets (or --clear clears) how the group
retries failed records of a topic, and prints the retry topics and the
dead-letter topic it uses (see `logstore dlq --help`).
"""

_RETRY_POLICY_EPILOG = """\
A record that fails (a nack, or an ack deadline that passed) is delivered again
after a wait, at most --max-attempts deliveries in all (the first included), then
goes to the group's dead-letter topic <topic>.<group>.dlq.  The waits are the
--delays list (before attempt 2, 3, ...; the last one repeats), or an exponential
--backoff: INITIAL before attempt 2, times MULTIPLIER (default 2) before each later
one, at most MAX (default 1m).  --jitter F (0 to 0.5) spreads each wait over
[wait * (1 - F), wait].  Durations are milliseconds, or take an ms, s or m suffix:
500ms, 1.5s, 2m.  Each distinct wait is a retry topic <topic>.<group>.retry.<ms>ms
(at most 10).
"""

_DLQ_EPILOG = """\
A group with a retry policy for a topic (`logstore groups retry-policy`) sends the
records that ran out of attempts, or were nacked as terminal, to its dead-letter
topic.  list shows them oldest first per partition: their place in the dead-letter
topic, where they came from (topic/partition@offset), the deliveries made, when
they were dead-lettered (local time), the last error and a preview of key and
value; --json prints one object per line with everything, headers included
(keys and values as in `logstore consume`; times in epoch milliseconds).
--since and --until take epoch milliseconds or ISO 8601 (local time without a UTC
offset).  redrive puts them all back into the group's delivery path with their
attempts reset, at most --rate per second; stopped early, it resumes when run
again.  purge drops them all.
"""

_VERIFY_EPILOG = """\
Reads DATA_DIR/topics/<topic>/<partition>/*.log directly (no broker needed; run it
on a stopped broker's data or on a copy) and checks every batch: header ranges,
contiguous offsets and the CRC32C.  Prints one line per partition with its first
bad batch, if any, and a summary.  Exit status: 0 all ok, 1 corruption found,
2 DATA_DIR is not a data directory.  A torn last batch left by a crash counts as
corruption here; the broker cuts it off when it next opens the data directory.
"""


def _broker_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--broker",
        metavar="HOST:PORT",
        default=None,
        help=f"the broker to talk to (default: ${BROKER_ENV}, else {DEFAULT_BROKER})",
    )
    tls = parent.add_argument_group("TLS and tokens (docs/security.md)")
    tls.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs ($LOGSTORE_TLS=1)")
    tls.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA (PEM; $LOGSTORE_TLS_CA)")
    tls.add_argument("--tls-cert", metavar="FILE", help="client certificate for mutual TLS (PEM; $LOGSTORE_TLS_CERT)")
    tls.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert (PEM; $LOGSTORE_TLS_KEY)")
    tls.add_argument(
        "--token-file", metavar="FILE", help="send the bearer token in FILE (default: $LOGSTORE_TOKEN, if set)"
    )
    return parent


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _nonnegative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _rate(text: str) -> int:
    value = _positive(text)
    if value > 1_000_000:
        raise argparse.ArgumentTypeError(f"expected at most 1000000 records per second, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstore",
        description="logstore: a partitioned commit log served over gRPC",
    )
    parser.add_argument("--version", action="version", version=f"logstore {__version__}")
    parser.add_argument(
        "--broker",
        dest="global_broker",
        metavar="HOST:PORT",
        default=None,
        help=f"the broker for client commands (default: ${BROKER_ENV}, else {DEFAULT_BROKER}); "
        "also accepted after the command",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    broker = _broker_parent()

    # topics
    topics = commands.add_parser("topics", help="create, list, describe and delete topics")
    topic_commands = topics.add_subparsers(title="topic commands", metavar="ACTION")
    topics.set_defaults(func=lambda _args: (topics.print_help(sys.stderr), 2)[1])

    create = topic_commands.add_parser("create", parents=[broker], help="create a topic")
    create.add_argument("name", help="topic name: 1-249 of [A-Za-z0-9._-]")
    create.add_argument("--partitions", type=_positive, default=1, metavar="N", help="partition count (default 1)")
    create.add_argument("--retention-ms", type=int, metavar="MS", help="keep records this long; -1 forever")
    create.add_argument("--retention-bytes", type=int, metavar="BYTES", help="per-partition size limit; -1 none")
    create.add_argument("--segment-bytes", type=int, metavar="BYTES", help="segment file size")
    create.add_argument(
        "--durability", choices=("always", "interval", "os"), help="when appends are fsynced (default: the broker's)"
    )
    create.add_argument("--durability-interval-ms", type=int, metavar="MS", help="fsync interval with --durability interval")
    create.add_argument("--max-record-bytes", type=int, metavar="BYTES", help="largest record accepted")
    create.add_argument("--max-batch-bytes", type=int, metavar="BYTES", help="largest batch accepted")
    create.set_defaults(func=_cmd_topics_create)

    listing = topic_commands.add_parser("list", parents=[broker], help="list topics")
    listing.add_argument("--internal", action="store_true", help="include the broker's own topics (__*)")
    listing.add_argument("--json", action="store_true", help="one JSON object per topic")
    listing.set_defaults(func=_cmd_topics_list)

    describe = topic_commands.add_parser("describe", parents=[broker], help="show a topic's config and partitions")
    describe.add_argument("name")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(func=_cmd_topics_describe)

    delete = topic_commands.add_parser("delete", parents=[broker], help="delete a topic and all its records")
    delete.add_argument("name")
    delete.set_defaults(func=_cmd_topics_delete)

    # produce
    produce = commands.add_parser(
        "produce",
        parents=[broker],
        help="send stdin lines as records",
        description="Send each line of standard input (without its newline) as one record. "
        "Bytes are sent as they are. A summary goes to stderr.",
    )
    produce.add_argument("topic")
    produce.add_argument("--key", help="the key of every record (UTF-8); default: no key")
    produce.add_argument(
        "--header", action="append", type=_parse_header, metavar="NAME=VALUE", help="add a header (repeatable)"
    )
    produce.add_argument(
        "--acks", choices=("none", "leader", "durable"), default="leader", help="what to wait for (default leader)"
    )
    produce.add_argument("--partition", type=_nonnegative, metavar="N", help="send every record to this partition")
    produce.add_argument("--linger-ms", type=float, default=5, metavar="MS", help="batching delay (default 5)")
    produce.set_defaults(func=_cmd_produce)

    # consume
    consume = commands.add_parser(
        "consume",
        parents=[broker],
        help="print records as JSON lines",
        description="Print the records of a topic as JSON lines, following the log until interrupted.",
        epilog=_CONSUME_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    consume.add_argument("topic")
    where = consume.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    where.add_argument("--offset", type=_nonnegative, metavar="N", help="start at offset N (in every partition read)")
    where.add_argument("--since", type=_parse_time, metavar="ISO-TIME", help="start at the first record at or after this time")
    consume.add_argument(
        "--partition", type=_nonnegative, action="append", metavar="P", help="read only partition P (repeatable)"
    )
    consume.add_argument("--max", "--count", dest="max", type=_nonnegative, metavar="N", help="exit after N records")
    consume.add_argument("--no-follow", action="store_true", help="exit at the log end instead of waiting for more")
    consume.add_argument(
        "--group", metavar="G", help="consume as a member of consumer group G, acking each record once printed"
    )
    consume.set_defaults(func=_cmd_consume)

    # groups
    groups = commands.add_parser(
        "groups",
        help="list, describe, seek and delete consumer groups, and set their retry policies",
        epilog=_GROUPS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group_commands = groups.add_subparsers(title="group commands", metavar="ACTION")
    groups.set_defaults(func=lambda _args: (groups.print_help(sys.stderr), 2)[1])

    glist = group_commands.add_parser("list", parents=[broker], help="list consumer groups")
    glist.add_argument("--json", action="store_true", help="one JSON object per group")
    glist.set_defaults(func=_cmd_groups_list)

    gdescribe = group_commands.add_parser(
        "describe", parents=[broker], help="show a group's members, assignment, committed offsets and lag"
    )
    gdescribe.add_argument("group")
    gdescribe.add_argument("--json", action="store_true", help="print one JSON object")
    gdescribe.set_defaults(func=_cmd_groups_describe)

    gseek = group_commands.add_parser("seek", parents=[broker], help="move a group's committed offsets for a topic")
    gseek.add_argument("group")
    gseek.add_argument("topic")
    to = gseek.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the oldest retained record")
    to.add_argument("--to-latest", action="store_true", help="the log end (skip everything there now)")
    to.add_argument("--to-offset", type=_nonnegative, metavar="N", help="offset N (clamped to each partition's log)")
    to.add_argument(
        "--to-time",
        type=_parse_time_ms,
        metavar="TIME",
        help="the first record at or after TIME: epoch milliseconds or ISO 8601 (local time without a UTC offset)",
    )
    gseek.add_argument(
        "--partitions",
        type=_parse_partitions,
        action="append",
        metavar="P[,P...]",
        help="only these partitions (comma-separated, repeatable); default: all",
    )
    gseek.set_defaults(func=_cmd_groups_seek)

    gdelete = group_commands.add_parser("delete", parents=[broker], help="forget a group's committed offsets")
    gdelete.add_argument("group")
    gdelete.set_defaults(func=_cmd_groups_delete)

    gretry = group_commands.add_parser(
        "retry-policy",
        parents=[broker],
        help="set or clear how a group retries a topic's failed records",
        epilog=_RETRY_POLICY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gretry.add_argument("group")
    gretry.add_argument("topic")
    what = gretry.add_mutually_exclusive_group(required=True)
    what.add_argument("--max-attempts", type=_positive, metavar="N", help="deliveries in all, the first included")
    what.add_argument("--clear", action="store_true", help="remove the policy: failed records are delivered again at once")
    waits = gretry.add_mutually_exclusive_group()
    waits.add_argument("--delays", type=_parse_delays, metavar="D[,D...]", help="the waits before attempt 2, 3, ...")
    waits.add_argument(
        "--backoff", type=_parse_backoff, metavar="INITIAL[,MULTIPLIER[,MAX]]", help="exponential waits instead"
    )
    gretry.add_argument("--jitter", type=_parse_fraction, metavar="F", help="spread each wait over [wait*(1-F), wait]")
    gretry.set_defaults(func=_cmd_groups_retry_policy)

    # dead letters
    dlq = commands.add_parser(
        "dlq",
        help="list, redrive and purge a group's dead letters",
        epilog=_DLQ_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dlq_commands = dlq.add_subparsers(title="dead-letter commands", metavar="ACTION")
    dlq.set_defaults(func=lambda _args: (dlq.print_help(sys.stderr), 2)[1])

    dlist = dlq_commands.add_parser("list", parents=[broker], help="show a group's dead letters for a topic")
    dlist.add_argument("group")
    dlist.add_argument("topic")
    dlist.add_argument("--key", help="only dead letters with this key (UTF-8)")
    dlist.add_argument("--since", type=_parse_time_ms, metavar="TIME", help="only those dead-lettered at or after TIME")
    dlist.add_argument("--until", type=_parse_time_ms, metavar="TIME", help="only those dead-lettered before TIME")
    dlist.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    dlist.set_defaults(func=_cmd_dlq_list)

    dredrive = dlq_commands.add_parser(
        "redrive", parents=[broker], help="deliver a group's dead letters for a topic again"
    )
    dredrive.add_argument("group")
    dredrive.add_argument("topic")
    dredrive.add_argument(
        "--rate", type=_rate, default=1000, metavar="N", help="at most N records per second (default 1000)"
    )
    dredrive.add_argument(
        "--progress", action="store_true", help="show progress on stderr even when it is not a terminal"
    )
    dredrive.set_defaults(func=_cmd_dlq_redrive)

    dpurge = dlq_commands.add_parser("purge", parents=[broker], help="drop a group's dead letters for a topic")
    dpurge.add_argument("group")
    dpurge.add_argument("topic")
    dpurge.add_argument("--yes", action="store_true", help="confirm: the dead letters are gone for good")
    dpurge.set_defaults(func=_cmd_dlq_purge)

    # verify
    verify = commands.add_parser(
        "verify",
        help="check a data directory's segment files offline",
        description="Check every batch of a data directory's segment files.",
        epilog=_VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("data_dir", metavar="DATA_DIR")
    verify.add_argument("--quiet", "-q", action="store_true", help="print only the summary (to stderr)")
    verify.set_defaults(func=_cmd_verify)

    # auth
    auth = commands.add_parser("auth", help="mint tokens for the broker's security config")
    auth_commands = auth.add_subparsers(title="auth commands", metavar="ACTION")
    auth.set_defaults(func=lambda _args: (auth.print_help(sys.stderr), 2)[1])
    new_token = auth_commands.add_parser(
        "new-token",
        help="print a new random token and the security-config table with its hash",
        description="Print a new random token on the first line of stdout, then the [principals.NAME] table "
        "holding its SHA-256 for the broker's --security-config file (the broker never stores the token).",
    )
    new_token.add_argument("--principal", required=True, metavar="NAME", help="who the token stands for")
    new_token.set_defaults(func=_cmd_auth_new_token)

    # serve
    serve = commands.add_parser("serve", help="run the broker")
    serve.add_argument("--data-dir", required=True, metavar="DIR", help="where the topics are stored")
    serve.add_argument(
        "--listen", default=DEFAULT_BROKER, metavar="HOST:PORT", help=f"address to serve on (default {DEFAULT_BROKER})"
    )
    serve.add_argument("--config", metavar="FILE", help="broker configuration file")
    serve.add_argument(
        "--security-config",
        metavar="FILE",
        help="TOML file with [principals.NAME] (tokens and permissions: turns authentication on), "
        "[limits] and [quotas]; see docs/security.md",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    serve.add_argument(
        "--tls-client-ca", metavar="FILE", help="mutual TLS: require client certificates signed by this CA (PEM)"
    )
    serve.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=("debug", "info", "warning", "error", "critical"),
        metavar="LEVEL",
        help="debug, info (default), warning, error or critical",
    )
    serve.set_defaults(func=_cmd_serve)
    return parser


def _describe_unexpected(exc: BaseException) -> str | None:
    """A one-line message for errors that should not show a traceback, else None."""
    if isinstance(exc, LogstoreError):
        return exc.message
    grpc = sys.modules.get("grpc")
    if grpc is not None and isinstance(exc, grpc.RpcError):
        from logstore.client._channel import translate_rpc_error

        return translate_rpc_error(exc).message
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _describe_unexpected(exc)
        if message is None:
            raise
        _err(f"error: {message}")
        return 1
