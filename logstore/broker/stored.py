"""Reading single records out of a partition's stored batches, and framing copies of them.

The group coordinator and the dead-letter tools work on individual records
where the log stores batches: redeliveries, retry copies, dead letters.
These helpers cut the framed records (tag, length, ``Record`` message, as in
``logstore.storage.records``) out of the stored batches, walking each
batch's framing once, and build new record sections from such copies.

What they do not do: they decode no record beyond its framing (and, in
``encoded``, its timestamp), and they skip silently what retention removed.
"""

from __future__ import annotations

import bisect
from typing import Iterator

from logstore.broker.topic import Partition
from logstore.storage.log import PartitionLog
from logstore.storage.batch import ATTR_TIMESTAMP_LOG_APPEND, HEADER, HEADER_SIZE
from logstore.storage.records import EncodedRecords, decode_records, record_spans

__all__ = ["iter_batches", "iter_framed", "read_framed", "encoded"]

_READ_BYTES = 4 << 20


def iter_batches(log: PartitionLog, start: int, end: int | None = None) -> Iterator[bytes]:
    """The stored batches holding offsets from ``start`` (or the log start) up to ``end``
    (default: the log end when called), in order; the first may begin before ``start``
    and the last may run past ``end``."""
    stop = log.log_end_offset if end is None else end
    offset = max(start, log.log_start_offset)
    while offset < stop:
        batches = log.read(offset, _READ_BYTES)
        if not batches:
            return
        for batch in batches:
            base, _length, _m, _c, _a, count = HEADER.unpack_from(batch, 0)[:6]
            if base + count <= offset:
                continue
            if base >= stop:
                return
            yield batch
            offset = base + count


def iter_framed(partition: Partition, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, framed record) from ``start`` (or the log start) to ``end`` (default: the
    log end when called)."""
    log = partition.log
    stop = log.log_end_offset if end is None else end
    first = max(start, log.log_start_offset)
    for batch in iter_batches(log, first, stop):
        base, length, _m, _c, _a, count = HEADER.unpack_from(batch, 0)[:6]
        spans = record_spans(batch, HEADER_SIZE, length)
        for i in range(max(0, first - base), count):
            if base + i >= stop:
                return
            yield base + i, bytes(batch[spans[i] : spans[i + 1]])


def read_framed(partition: Partition, offsets: list[int]) -> dict[int, tuple[bytes, int]]:
    """The framed record at each of ``offsets`` still in the log, with its batch's append
    time (0 unless the batch used log-append time).  Each stored batch holding some of
    them is read and walked once, however scattered the offsets are."""
    found: dict[int, tuple[bytes, int]] = {}
    log = partition.log
    wanted = sorted(set(offsets))
    i = bisect.bisect_left(wanted, log.log_start_offset)
    while i < len(wanted):
        batches = log.read(wanted[i], 1)  # the batch holding wanted[i] (and maybe more)
        if not batches:
            break
        for batch in batches:
            base, length, _m, _c, attrs, count, _first, max_ts = HEADER.unpack_from(batch, 0)[:8]
            if i >= len(wanted) or wanted[i] >= base + count:
                continue
            append_time = max_ts if attrs & ATTR_TIMESTAMP_LOG_APPEND else 0
            spans = record_spans(batch, HEADER_SIZE, length)
            while i < len(wanted) and wanted[i] < base + count:
                k = wanted[i] - base
                if k >= 0:
                    found[wanted[i]] = (bytes(batch[spans[k] : spans[k + 1]]), append_time)
                i += 1
    return found


def encoded(records: list[bytes]) -> EncodedRecords:
    """A record section (for ``Broker.append``) of framed records, with their timestamps."""
    stamps = [next(decode_records(r))[1].timestamp for r in records]
    return EncodedRecords(b"".join(records), len(records), stamps[0], max(stamps))
