"""Provenance headers spliced into stored record bytes: round trips through the real record codec."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore.broker.provenance import (
    MAX_ERROR_BYTES,
    PREFIX,
    Provenance,
    due_ms,
    read_provenance,
    with_provenance,
)
from logstore.errors import CorruptBatch
from logstore.storage.records import Record, decode_records, encode_records, encode_varint, read_varint, record_spans

T0 = 1_700_000_000_000
I64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)

PROV = Provenance(
    origin_topic="orders",
    origin_partition=2,
    origin_offset=41,
    attempt=1,
    first_failure_ms=T0,
    error="smtp timeout",
    due_ms=T0 + 5000,
)


def framed(record: Record) -> bytes:
    """One record as stored: tag 0x0A, varint length, Record message."""
    return encode_records([record]).data


def decode_one(data: bytes) -> Record:
    """The single record of a framed record, decoded by the storage codec."""
    records = [r for _, r in decode_records(data)]
    assert len(records) == 1
    return records[0]


def body_of(data: bytes) -> bytes:
    """The Record message inside a framed record (framing stripped)."""
    n, pos = read_varint(data, 1)
    assert pos + n == len(data)
    return data[pos:]


def frame_body(body: bytes) -> bytes:
    return b"\x0a" + encode_varint(len(body)) + body


# -- strategies --------------------------------------------------------------------------------------

user_header_names = st.text(max_size=20).filter(lambda n: not n.startswith(PREFIX))
user_headers = st.lists(st.tuples(user_header_names, st.binary(max_size=30)), max_size=6)
records = st.builds(
    Record,
    key=st.none() | st.binary(max_size=300),
    value=st.none() | st.binary(max_size=300),
    headers=user_headers.map(tuple),
    timestamp=I64,
)
provenances = st.builds(
    Provenance,
    origin_topic=st.text(max_size=40),
    origin_partition=I64,
    origin_offset=I64,
    attempt=I64,
    first_failure_ms=I64,
    error=st.text(max_size=200),
    due_ms=I64,
    dead_lettered_ms=I64,
)


# -- with_provenance ---------------------------------------------------------------------------------


@given(records, provenances)
def test_provenance_keeps_the_record_and_appends_exactly_its_headers(record: Record, prov: Provenance) -> None:
    """with_provenance keeps key, value, timestamp and user headers in order, then adds exactly its headers."""
    out = with_provenance(framed(record), prov)
    got = decode_one(out)
    assert got.key == record.key
    assert got.value == record.value
    assert got.timestamp == record.timestamp
    assert got.headers == record.headers + tuple(prov.headers())


@given(records, provenances)
def test_provenance_leaves_the_original_bytes_untouched(record: Record, prov: Provenance) -> None:
    """The original Record message is a byte-identical prefix of the new one (nothing is re-encoded)."""
    original = framed(record)
    assert body_of(with_provenance(original, prov)).startswith(body_of(original))


@given(records, provenances, provenances)
def test_applying_provenance_twice_replaces_it(record: Record, first: Provenance, second: Provenance) -> None:
    """A second with_provenance replaces the first's headers rather than adding to them."""
    once = with_provenance(framed(record), first)
    twice = with_provenance(once, second)
    assert decode_one(twice).headers == record.headers + tuple(second.headers())
    assert twice == with_provenance(framed(record), second)


@given(records, provenances)
def test_read_provenance_returns_what_was_written(record: Record, prov: Provenance) -> None:
    """read_provenance of a record given provenance p is p (error text within its limit)."""
    assert read_provenance(with_provenance(framed(record), prov)) == prov


@given(records, provenances)
def test_due_ms_reads_the_due_header(record: Record, prov: Provenance) -> None:
    """due_ms gives the provenance's due time (0 when it has none)."""
    assert due_ms(with_provenance(framed(record), prov)) == prov.due_ms


def test_user_logstore_headers_are_dropped_and_others_kept_in_order() -> None:
    """Headers named logstore.* are reserved: dropped wherever they are; other headers keep their order."""
    record = Record(
        b"k",
        b"v",
        (
            ("a", b"1"),
            ("logstore.attempt", b"99"),
            ("logstore", b"2"),
            ("logstore.custom", b"x"),
            ("logstorex", b"3"),
            ("a", b"4"),
        ),
        T0,
    )
    got = decode_one(with_provenance(framed(record), PROV))
    assert got.headers == (("a", b"1"), ("logstore", b"2"), ("logstorex", b"3"), ("a", b"4")) + tuple(
        PROV.headers()
    )


def test_provenance_header_names_and_text_values() -> None:
    """Provenance headers use the documented names, decimal UTF-8 values, and omit zero due/dead-letter times."""
    assert PROV.headers() == [
        ("logstore.origin.topic", b"orders"),
        ("logstore.origin.partition", b"2"),
        ("logstore.origin.offset", b"41"),
        ("logstore.attempt", b"1"),
        ("logstore.first_failure_ms", str(T0).encode()),
        ("logstore.error", b"smtp timeout"),
        ("logstore.due_ms", str(T0 + 5000).encode()),
    ]
    dead = dataclasses.replace(PROV, due_ms=0, dead_lettered_ms=T0 + 9)
    assert dead.headers()[-1] == ("logstore.dead_lettered_ms", str(T0 + 9).encode())
    assert "logstore.due_ms" not in dict(dead.headers())


def test_error_text_is_clipped_to_its_byte_limit_on_a_character_boundary() -> None:
    """An error longer than MAX_ERROR_BYTES is cut to a UTF-8 prefix of at most that many bytes."""
    error = "é" * MAX_ERROR_BYTES  # 2 bytes each: twice the limit
    out = with_provenance(framed(Record(b"k", b"v")), dataclasses.replace(PROV, error=error))
    stored = dict(decode_one(out).headers)["logstore.error"]
    assert len(stored) <= MAX_ERROR_BYTES and len(stored) >= MAX_ERROR_BYTES - 1
    text = stored.decode("utf-8")
    assert error.startswith(text)
    assert read_provenance(out).error == text


def test_error_text_at_the_limit_is_kept_whole() -> None:
    """An error of exactly MAX_ERROR_BYTES bytes is not clipped."""
    error = "x" * MAX_ERROR_BYTES
    out = with_provenance(framed(Record(b"k", b"v")), dataclasses.replace(PROV, error=error))
    assert read_provenance(out).error == error


def test_empty_record_gets_only_provenance() -> None:
    """A record with no fields at all (null key and value, timestamp 0) gains just the provenance headers."""
    out = with_provenance(framed(Record()), PROV)
    assert decode_one(out) == Record(None, None, tuple(PROV.headers()), 0)


def test_memoryview_input_gives_the_same_bytes() -> None:
    """with_provenance, read_provenance and due_ms accept a memoryview slice of a batch like bytes."""
    data = framed(Record(b"k", b"v", (("h", b"1"),), T0))
    out = with_provenance(data, PROV)
    assert with_provenance(memoryview(data), PROV) == out
    assert read_provenance(memoryview(out)) == PROV
    assert due_ms(memoryview(out)) == PROV.due_ms


def test_one_record_of_a_batch_can_be_replaced_in_place() -> None:
    """A record cut out of a records section by record_spans can be given provenance and spliced back."""
    recs = [Record(b"a", b"1", (), T0), Record(b"b", b"2", (("x", b"y"),), T0 + 1), Record(b"c", b"3", (), T0 + 2)]
    data = encode_records(recs).data
    spans = record_spans(data)
    middle = with_provenance(memoryview(data)[spans[1] : spans[2]], PROV)
    spliced = data[: spans[1]] + middle + data[spans[2] :]
    got = [r for _, r in decode_records(spliced)]
    assert got[0] == recs[0] and got[2] == recs[2]
    assert got[1] == dataclasses.replace(recs[1], headers=recs[1].headers + tuple(PROV.headers()))


def test_unknown_record_fields_are_kept() -> None:
    """Fields the codec does not know (e.g. a ProducerRecord's partition, field 6) survive byte for byte."""
    body = body_of(framed(Record(b"k", b"v", (), T0))) + b"\x30\x05"  # field 6, varint 5
    out = with_provenance(frame_body(body), PROV)
    assert body_of(out).startswith(body)
    assert decode_one(out) == Record(b"k", b"v", tuple(PROV.headers()), T0)


def test_large_record_with_multibyte_length_prefix() -> None:
    """A record over 16 KiB (3-byte length prefix) keeps its value and gains its headers."""
    value = bytes(range(256)) * 100
    out = with_provenance(framed(Record(b"k", value, (), T0)), PROV)
    assert decode_one(out) == Record(b"k", value, tuple(PROV.headers()), T0)


# -- read_provenance / due_ms on records without (complete) provenance ------------------------------


def test_read_provenance_of_a_plain_record_is_none() -> None:
    """A record with no logstore.* headers has no provenance and no due time."""
    data = framed(Record(b"k", b"v", (("h", b"1"),), T0))
    assert read_provenance(data) is None
    assert due_ms(data) == 0


def test_read_provenance_of_an_incomplete_set_is_none() -> None:
    """A record with only some provenance headers (origin topic but no attempt, ...) reads as None."""
    data = framed(Record(b"k", b"v", (("logstore.origin.topic", b"orders"),), T0))
    assert read_provenance(data) is None


def test_read_provenance_without_origin_topic_is_none() -> None:
    """Without logstore.origin.topic a record has no provenance even if other fields are there."""
    headers = tuple(h for h in PROV.headers() if h[0] != "logstore.origin.topic")
    assert read_provenance(framed(Record(b"k", b"v", headers, T0))) is None


@pytest.mark.parametrize("bad", [b"two", b"", b"1.5", b"\xff"])
def test_read_provenance_with_a_non_integer_field_is_none(bad: bytes) -> None:
    """A numeric provenance header that is not a decimal integer makes the provenance unreadable (None)."""
    headers = tuple((n, bad if n == "logstore.attempt" else v) for n, v in PROV.headers())
    assert read_provenance(framed(Record(b"k", b"v", headers, T0))) is None


def test_read_provenance_ignores_unknown_logstore_headers() -> None:
    """An unknown logstore.* header next to a complete set does not spoil the provenance."""
    headers = tuple(PROV.headers()) + (("logstore.future", b"x"),)
    assert read_provenance(framed(Record(b"k", b"v", headers, T0))) == PROV


def test_due_ms_of_a_garbage_value_is_zero() -> None:
    """A logstore.due_ms header that is not an integer reads as 0."""
    assert due_ms(framed(Record(b"k", b"v", (("logstore.due_ms", b"soon"),), T0))) == 0


# -- damaged framing -----------------------------------------------------------------------------------

GOOD = framed(Record(b"key", b"value", (("h", b"1"),), T0))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x12" + GOOD[1:], id="wrong-tag"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(GOOD + b"\x00", id="trailing-byte"),
        pytest.param(GOOD + GOOD, id="two-records"),
        pytest.param(b"\x0a\xff", id="truncated-length-varint"),
        pytest.param(b"\x0a" + b"\xff" * 11, id="overlong-length-varint"),
        pytest.param(frame_body(b"\x1a\x09key"), id="key-runs-past-the-end"),
        pytest.param(frame_body(b"\x2a\x20\x0a\x01h"), id="header-runs-past-the-end"),
        pytest.param(frame_body(b"\x10"), id="truncated-timestamp-varint"),
        pytest.param(frame_body(b"\x1b\x00"), id="wire-type-3"),
        pytest.param(frame_body(b"\x1c\x00"), id="wire-type-4"),
        pytest.param(frame_body(b"\x1e\x00"), id="wire-type-6"),
        pytest.param(frame_body(b"\x1f\x00"), id="wire-type-7"),
        pytest.param(frame_body(b"\x80"), id="truncated-tag-varint"),
    ],
)
def test_damaged_framing_raises_corrupt_batch(data: bytes) -> None:
    """with_provenance, read_provenance and due_ms raise CorruptBatch on structurally damaged records."""
    for fn in (lambda d: with_provenance(d, PROV), read_provenance, due_ms):
        with pytest.raises(CorruptBatch):
            fn(data)


TRUNCATED_FIXED = [
    pytest.param(frame_body(b"\x1a\x01k\x09abc"), id="fixed64-3-of-8-bytes"),
    pytest.param(frame_body(b"\x1a\x01k\x0dab"), id="fixed32-2-of-4-bytes"),
]


@pytest.mark.parametrize("data", TRUNCATED_FIXED)
def test_the_storage_codec_rejects_truncated_fixed_fields(data: bytes) -> None:
    """Sanity: decode_records raises CorruptBatch on a fixed-width field cut short."""
    with pytest.raises(CorruptBatch):
        list(decode_records(data))


@pytest.mark.parametrize("data", TRUNCATED_FIXED)
def test_truncated_fixed_field_raises_corrupt_batch(data: bytes) -> None:
    """A fixed64/fixed32 field running past the end of the record raises CorruptBatch."""
    with pytest.raises(CorruptBatch):
        with_provenance(data, PROV)


HEADER_NAME_OVERRUN = frame_body(b"\x2a\x04\x0a\x05ab" + b"\x22\x03xyz")
"""A header whose name claims 5 bytes inside a 4-byte header (and reaches into the value field)."""


def test_the_storage_codec_rejects_a_header_name_overrun() -> None:
    """Sanity: decode_records raises CorruptBatch on a header field longer than its header."""
    with pytest.raises(CorruptBatch):
        list(decode_records(HEADER_NAME_OVERRUN))


def test_header_field_overrunning_its_header_raises_corrupt_batch() -> None:
    """A header name or value longer than the header it sits in raises CorruptBatch."""
    with pytest.raises(CorruptBatch):
        with_provenance(HEADER_NAME_OVERRUN, PROV)


HEADER_WITH_UNKNOWN_FIELD = frame_body(b"\x1a\x01k" + b"\x2a\x08\x0a\x01a\x12\x01b\x18\x01")
"""A valid record whose one header carries an unknown varint field 3 (a newer Header message)."""


def test_the_storage_codec_skips_unknown_header_fields() -> None:
    """Sanity: decode_records accepts a header with an unknown field (forward compatibility)."""
    assert decode_one(HEADER_WITH_UNKNOWN_FIELD) == Record(b"k", None, (("a", b"b"),), 0)


def test_header_with_an_unknown_field_gets_provenance() -> None:
    """A record that decode_records accepts (header with an unknown field) can be given provenance."""
    out = with_provenance(HEADER_WITH_UNKNOWN_FIELD, PROV)
    assert decode_one(out).headers == (("a", b"b"),) + tuple(PROV.headers())
