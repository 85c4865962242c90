"""The record batch: the unit that is appended, stored, checksummed and served.

Byte layout (little-endian), one fixed 53-byte header then the records::

    offset  size  field            meaning
    ------  ----  ---------------  ---------------------------------------------
         0     8  base_offset      int64: offset of the first record.  Written by
                                   the log at append time; NOT covered by the CRC,
                                   so assigning offsets never recomputes it.
         8     4  length           uint32: size of the whole batch in bytes,
                                   this header included.
        12     1  magic            uint8: format version, always 1.
        13     4  crc              uint32: CRC32C (Castagnoli) of every byte from
                                   ``attributes`` (offset 17) to ``length``.
        17     2  attributes       uint16 flags: bits 0-2 compression (0 = none,
                                   the only value written today), bit 3 timestamp
                                   type (0 = producer's create time, 1 = log
                                   append time); other bits are zero.
        19     4  record_count     int32: number of records, at least 1.  Records
                                   take offsets base_offset .. base_offset+count-1.
        23     8  first_timestamp  int64: timestamp (ms) of the first record.
        31     8  max_timestamp    int64: largest record timestamp (ms).
        39     8  producer_id      int64: idempotent producer id, -1 if none.
        47     2  producer_epoch   int16: producer epoch, -1 if none.
        49     4  base_sequence    int32: sequence of the first record, -1 if none.
        53     -  records          ``record_count`` records, protobuf wire format
                                   (see ``records.py``), ``length - 53`` bytes.

A segment's ``.log`` file is nothing but such batches back to back.

What the CRC does not cover: the base offset, the length and the magic
byte.  A damaged length or magic is caught because the CRC is then computed
over the wrong bytes (or the header fails its range checks); a damaged base
offset is caught by the log, which requires offsets to be contiguous.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

from logstore.errors import CorruptBatch, InvalidArgument
from logstore.storage.crc import crc32c
from logstore.storage.records import EncodedRecords, Record, decode_records, encode_records

__all__ = [
    "ATTR_TIMESTAMP_LOG_APPEND",
    "ATTR_DELIVERY_TIME",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "BatchHeader",
    "build_batch",
    "build_batch_from_encoded",
    "read_header",
    "check_header",
    "verify_crc",
    "validate_batch",
    "iter_batch_records",
    "batch_base_offset",
]

MAGIC = 1

ATTR_TIMESTAMP_LOG_APPEND = 0x08
"""Attribute bit 3: timestamps were set by the log at append time."""
ATTR_DELIVERY_TIME = 0x10
"""Attribute bit 4: at least one record carries a delivery time (fields 16/17 of
``Record``); batches without it can be served to groups without looking inside."""

HEADER = struct.Struct(
    "<"
    "q"  # base_offset      int64, patched at append, outside the CRC
    "I"  # length           uint32, whole batch including this header
    "B"  # magic            uint8, format version
    "I"  # crc              uint32, CRC32C of [ATTRIBUTES_OFFSET, length)
    "H"  # attributes       uint16 flags
    "i"  # record_count     int32
    "q"  # first_timestamp  int64 ms
    "q"  # max_timestamp    int64 ms
    "q"  # producer_id      int64, -1 = none
    "h"  # producer_epoch   int16, -1 = none
    "i"  # base_sequence    int32, -1 = none
)
HEADER_SIZE = HEADER.size

# Field offsets, derived from the format so they can never drift from it.
BASE_OFFSET_OFFSET = 0
LENGTH_OFFSET = struct.calcsize("<q")
MAGIC_OFFSET = struct.calcsize("<qI")
CRC_OFFSET = struct.calcsize("<qIB")
ATTRIBUTES_OFFSET = struct.calcsize("<qIBI")
RECORD_COUNT_OFFSET = struct.calcsize("<qIBIH")
PRODUCER_ID_OFFSET = struct.calcsize("<qIBIHiqq")

assert HEADER_SIZE == 53, HEADER_SIZE
assert (LENGTH_OFFSET, MAGIC_OFFSET, CRC_OFFSET, ATTRIBUTES_OFFSET) == (8, 12, 13, 17)
assert (RECORD_COUNT_OFFSET, PRODUCER_ID_OFFSET) == (19, 39)

_BASE_OFFSET = struct.Struct("<q")
_CRC = struct.Struct("<I")
_PREFIX = struct.Struct("<qIBI")  # base_offset, length, magic, crc: the part outside the CRC
assert _PREFIX.size == ATTRIBUTES_OFFSET

MAX_BATCH_LENGTH = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The decoded fixed header of one batch."""

    base_offset: int
    length: int
    magic: int
    crc: int
    attributes: int
    record_count: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def next_offset(self) -> int:
        """The offset right after this batch's last record."""
        return self.base_offset + self.record_count

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1


def build_batch_from_encoded(
    encoded: EncodedRecords,
    *,
    base_offset: int = 0,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """Frame already-encoded records as one batch and checksum it."""
    data = encoded.data
    length = HEADER_SIZE + len(data)
    if length > MAX_BATCH_LENGTH:
        raise InvalidArgument(f"a batch of {length} bytes exceeds the format's 2 GiB limit")
    fields = (
        attributes | encoded.attributes,
        encoded.count,
        encoded.first_timestamp,
        encoded.max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
    )
    header = HEADER.pack(base_offset, length, MAGIC, 0, *fields)
    crc = crc32c(data, crc32c(header[ATTRIBUTES_OFFSET:]))
    return HEADER.pack(base_offset, length, MAGIC, crc, *fields) + data


def build_batch(records: Iterable[Record], **header_fields: int) -> bytes:
    """Encode ``records`` and frame them as one batch (see ``build_batch_from_encoded``)."""
    return build_batch_from_encoded(encode_records(records), **header_fields)


def read_header(buf: bytes | memoryview | bytearray, pos: int = 0) -> BatchHeader:
    """Decode the header at ``buf[pos:]`` without validating it."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptBatch(f"a batch header needs {HEADER_SIZE} bytes, only {len(buf) - pos} remain")
    return BatchHeader(*HEADER.unpack_from(buf, pos))


def check_header(header: BatchHeader, available: int) -> None:
    """Range-check a header; ``available`` is how many bytes the batch may span."""
    if header.magic != MAGIC:
        raise CorruptBatch(f"bad magic byte {header.magic} (expected {MAGIC})")
    if header.length < HEADER_SIZE + 2 or header.length > available:
        raise CorruptBatch(
            f"batch length {header.length} is impossible here ({available} bytes available)"
        )
    if header.record_count < 1:
        raise CorruptBatch(f"batch record count {header.record_count} is not positive")
    if header.base_offset < 0:
        raise CorruptBatch(f"negative base offset {header.base_offset}")


def verify_crc(buf: bytes | memoryview | bytearray, pos: int, length: int) -> bool:
    """True when the batch at ``buf[pos:pos+length]`` matches its stored CRC."""
    stored = _CRC.unpack_from(buf, pos + CRC_OFFSET)[0]
    view = memoryview(buf)[pos + ATTRIBUTES_OFFSET : pos + length]
    try:
        return crc32c(view) == stored
    finally:
        view.release()


def validate_batch(batch: bytes | memoryview | bytearray) -> BatchHeader:
    """Fully check one untrusted batch: header ranges, exact length, CRC.

    Raises ``CorruptBatch`` with the reason; returns the header when sound.
    """
    header = read_header(batch)
    check_header(header, len(batch))
    if header.length != len(batch):
        raise CorruptBatch(f"batch says it is {header.length} bytes long but {len(batch)} were given")
    if not verify_crc(batch, 0, header.length):
        raise CorruptBatch("batch CRC32C mismatch")
    return header


def batch_base_offset(batch: bytes | memoryview | bytearray) -> int:
    """The base offset of a stored batch."""
    return _BASE_OFFSET.unpack_from(batch, 0)[0]


def iter_batch_records(batch: bytes | memoryview) -> Iterable[tuple[int, Record]]:
    """Yield ``(offset, Record)`` for every record of one (trusted) batch."""
    base = batch_base_offset(batch)
    length = HEADER.unpack_from(batch, 0)[1]
    for delta, record in decode_records(batch, HEADER_SIZE, length):
        yield base + delta, record
