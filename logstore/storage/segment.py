"""One segment of a partition log: a ``.log`` file of batches plus its indexes.

Files, named by the segment's base offset zero-padded to 20 digits::

    00000000000000000000.log        batches back to back (layout in batch.py)
    00000000000000000000.index      sparse offset index (layout in index.py)
    00000000000000000000.timeindex  time index (layout in index.py)

Writes go through ``os.pwritev`` at the logical end; reads come from an
``mmap`` of the ``.log`` file.  ``benchmarks/storage_bench.py`` measures both
write paths: pwritev is as fast for batch-sized writes, and unlike stores into
a mapping it reports a full disk as an ``OSError`` instead of a ``SIGBUS``
that would kill the broker, and it leaves no zero-filled preallocation behind
to tell apart from a torn write after a crash.

Integrity: a batch is CRC-checked the first time any reader touches it after
the segment was opened (the recovery scan and our own appends count as
checks), so a batch damaged on disk is never served; checked byte ranges are
remembered, so replaying hot data costs no CRC work.  What this does not
guarantee: damage that happens to bytes after they were checked in this
process (for example a failing disk under a page the cache later evicts) is
only caught at the next open.

Locking: the owning ``PartitionLog`` serialises every mutation (append, seal,
recover, delete, close) under its lock; methods named ``*_locked`` assume it
is held.  Readers take no lock: the log publishes ``size`` and
``next_offset`` only after the bytes and index entries are in place, so a
reader never sees a half-written batch.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
import struct
import threading
from pathlib import Path

from logstore.errors import CorruptBatch
from logstore.storage.batch import HEADER, HEADER_SIZE, LENGTH_OFFSET, MAGIC, iter_batch_records, verify_crc
from logstore.storage.config import Durability, LogConfig
from logstore.storage.index import IndexCorrupt, OffsetIndex, TimeIndex
from logstore.storage.lifecycle import SegmentEvent, SegmentState, next_state
from logstore.clock import Clock

_LOGGER = logging.getLogger(__name__)

__all__ = ["Segment", "SegmentGone", "segment_name", "LOG_SUFFIX", "INDEX_SUFFIX", "TIMEINDEX_SUFFIX"]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
CORRUPT_INFIX = ".corrupt-"

_PREALLOCATE_CHUNK = 1 << 20
_ZEROS = bytes(1 << 20)
_BASE_OFFSET = struct.Struct("<q")
_LENGTH = struct.Struct("<I")
_MAX_RELATIVE = (1 << 32) - 1


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class SegmentGone(Exception):
    """Internal signal: the segment was deleted or closed under a reader."""


class _CheckedRanges:
    """Byte ranges of a ``.log`` file whose batches passed their CRC check.

    Ranges are always batch-aligned, so gaps between them are too.
    """

    __slots__ = ("_starts", "_ends", "_lock")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._lock = threading.Lock()

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        with self._lock:
            starts, ends = self._starts, self._ends
            i = bisect.bisect_left(ends, start)  # first range that ends at/after start
            j = bisect.bisect_right(starts, end)  # ranges before j start at/before end
            if i < j:
                start = min(start, starts[i])
                end = max(end, ends[j - 1])
            starts[i:j] = [start]
            ends[i:j] = [end]

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """Sub-ranges of [start, end) not yet checked."""
        out = []
        with self._lock:
            i = bisect.bisect_right(self._ends, start)
            pos = start
            while pos < end and i < len(self._starts):
                s, e = self._starts[i], self._ends[i]
                if s >= end:
                    break
                if s > pos:
                    out.append((pos, s))
                pos = max(pos, e)
                i += 1
            if pos < end:
                out.append((pos, end))
        return out

    def clear(self) -> None:
        with self._lock:
            self._starts.clear()
            self._ends.clear()


class Segment:
    """A ``.log`` file with its offset and time indexes.  Built by ``create`` or ``load``."""

    def __init__(self, directory: Path, base_offset: int, config: LogConfig, clock: Clock) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self._config = config
        self._clock = clock
        # Under ``always`` durability the active file is zero-filled ahead of
        # the writes: an fdatasync that only overwrites allocated blocks has
        # no metadata to journal (~80 us here, against ~185 us when every
        # write grows the file).  _allocated is the file's physical size.
        self._preallocate = config.durability is Durability.ALWAYS
        self._allocated = 0
        name = segment_name(base_offset)
        self.log_path = directory / (name + LOG_SUFFIX)
        self.index_path = directory / (name + INDEX_SUFFIX)
        self.timeindex_path = directory / (name + TIMEINDEX_SUFFIX)
        self.state = SegmentState.ACTIVE
        self._fd = -1
        self._index: OffsetIndex | None = None
        self._timeindex: TimeIndex | None = None
        self._mm: mmap.mmap | None = None
        self._map_lock = threading.Lock()
        self._checked = _CheckedRanges()
        self.size = 0
        """Bytes of whole batches in the ``.log`` file (published after each append)."""
        self.next_offset = base_offset
        """Offset after this segment's last record (published after each append)."""
        self.max_timestamp = -(1 << 63)
        """Largest record timestamp in the segment."""
        self.created_ms = clock()
        self._bytes_since_index = 0
        self._last_batch_base = -1  # base offset of the last whole batch, -1 if empty

    # -- construction ----------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, config: LogConfig, clock: Clock) -> "Segment":
        """A new, empty, active segment."""
        seg = cls(directory, base_offset, config, clock)
        seg._fd = os.open(seg.log_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        seg._allocated = 0
        seg._index = OffsetIndex(seg.index_path, config.index_max_bytes, load=False, writable=True)
        seg._timeindex = TimeIndex(seg.timeindex_path, config.index_max_bytes, load=False, writable=True)
        return seg

    @classmethod
    def load(cls, directory: Path, base_offset: int, config: LogConfig, clock: Clock, *, active: bool) -> "Segment":
        """Open existing files, trusting the indexes only after structural checks.

        The ``.log`` tail past the last index entry is walked to learn the
        segment's end; if that walk finds anything but whole batches the
        caller must run ``recover_locked``.  Raises ``IndexCorrupt`` for that.
        """
        seg = cls(directory, base_offset, config, clock)
        seg._fd = os.open(seg.log_path, os.O_RDWR)
        seg.size = seg._allocated = os.fstat(seg._fd).st_size
        if not active:
            seg.state = SegmentState.SEALED
        try:
            seg._open_indexes(load=True, writable=active)
            assert seg._index is not None and seg._timeindex is not None
            seg._index.check(seg.size, _MAX_RELATIVE + 1)
            rel, pos = seg._index.lookup(_MAX_RELATIVE)
            seg._walk_tail(base_offset + rel, pos)
            seg._timeindex.check(seg.next_offset - base_offset)
            last_entry = seg._timeindex.last_entry()
            last_ts = None if last_entry is None else last_entry[0]
            if seg.size and (last_entry is None or last_entry[1] != seg._last_batch_base - base_offset):
                # Sealing (and a clean close) always ends the time index with an
                # entry for the last batch; anything else means it lost entries.
                raise IndexCorrupt(f"{seg.timeindex_path.name} does not end at the segment's last batch")
            if last_ts is not None:
                seg.max_timestamp = max(seg.max_timestamp, last_ts)
        except IndexCorrupt:
            seg.close_files()
            raise
        return seg

    def _open_indexes(self, *, load: bool, writable: bool) -> None:
        for idx in (self._index, self._timeindex):
            if idx is not None:
                idx.close()
        self._index = self._timeindex = None
        max_bytes = self._config.index_max_bytes
        self._index = OffsetIndex(self.index_path, max_bytes, load=load, writable=writable)
        self._timeindex = TimeIndex(self.timeindex_path, max_bytes, load=load, writable=writable)

    def _walk_tail(self, offset: int, pos: int) -> None:
        """Walk whole batches from ``pos`` (a trusted batch start) to the end."""
        mm = self._map_whole() if self.size else None
        expected = offset
        max_ts = self.max_timestamp
        while pos < self.size:
            assert mm is not None
            header = self._header_at(mm, pos, self.size, expected)
            if header is None:
                raise IndexCorrupt(f"{self.log_path.name}: no whole batch at byte {pos}")
            base, length, count, batch_max_ts = header
            expected = base + count
            max_ts = max(max_ts, batch_max_ts)
            pos += length
            self._last_batch_base = base
        self.next_offset = expected
        self.max_timestamp = max_ts
        last_indexed = self._index.lookup(_MAX_RELATIVE)[1] if self._index else 0
        self._bytes_since_index = self.size - last_indexed

    @staticmethod
    def _header_at(mm: mmap.mmap, pos: int, size: int, expected: int | None) -> tuple[int, int, int, int] | None:
        """``(base, length, count, max_ts)`` of a plausible batch at ``pos``, else None."""
        if size - pos < HEADER_SIZE:
            return None
        (base, length, magic, _crc, _attrs, count, _first_ts, max_ts, _pid, _epoch, _seq) = HEADER.unpack_from(mm, pos)
        if magic != MAGIC or length < HEADER_SIZE + 2 or length > size - pos or count < 1:
            return None
        if expected is not None and base != expected:
            return None
        return base, length, count, max_ts

    # -- recovery ----------------------------------------------------------------

    def recover_locked(self, *, active: bool) -> int:
        """Rebuild both indexes from a full scan; cut at the first bad batch.

        A batch is bad if its header is short, its length runs past the end
        of the file, its magic is wrong, its CRC does not match, or its base
        offset does not continue the previous batch.  The cut-off bytes are
        copied to ``<name>.log.corrupt-<ms>`` first.  Returns the number of
        bytes removed from the end of the file.
        """
        if self._fd < 0:
            self._fd = os.open(self.log_path, os.O_RDWR)
        file_size = self._allocated = os.fstat(self._fd).st_size
        self._checked.clear()
        mm, pos = self._scan_locked(file_size, check_crc=True)
        self._checked.add(0, pos)
        truncated = file_size - pos
        if truncated:
            self._cut_tail_locked(mm, pos, file_size)
        if not active:
            self._seal_indexes_locked()
        return truncated

    def rebuild_indexes_locked(self) -> None:
        """Rebuild the indexes of a segment whose ``.log`` is trusted (no truncation)."""
        writable = self.state is SegmentState.ACTIVE
        size, next_offset, max_ts = self.size, self.next_offset, self.max_timestamp
        _mm, end = self._scan_locked(size, check_crc=False)
        if end < size:
            # A damaged header stops the scan: index the sound prefix only and
            # keep the segment's extent, so reads past it report the damage.
            _LOGGER.error("%s: damaged batch header at byte %d", self.log_path.name, end)
            self.size, self.next_offset = size, next_offset
            self.max_timestamp = max(self.max_timestamp, max_ts)
        if not writable:
            self._seal_indexes_locked()
        self.indexes_rebuilt = True
        _LOGGER.warning("%s: indexes rebuilt from the log", self.log_path.name)

    indexes_rebuilt = False
    """Set once ``rebuild_indexes_locked`` ran; a second mismatch means damaged data."""

    def _scan_locked(self, file_size: int, *, check_crc: bool) -> tuple[mmap.mmap | None, int]:
        """Re-index whole batches from the start; return the mapping and where they end."""
        self._open_indexes(load=False, writable=True)
        self.size = file_size
        self.next_offset = self.base_offset
        self.max_timestamp = -(1 << 63)
        self._bytes_since_index = 0
        mm = self._map_whole() if file_size else None
        pos = 0
        expected = self.base_offset
        while pos < file_size:
            assert mm is not None
            header = self._header_at(mm, pos, file_size, expected)
            if header is None or (check_crc and not verify_crc(mm, pos, header[1])):
                break
            base, length, count, max_ts = header
            self._index_batch_locked(pos, base, max_ts, length)
            self._last_batch_base = base
            expected = base + count
            pos += length
        self.size = pos
        self.next_offset = expected
        return mm, pos

    def _cut_tail_locked(self, mm: mmap.mmap | None, pos: int, file_size: int) -> None:
        assert mm is not None
        tail = mm[pos:file_size]
        if self._preallocate and tail.count(0) == len(tail):
            # Only zeros, in a log that preallocates (``always`` durability):
            # the unused preallocated space, nothing worth keeping.
            _LOGGER.info("%s: dropped %d zero bytes after the last batch", self.log_path, len(tail))
        else:
            side = self.log_path.with_name(f"{self.log_path.name}{CORRUPT_INFIX}{self._clock()}")
            with open(side, "wb") as f:
                f.write(tail)
                f.flush()
                os.fsync(f.fileno())
            self.side_file = side
            _LOGGER.warning(
                "%s: truncated %d bytes after the last valid batch (offset %d); kept them in %s",
                self.log_path, file_size - pos, self.next_offset, side.name,
            )
        self._drop_mapping()
        os.ftruncate(self._fd, pos)
        os.fsync(self._fd)
        self._allocated = pos

    side_file: Path | None = None

    # -- appends -------------------------------------------------------------------

    def can_take(self, length: int, last_offset: int, now_ms: int) -> bool:
        """Whether a batch fits in this segment, or the log must roll first."""
        if self.size == 0:
            return last_offset - self.base_offset <= _MAX_RELATIVE
        assert self._index is not None and self._timeindex is not None
        return not (
            self.size + length > self._config.segment_bytes
            or now_ms - self.created_ms >= self._config.segment_ms
            or self._index.is_full
            or self._timeindex.is_full
            or last_offset - self.base_offset > _MAX_RELATIVE
        )

    def append_locked(self, batch: memoryview, base_offset: int, record_count: int, max_timestamp: int) -> None:
        """Write one batch at the end, giving it ``base_offset``; index it; publish."""
        if self.state is not SegmentState.ACTIVE:
            raise SegmentGone(f"segment {self.base_offset} is {self.state.value}")
        pos = self.size
        length = len(batch)
        if pos == 0:
            self.created_ms = self._clock()
        if self._preallocate and pos + length > self._allocated:
            self._preallocate_locked(pos + length)
        prefix = _BASE_OFFSET.pack(base_offset)
        written = os.pwritev(self._fd, [prefix, batch[8:]], pos)
        if written < length:  # a short write is rare but must not leave a gap
            rest = (prefix + bytes(batch[8:]))[written:]
            while rest:
                n = os.pwrite(self._fd, rest, pos + written)
                written += n
                rest = rest[n:]
        self._index_batch_locked(pos, base_offset, max_timestamp, length)
        self._last_batch_base = base_offset
        self._checked.add(pos, pos + length)
        self.size = pos + length  # publish: readers may now see the batch
        self.next_offset = base_offset + record_count

    def _index_batch_locked(self, pos: int, base_offset: int, max_timestamp: int, length: int) -> None:
        assert self._index is not None and self._timeindex is not None
        new_max = max_timestamp > self.max_timestamp
        if new_max:
            self.max_timestamp = max_timestamp
        if pos > 0 and self._bytes_since_index >= self._config.index_interval_bytes:
            rel = base_offset - self.base_offset
            if not self._index.is_full:
                self._index.append(rel, pos)
            last_ts = self._timeindex.last_timestamp
            if (last_ts is None or self.max_timestamp > last_ts) and not self._timeindex.is_full:
                self._timeindex.append(self.max_timestamp, rel)
            self._bytes_since_index = 0
        self._bytes_since_index += length

    def sync(self) -> None:
        """fdatasync the ``.log`` file."""
        fd = self._fd
        if fd < 0:
            raise SegmentGone(f"segment {self.base_offset} is closed")
        os.fdatasync(fd)

    # -- lifecycle -------------------------------------------------------------------

    def _preallocate_locked(self, needed: int) -> None:
        """Zero-fill the file up to at least ``needed`` bytes, a chunk at a time."""
        target = max(needed, min(self._allocated + _PREALLOCATE_CHUNK, self._config.segment_bytes))
        pos = self._allocated
        while pos < target:
            n = min(len(_ZEROS), target - pos)
            pos += os.pwrite(self._fd, _ZEROS[:n] if n < len(_ZEROS) else _ZEROS, pos)
        self._allocated = pos

    def _trim_file_locked(self) -> None:
        """Cut the file to its whole batches (drops preallocated space)."""
        if self._allocated != self.size or os.fstat(self._fd).st_size != self.size:
            self._drop_mapping()
            os.ftruncate(self._fd, self.size)
            self._allocated = self.size

    def seal_locked(self) -> None:
        """Make the segment read-only for good: final time entry, trim, flush."""
        self.state = next_state(self.state, SegmentEvent.SEAL)
        self._trim_file_locked()
        self._seal_indexes_locked()
        self._drop_mapping()

    def _seal_indexes_locked(self) -> None:
        """End the time index with (max timestamp, last batch), then trim both."""
        assert self._index is not None and self._timeindex is not None
        if self.size:
            final = (self.max_timestamp, self._last_batch_base - self.base_offset)
            if self._timeindex.last_entry() != final:
                self._timeindex.append(*final)  # TimeIndex keeps a slot free for this
        self._index.trim()
        self._timeindex.trim()

    def close_files(self) -> None:
        """Release file descriptors and mappings (no state change)."""
        for idx in (self._index, self._timeindex):
            if idx is not None:
                idx.close()
        self._index = self._timeindex = None
        self._drop_mapping()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close_locked(self) -> None:
        """Trim indexes to their entries and the log to its whole batches; close."""
        was_active = self.state is SegmentState.ACTIVE
        self.state = next_state(self.state, SegmentEvent.CLOSE)
        if was_active and self._index is not None and self._timeindex is not None and self._fd >= 0:
            self._trim_file_locked()
            self._seal_indexes_locked()
        self.close_files()

    def delete_phase1_locked(self) -> list[Path]:
        """Rename every file to ``*.deleted``; return the new paths."""
        self.state = next_state(self.state, SegmentEvent.DELETE)
        self.close_files()
        renamed = []
        for path in (self.log_path, self.index_path, self.timeindex_path):
            target = path.with_name(path.name + DELETED_SUFFIX)
            try:
                os.replace(path, target)
                renamed.append(target)
            except FileNotFoundError:
                pass
        return renamed

    def delete_phase2(self, renamed: list[Path]) -> None:
        self.state = next_state(self.state, SegmentEvent.UNLINK)
        for path in renamed:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    # -- reads ----------------------------------------------------------------------------

    def _map_whole(self) -> mmap.mmap:
        """A mapping covering at least ``size`` bytes."""
        mm = self._mm
        if mm is not None and len(mm) >= self.size:
            return mm
        with self._map_lock:
            mm = self._mm
            if mm is not None and len(mm) >= self.size:
                return mm
            fd = self._fd
            if fd < 0:
                raise SegmentGone(f"segment {self.base_offset} is closed")
            length = os.fstat(fd).st_size
            mm = mmap.mmap(fd, length, prot=mmap.PROT_READ)
            self._mm = mm  # the old mapping is freed once no reader holds it
            return mm

    def _drop_mapping(self) -> None:
        """Forget the mapping.  It is not closed: a concurrent reader may still
        be copying from it; it is unmapped when the last reference goes away."""
        with self._map_lock:
            self._mm = None

    def position_of(self, offset: int) -> int:
        """Byte position of the batch holding ``offset`` (or of the end)."""
        size = self.size
        if offset >= self.next_offset:
            return size
        index = self._index
        if index is None:
            raise SegmentGone(f"segment {self.base_offset} is closed")
        rel, pos = index.lookup(offset - self.base_offset)
        mm = self._map_whole()
        header = self._header_at(mm, pos, size, self.base_offset + rel)
        if header is None:
            raise IndexCorrupt(
                f"{self.index_path.name} points at byte {pos}, where no batch with offset "
                f"{self.base_offset + rel} starts"
            )
        while True:
            base, length, count, _ = header
            if offset < base + count:
                return pos
            pos += length
            header = self._header_at(mm, pos, size, base + count)
            if header is None:
                raise CorruptBatch(f"{self.log_path.name}: no whole batch at byte {pos}")

    def read(self, offset: int, max_bytes: int) -> list[bytes]:
        """Whole batches starting with the one that holds ``offset``."""
        size = self.size
        pos = self.position_of(offset)
        if pos >= size:
            return []
        mm = self._map_whole()
        spans = []
        total = 0
        start = pos
        expected = None  # the first batch was placed by position_of; later ones must continue it
        while pos < size:
            if spans and total + _LENGTH.unpack_from(mm, pos + LENGTH_OFFSET)[0] > max_bytes:
                break
            header = self._header_at(mm, pos, size, expected)
            if header is None:
                if spans:
                    break  # serve the sound batches before it; the next read reports it
                raise CorruptBatch(
                    f"{self.log_path.name}: the batch at byte {pos} has a damaged header; "
                    "it will not be served"
                )
            base, length, count, _ = header
            spans.append((pos, length))
            total += length
            pos += length
            expected = base + count
        for gap_start, gap_end in self._checked.gaps(start, pos):
            bad = self._verify_span(mm, gap_start, gap_end)
            if bad is not None:
                spans = [(p, n) for p, n in spans if p < bad]
                if not spans:
                    raise CorruptBatch(
                        f"{self.log_path.name}: the batch at byte {bad} fails its CRC32C check; "
                        "it will not be served"
                    )
                break
        return [mm[p : p + n] for p, n in spans]

    def _verify_span(self, mm: mmap.mmap, start: int, end: int) -> int | None:
        """CRC-check the batches in [start, end); return the position of the first bad one."""
        pos = start
        while pos < end:
            header = self._header_at(mm, pos, end, None)
            if header is None or not verify_crc(mm, pos, header[1]):
                self._checked.add(start, pos)
                return pos
            pos += header[1]
        self._checked.add(start, end)
        return None

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """First offset in this segment whose record timestamp is >= ``timestamp``."""
        if self.max_timestamp < timestamp or self.size == 0:
            return None
        timeindex = self._timeindex
        if timeindex is None:
            raise SegmentGone(f"segment {self.base_offset} is closed")
        rel = timeindex.lookup_before(timestamp)
        offset = self.base_offset + (rel or 0)
        while offset < self.next_offset:
            batches = self.read(offset, 1 << 20)
            if not batches:
                break
            for batch in batches:
                hdr = HEADER.unpack_from(batch, 0)
                if hdr[7] >= timestamp:  # max_timestamp
                    for off, record in iter_batch_records(batch):
                        if record.timestamp >= timestamp:
                            return off
                offset = hdr[0] + hdr[5]
        return None
