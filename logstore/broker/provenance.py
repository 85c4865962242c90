"""Provenance headers: where a retried or dead-lettered record came from, and why.

When a group's record moves to a retry tier or the dead-letter topic, the
copy keeps the original key, value, timestamp and headers, and gets these
headers (values are UTF-8 text, numbers in decimal, so any client reads them
without a logstore library)::

    logstore.origin.topic        the topic the record was produced to
    logstore.origin.partition    its partition there
    logstore.origin.offset       its offset there
    logstore.attempt             deliveries made so far (failed ones)
    logstore.first_failure_ms    when its first delivery failed (epoch ms)
    logstore.error               the reason of the last nack ("ack deadline
                                 expired" for a deadline); at most 4096 bytes
    logstore.due_ms              in a retry tier: when it is due again
    logstore.dead_lettered_ms    in a dead-letter topic: when it got there

The copy is made on the stored bytes: existing ``logstore.*`` headers are
dropped and the new ones appended to the record's protobuf encoding, so
nothing else of the record is decoded or re-encoded.  Header names starting
with ``logstore.`` are therefore reserved in records that go through retries.

What this does not guarantee: provenance is plain headers, not signed; a
producer could write such headers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from logstore.errors import CorruptBatch
from logstore.storage.records import RECORDS_FIELD_TAG, encode_varint, read_varint

__all__ = ["Provenance", "PREFIX", "with_provenance", "read_provenance", "resolved_offset", "due_ms", "MAX_ERROR_BYTES"]

PREFIX = "logstore."
MAX_ERROR_BYTES = 4096
_HEADER_TAG = 0x2A  # Record.headers = 5, length-delimited
_NAME_TAG = 0x0A  # Header.name = 1
_VALUE_TAG = 0x12  # Header.value = 2

_FIELDS = (
    ("origin_topic", "logstore.origin.topic"),
    ("origin_partition", "logstore.origin.partition"),
    ("origin_offset", "logstore.origin.offset"),
    ("attempt", "logstore.attempt"),
    ("first_failure_ms", "logstore.first_failure_ms"),
    ("error", "logstore.error"),
    ("due_ms", "logstore.due_ms"),
    ("dead_lettered_ms", "logstore.dead_lettered_ms"),
)
_BY_NAME = {header: attr for attr, header in _FIELDS}


@dataclass(frozen=True, slots=True)
class Provenance:
    """The provenance headers of a retried or dead-lettered record."""

    origin_topic: str
    origin_partition: int
    origin_offset: int
    attempt: int
    first_failure_ms: int
    error: str = ""
    due_ms: int = 0
    """0 when not in a retry tier."""
    dead_lettered_ms: int = 0
    """0 when not dead-lettered."""

    def headers(self) -> list[tuple[str, bytes]]:
        out = []
        for attr, name in _FIELDS:
            value = getattr(self, attr)
            if attr in ("due_ms", "dead_lettered_ms") and not value:
                continue
            if attr == "error":
                value = _clip_utf8(value, MAX_ERROR_BYTES)
            out.append((name, str(value).encode("utf-8")))
        return out


def _clip_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _walk(framed: bytes | memoryview) -> tuple[list[tuple[int, int, bool]], dict[str, bytes]]:
    """The record body's fields as (start, end, is_logstore_header) and its logstore headers."""
    if not framed or framed[0] != RECORDS_FIELD_TAG:
        raise CorruptBatch("not a framed record (expected tag 0x0A)")
    n, pos = read_varint(framed, 1)
    end = pos + n
    if end != len(framed):
        raise CorruptBatch("a framed record's length does not match its bytes")
    fields: list[tuple[int, int, bool]] = []
    ours: dict[str, bytes] = {}
    while pos < end:
        start = pos
        tag, pos = read_varint(framed, pos, end)
        wire = tag & 7
        if wire == 0:
            _, pos = read_varint(framed, pos, end)
        elif wire == 2:
            size, body = read_varint(framed, pos, end)
            pos = body + size
            if pos > end:
                raise CorruptBatch("a record field runs past the end of the record")
            if tag == _HEADER_TAG:
                name, value = _header(framed, body, pos)
                if name.startswith(PREFIX):
                    ours[name] = value
                    fields.append((start, pos, True))
                    continue
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise CorruptBatch(f"unsupported wire type {wire} in a record")
        if pos > end:
            raise CorruptBatch("a fixed-width record field runs past the end of the record")
        fields.append((start, pos, False))
    return fields, ours


def _header(buf: bytes | memoryview, pos: int, end: int) -> tuple[str, bytes]:
    name, value = b"", b""
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        wire = tag & 7
        if wire == 2:
            size, pos = read_varint(buf, pos, end)
            if pos + size > end:
                raise CorruptBatch("a record header field runs past the end of its header")
            if tag == _NAME_TAG:
                name = bytes(buf[pos : pos + size])
            elif tag == _VALUE_TAG:
                value = bytes(buf[pos : pos + size])
            pos += size  # unknown length-delimited fields are skipped, as records.py does
        elif wire == 0:
            _, pos = read_varint(buf, pos, end)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise CorruptBatch("a record header field runs past the end of its header")
        else:
            raise CorruptBatch(f"unsupported wire type {wire} in a record header")
    return name.decode("utf-8", "replace"), value


def with_provenance(framed: bytes | memoryview, provenance: Provenance) -> bytes:
    """The framed record with its ``logstore.*`` headers replaced by ``provenance``'s."""
    fields, _ours = _walk(framed)
    kept = [bytes(framed[a:b]) for a, b, ours in fields if not ours]
    for name, value in provenance.headers():
        kept.append(_len_field(_HEADER_TAG, _len_field(_NAME_TAG, name.encode("utf-8")) + _len_field(_VALUE_TAG, value)))
    body = b"".join(kept)
    return bytes((RECORDS_FIELD_TAG,)) + encode_varint(len(body)) + body


def read_provenance(framed: bytes | memoryview) -> Provenance | None:
    """The provenance of a framed record, or None if it carries none (or an incomplete set)."""
    _fields, ours = _walk(framed)
    if "logstore.origin.topic" not in ours:
        return None
    values: dict[str, object] = {}
    try:
        for name, raw in ours.items():
            attr = _BY_NAME.get(name)
            if attr is None:
                continue
            text = raw.decode("utf-8")
            values[attr] = text if attr in ("origin_topic", "error") else int(text)
        return Provenance(**values)  # type: ignore[arg-type]
    except (UnicodeDecodeError, ValueError, TypeError):
        return None


def due_ms(framed: bytes | memoryview) -> int:
    """The ``logstore.due_ms`` of a framed record, 0 if it has none."""
    _fields, ours = _walk(framed)
    raw = ours.get("logstore.due_ms")
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def resolved_offset(framed: bytes | memoryview) -> int | None:
    """For a dead-letter resolution marker (header ``logstore.resolves``): the offset it
    resolves; None for any other record."""
    _fields, ours = _walk(framed)
    raw = ours.get("logstore.resolves")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
