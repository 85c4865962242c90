"""record_spans and record_key against the codec: encode_records in, decode_records as the oracle.

``record_spans`` must cut a records section exactly where ``decode_records``
sees record boundaries (any run of records sliced out decodes to those
records), and ``record_key`` must return the key ``decode_records`` reads,
null and empty kept apart.  Damaged framing raises CorruptBatch.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstore.errors import CorruptBatch
from logstore.storage.batch import HEADER, HEADER_SIZE, build_batch
from logstore.storage.records import (
    Record,
    decode_records,
    encode_records,
    encode_varint,
    read_varint,
    record_key,
    record_spans,
)

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

RECORDS = st.builds(
    Record,
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=300),
    headers=st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3).map(tuple),
    timestamp=st.one_of(st.just(0), st.integers(0, 1 << 45), st.integers(I64_MIN, I64_MAX)),
)


def decoded(data: bytes | memoryview) -> list[Record]:
    return [r for _, r in decode_records(data)]


@given(st.lists(RECORDS, min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_spans_cut_exactly_at_the_decoder_record_boundaries(records):
    """spans has count+1 entries from 0 to len(data); each slice decodes to exactly its one record."""
    data = encode_records(records).data
    spans = record_spans(data)
    assert len(spans) == len(records) + 1
    assert spans[0] == 0 and spans[-1] == len(data)
    assert spans == sorted(spans) and len(set(spans)) == len(spans)
    for i, record in enumerate(records):
        assert decoded(data[spans[i] : spans[i + 1]]) == [record]


@given(st.lists(RECORDS, min_size=1, max_size=20), st.data())
@settings(max_examples=300, deadline=None)
def test_any_run_of_records_sliced_out_decodes_to_that_run(records, data):
    """data[spans[i]:spans[j]] is a valid records section holding exactly records[i:j]."""
    raw = encode_records(records).data
    spans = record_spans(raw)
    i = data.draw(st.integers(0, len(records) - 1))
    j = data.draw(st.integers(i + 1, len(records)))
    assert decoded(memoryview(raw)[spans[i] : spans[j]]) == records[i:j]


@given(st.lists(RECORDS, min_size=1, max_size=20))
@settings(max_examples=300, deadline=None)
def test_record_key_is_the_key_the_decoder_reads(records):
    """record_key of each span equals the decoded key: None for a null key, b'' for an empty one."""
    data = encode_records(records).data
    spans = record_spans(data)
    for i, record in enumerate(records):
        key = record_key(data, spans[i], spans[i + 1])
        assert key == record.key
        assert (key is None) == (record.key is None)
        assert type(key) in (bytes, type(None))


@given(st.lists(RECORDS, min_size=1, max_size=20), st.integers(0, 99))
@settings(max_examples=200, deadline=None)
def test_spans_inside_a_stored_batch_use_absolute_positions(records, base_offset):
    """In a built batch, spans from HEADER_SIZE to length are absolute positions slicing the same records out."""
    batch = build_batch(records, base_offset=base_offset)
    length = HEADER.unpack_from(batch, 0)[1]
    spans = record_spans(batch, HEADER_SIZE, length)
    assert spans[0] == HEADER_SIZE and spans[-1] == length == len(batch)
    view = memoryview(batch)
    assert record_spans(view, HEADER_SIZE, length) == spans
    for i, record in enumerate(records):
        assert decoded(view[spans[i] : spans[i + 1]]) == [record]
        assert record_key(view, spans[i], spans[i + 1]) == record.key


@given(st.lists(RECORDS, min_size=1, max_size=10), st.data())
@settings(max_examples=300, deadline=None)
def test_a_section_cut_off_inside_a_record_is_corrupt(records, data):
    """Truncating the records section anywhere but a record boundary raises CorruptBatch, as decoding does."""
    raw = encode_records(records).data
    spans = record_spans(raw)
    cut = data.draw(st.integers(1, len(raw) - 1).filter(lambda c: c not in spans), label="cut")
    with pytest.raises(CorruptBatch):
        record_spans(raw[:cut])
    with pytest.raises(CorruptBatch):
        decoded(raw[:cut])
    with pytest.raises(CorruptBatch):
        record_spans(raw, 0, cut)


@given(st.lists(RECORDS, min_size=1, max_size=10), st.data(), st.integers(0, 255).filter(lambda b: b != 0x0A))
@settings(max_examples=200, deadline=None)
def test_a_damaged_record_tag_is_corrupt(records, data, bad):
    """Any byte other than 0x0A where a record begins raises CorruptBatch from spans and record_key."""
    raw = bytearray(encode_records(records).data)
    spans = record_spans(raw)
    i = data.draw(st.integers(0, len(records) - 1))
    raw[spans[i]] = bad
    with pytest.raises(CorruptBatch):
        record_spans(raw)
    with pytest.raises(CorruptBatch):
        record_key(raw, spans[i], spans[i + 1])


def reference_spans(data: bytes, start: int, end: int) -> list[int]:
    """The framing rule written plainly: tag 0x0A, a varint length, that many bytes, until ``end``."""
    spans, pos = [], start
    while pos < end:
        if data[pos] != 0x0A:
            raise CorruptBatch("tag")
        spans.append(pos)
        n, pos = read_varint(data, pos + 1, end)
        if pos + n > end:
            raise CorruptBatch("length")
        pos += n
    return spans + [end]


def _framed(size: int, pad: int) -> bytes:
    """One framed record of ``size`` body bytes; ``pad`` > 0 writes its length as a longer (non-canonical) varint."""
    length = bytearray(encode_varint(size))
    if pad:
        length[-1] |= 0x80
        length += b"\x80" * (pad - 1) + b"\x00"
    return b"\x0a" + bytes(length) + bytes(size)


def _damaged(raw: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    """``raw`` with some bytes overwritten and ``cut`` bytes dropped at its end."""
    out = bytearray(raw)
    for where, value in flips:
        if out:
            out[where % len(out)] = value
    return bytes(out[: len(out) - cut])


FRAMING = st.builds(
    lambda records, flips, cut: _damaged(b"".join(_framed(size, pad) for size, pad in records), flips, cut),
    st.lists(
        st.tuples(st.sampled_from([0, 1, 5, 127, 128, 300, 16_383, 16_384]) | st.integers(0, 200), st.integers(0, 2)),
        max_size=8,
    ),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=2),
    st.sampled_from([0, 0, 0, 1, 2]),
)
"""Framed records with 1- to 3-byte (and padded) lengths, sometimes overwritten or cut short."""


@given(FRAMING, st.data())
@settings(max_examples=1_000, deadline=None)
def test_spans_of_arbitrary_bytes_match_the_plain_framing_rule_or_raise_corrupt(raw, data):
    """On framed, damaged or cut bytes and any window, record_spans equals the plain rule or both raise CorruptBatch."""
    start = data.draw(st.just(0) | st.integers(0, len(raw)))
    end = data.draw(st.just(len(raw)) | st.integers(start, len(raw)))
    try:
        expected = reference_spans(raw, start, end)
    except CorruptBatch:
        with pytest.raises(CorruptBatch):
            record_spans(raw, start, end)
        return
    assert record_spans(raw, start, end) == expected
    assert record_spans(memoryview(raw), start, end) == expected


def test_a_length_past_the_end_and_an_overlong_varint_are_corrupt():
    """A record length running past the section and an 11-byte varint length both raise CorruptBatch."""
    with pytest.raises(CorruptBatch):
        record_spans(b"\x0a\x05abc")
    with pytest.raises(CorruptBatch):
        record_spans(b"\x0a" + b"\xff" * 10 + b"\x01")
    with pytest.raises(CorruptBatch):
        record_spans(b"\x0a\x80")  # varint cut off
    assert record_spans(b"") == [0]


def test_record_key_checks_the_key_length_inside_the_record():
    """Framing intact but the key's length runs past its record: spans pass, record_key and decode raise."""
    body = b"\x1a\x05ab"  # key field claims 5 bytes, 2 follow
    raw = b"\x0a" + bytes([len(body)]) + body
    spans = record_spans(raw)
    assert spans == [0, len(raw)]
    with pytest.raises(CorruptBatch):
        record_key(raw, 0, len(raw))
    with pytest.raises(CorruptBatch):
        decoded(raw)


@pytest.mark.parametrize(
    "body, key",
    [
        (b"\x08\x07\x1a\x02hi\x22\x01v", b"hi"),  # unknown varint field 1 before the key
        (b"\x22\x03val\x1a\x01k", b"k"),  # value written before the key
        (b"\x3d\x01\x02\x03\x04\x1a\x00", b""),  # unknown fixed32 field 7, then an empty key
        (b"\x31" + b"\x00" * 8 + b"\x22\x00", None),  # unknown fixed64 field 6, a value, no key
        (b"\x10" + b"\xff" * 9 + b"\x01\x1a\x01z", b"z"),  # negative timestamp (10-byte varint)
    ],
)
def test_record_key_skips_other_fields_like_the_decoder(body, key):
    """Hand-built records with unknown fields, odd field order or a 10-byte timestamp: key == decoded key."""
    raw = b"\x0a" + bytes([len(body)]) + body
    assert record_spans(raw) == [0, len(raw)]
    assert record_key(raw, 0, len(raw)) == key
    assert decoded(raw)[0].key == key


@pytest.mark.parametrize("body", [b"\x1b", b"\x1c\x00", b"\x1a", b"\x3d\x01\x02"])
def test_record_key_refuses_bad_wire_types_and_truncated_fields(body):
    """Group wire types 3/4, a key tag with no length and a cut fixed32 raise CorruptBatch in both readers."""
    raw = b"\x0a" + bytes([len(body)]) + body
    with pytest.raises(CorruptBatch):
        record_key(raw, 0, len(raw))
    with pytest.raises(CorruptBatch):
        decoded(raw)
