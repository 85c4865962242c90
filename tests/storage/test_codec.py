"""The batch codec: records in, bytes out, the same records back; damage detected."""

from __future__ import annotations

import importlib
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstore.errors import CorruptBatch, InvalidArgument
from logstore.storage import batch as batch_mod
from logstore.storage.batch import HEADER_SIZE, build_batch, iter_batch_records, read_header, validate_batch
from logstore.storage.crc import EXTENSION_ACTIVE, crc32c
from logstore.storage.records import Record

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def roundtrip(records: list[Record], base_offset: int = 0) -> list[tuple[int, Record]]:
    batch = build_batch(records, base_offset=base_offset)
    header = validate_batch(batch)
    assert header.length == len(batch)
    assert header.record_count == len(records)
    assert header.base_offset == base_offset
    assert header.first_timestamp == records[0].timestamp
    assert header.max_timestamp == max(r.timestamp for r in records)
    return list(iter_batch_records(batch))


def expect(records: list[Record], base_offset: int = 0) -> list[tuple[int, Record]]:
    return [(base_offset + i, r) for i, r in enumerate(records)]


def test_empty_and_null_values_round_trip():
    """Empty and null keys/values survive the round trip and stay distinct."""
    records = [
        Record(),
        Record(key=None, value=b""),
        Record(key=b"", value=None),
        Record(key=b"", value=b""),
        Record(key=b"k", value=None),
        Record(key=None, value=b"v"),
    ]
    got = roundtrip(records)
    assert got == expect(records)
    assert got[1][1].key is None and got[1][1].value == b""
    assert got[2][1].key == b"" and got[2][1].value is None
    assert got[0][1] != got[3][1]


def test_empty_key_is_not_null_key():
    """A record with key b'' decodes with key b'', one with no key decodes with key None."""
    [(_, empty)] = roundtrip([Record(key=b"", value=b"x")])
    [(_, null)] = roundtrip([Record(key=None, value=b"x")])
    assert empty.key == b"" and empty.key is not None
    assert null.key is None
    assert empty != null


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20, (4 << 20) - 200])
def test_large_values_round_trip(size):
    """Values from 0 bytes up to about 4 MiB round trip byte for byte (varint length edges included)."""
    rng = random.Random(size)
    value = rng.randbytes(size)
    records = [Record(key=b"big", value=value, timestamp=5), Record(value=b"after")]
    got = roundtrip(records, base_offset=7)
    assert got == expect(records, 7)
    assert got[0][1].value == value


def test_many_headers_with_unicode_names_round_trip():
    """Hundreds of headers, unicode names (incl. empty and astral), keep their order and bytes."""
    names = ["", "a", "\u00e9t\u00e9", "\u65e5\u672c", "\U0001f600 emoji", "x" * 300, "dup", "dup"]
    headers = tuple((names[i % len(names)] + str(i // len(names)), bytes([i % 256]) * (i % 7)) for i in range(400))
    headers += (("dup", b"1"), ("dup", b"2"), ("", b""))
    records = [Record(key=b"k", value=b"v", headers=headers, timestamp=1), Record(headers=headers[:3])]
    got = roundtrip(records)
    assert got == expect(records)
    assert got[0][1].headers == headers
    assert len(got[0][1].headers) == 403


@pytest.mark.parametrize(
    "timestamps",
    [
        [0],
        [-1],
        [I64_MIN],
        [I64_MAX],
        [0, -1, 1, I64_MIN, I64_MAX],
        [1_700_000_000_000, 1_699_999_999_999, 5],
        [-5, -10, -1],
    ],
)
def test_timestamps_round_trip(timestamps):
    """Zero, negative and extreme 64-bit timestamps round trip; header first/max timestamps are right."""
    records = [Record(value=str(i).encode(), timestamp=ts) for i, ts in enumerate(timestamps)]
    assert roundtrip(records, base_offset=3) == expect(records, 3)


def test_timestamp_outside_int64_is_rejected():
    """A timestamp that does not fit in int64 is refused with InvalidArgument, not silently wrapped."""
    with pytest.raises(InvalidArgument):
        build_batch([Record(timestamp=I64_MAX + 1)])
    with pytest.raises(InvalidArgument):
        build_batch([Record(timestamp=I64_MIN - 1)])


def test_empty_batch_is_rejected():
    """A batch needs at least one record."""
    with pytest.raises(InvalidArgument):
        build_batch([])


def test_offsets_follow_base_offset():
    """iter_batch_records yields base_offset, base_offset+1, ... in record order."""
    records = [Record(value=i.to_bytes(2, "little")) for i in range(300)]
    got = roundtrip(records, base_offset=(1 << 40) + 11)
    assert [o for o, _ in got] == list(range((1 << 40) + 11, (1 << 40) + 311))


header_names = st.text(max_size=20)
records_strategy = st.builds(
    Record,
    key=st.none() | st.binary(max_size=64),
    value=st.none() | st.binary(max_size=2048),
    headers=st.lists(st.tuples(header_names, st.binary(max_size=32)), max_size=8).map(tuple),
    timestamp=st.integers(min_value=I64_MIN, max_value=I64_MAX),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(records_strategy, min_size=1, max_size=40), base=st.integers(0, (1 << 62)))
def test_round_trip_property(records, base):
    """Any list of records round trips through build_batch/validate_batch/iter_batch_records."""
    assert roundtrip(records, base_offset=base) == expect(records, base)


def sample_batch() -> bytes:
    rng = random.Random(1)
    records = [
        Record(key=rng.randbytes(5), value=rng.randbytes(40), headers=(("h", b"v"),), timestamp=1000 + i)
        for i in range(5)
    ]
    return build_batch(records, base_offset=42, producer_id=9, producer_epoch=3, base_sequence=17)


def test_every_flipped_byte_in_crc_region_is_rejected():
    """Flipping any single byte from the attributes field to the end makes validate_batch raise CorruptBatch."""
    batch = sample_batch()
    validate_batch(batch)
    for pos in range(batch_mod.ATTRIBUTES_OFFSET, len(batch)):
        for mask in (0x01, 0x80, 0xFF, 0x5A):
            damaged = bytearray(batch)
            damaged[pos] ^= mask
            with pytest.raises(CorruptBatch):
                validate_batch(bytes(damaged))


@settings(max_examples=200, deadline=None)
@given(records=st.lists(records_strategy, min_size=1, max_size=5), data=st.data())
def test_flipped_byte_property(records, data):
    """For any batch, any single-byte change in the CRC-covered region or the CRC itself is detected."""
    batch = build_batch(records)
    pos = data.draw(st.integers(batch_mod.CRC_OFFSET, len(batch) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = bytearray(batch)
    damaged[pos] ^= mask
    with pytest.raises(CorruptBatch):
        validate_batch(bytes(damaged))


def test_flipped_crc_field_is_rejected():
    """A damaged stored CRC is detected."""
    batch = sample_batch()
    for pos in range(batch_mod.CRC_OFFSET, batch_mod.CRC_OFFSET + 4):
        damaged = bytearray(batch)
        damaged[pos] ^= 0x10
        with pytest.raises(CorruptBatch):
            validate_batch(bytes(damaged))


@pytest.mark.parametrize("magic", [0, 2, 3, 0x7F, 0xFF])
def test_bad_magic_is_rejected(magic):
    """Any magic byte other than 1 is rejected."""
    damaged = bytearray(sample_batch())
    damaged[batch_mod.MAGIC_OFFSET] = magic
    with pytest.raises(CorruptBatch, match="magic"):
        validate_batch(bytes(damaged))


def test_bad_length_is_rejected():
    """A length field that is too small, too large, or disagrees with the buffer size is rejected."""
    batch = sample_batch()
    n = len(batch)
    for bad in (0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, n - 1, n + 1, n + 1000, 0xFFFFFFFF):
        damaged = bytearray(batch)
        struct.pack_into("<I", damaged, 8, bad)
        with pytest.raises(CorruptBatch):
            validate_batch(bytes(damaged))
    with pytest.raises(CorruptBatch):
        validate_batch(batch + b"\x00")  # trailing byte
    for cut in (0, 1, HEADER_SIZE - 1, HEADER_SIZE, n - 1):
        with pytest.raises(CorruptBatch):
            validate_batch(batch[:cut])


def test_zero_record_count_is_rejected():
    """A header claiming zero or negative records is rejected even with a recomputed CRC."""
    for count in (0, -1):
        damaged = bytearray(sample_batch())
        struct.pack_into("<i", damaged, 19, count)
        struct.pack_into("<I", damaged, 13, crc32c(bytes(damaged[17:])))
        with pytest.raises(CorruptBatch):
            validate_batch(bytes(damaged))


def test_base_offset_is_outside_the_crc():
    """Patching the base offset (as the log does at append) keeps the batch valid and moves the offsets."""
    batch = bytearray(sample_batch())
    struct.pack_into("<q", batch, 0, 123456789)
    header = validate_batch(bytes(batch))
    assert header.base_offset == 123456789
    assert [o for o, _ in iter_batch_records(bytes(batch))] == list(range(123456789, 123456794))


def test_crcmod_c_extension_is_active():
    """CRC32C runs in crcmod's C extension, not the 20 MB/s pure-Python fallback."""
    assert EXTENSION_ACTIVE is True
    assert importlib.import_module("crcmod.crcmod")._usingExtension is True
    assert crc32c(b"123456789") == 0xE3069283


def test_header_layout_is_pinned():
    """The 53-byte header keeps its field offsets and little-endian encodings (an on-disk format)."""
    assert HEADER_SIZE == 53
    assert batch_mod.HEADER.size == 53
    assert (batch_mod.BASE_OFFSET_OFFSET, batch_mod.LENGTH_OFFSET, batch_mod.MAGIC_OFFSET) == (0, 8, 12)
    assert (batch_mod.CRC_OFFSET, batch_mod.ATTRIBUTES_OFFSET, batch_mod.RECORD_COUNT_OFFSET) == (13, 17, 19)
    assert batch_mod.PRODUCER_ID_OFFSET == 39
    assert batch_mod.MAGIC == 1

    records = [Record(value=b"a", timestamp=-7), Record(value=b"b", timestamp=99), Record(timestamp=50)]
    batch = build_batch(
        records, base_offset=0x0102030405060708, attributes=0x0008, producer_id=-2, producer_epoch=513,
        base_sequence=70000,
    )
    # Decode with independent, hand-written formats at hand-written offsets.
    assert struct.unpack_from("<q", batch, 0)[0] == 0x0102030405060708
    assert batch[:8] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert struct.unpack_from("<I", batch, 8)[0] == len(batch)
    assert batch[12] == 1
    assert struct.unpack_from("<I", batch, 13)[0] == crc32c(batch[17:])
    assert struct.unpack_from("<H", batch, 17)[0] == 0x0008
    assert struct.unpack_from("<i", batch, 19)[0] == 3
    assert struct.unpack_from("<q", batch, 23)[0] == -7
    assert struct.unpack_from("<q", batch, 31)[0] == 99
    assert struct.unpack_from("<q", batch, 39)[0] == -2
    assert struct.unpack_from("<h", batch, 47)[0] == 513
    assert struct.unpack_from("<i", batch, 49)[0] == 70000
    assert batch[53] == 0x0A  # first record tag right after the header

    header = read_header(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-2, 513, 70000)
    assert header.attributes == 0x0008


def test_default_producer_fields_are_minus_one():
    """Without producer fields a batch says 'no producer': id -1, epoch -1, sequence -1, attributes 0."""
    header = validate_batch(build_batch([Record(value=b"x")]))
    assert (header.producer_id, header.producer_epoch, header.base_sequence, header.attributes) == (-1, -1, -1, 0)
