"""The partition log: an ordered run of segments with one writer and many readers.

Directory layout (one directory per partition)::

    00000000000000000000.log / .index / .timeindex   the oldest segment
    00000000000000052210.log / .index / .timeindex   ...the active (last) segment
    recovery-point      checkpoint: every offset below it was fsynced
    log-start-offset    checkpoint: the first offset still readable
    .clean-shutdown     marker written by close(): "end_offset active_base active_size"

Offsets are contiguous and never reused: a segment's base offset is the end
offset of the one before it, and retention only ever removes whole segments
from the front.

Recovery (``open``): leftovers of an interrupted deletion (``*.deleted``) are
removed.  With a clean-shutdown marker whose recorded end matches the files,
indexes are trusted after structural checks (and rebuilt if they fail them).
Otherwise every segment holding offsets at or past the recovery point is
scanned batch by batch, CRC included, its indexes are rebuilt, and the log is
cut at the first torn or corrupt batch: the cut-off bytes are kept in a side
file and any later segment is deleted.  ``last_recovery`` reports what was
done, including how many bytes were truncated.

What the log does not guarantee: an append acknowledged under the ``os`` or
``interval`` policies can be lost (never corrupted) by a power failure before
its fsync; only ``always`` (or an explicit ``flush``) makes that promise.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from logstore.clock import Clock, wall_clock_ms
from logstore.errors import (
    CorruptBatch,
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    OffsetOutOfRange,
    RecordTooLarge,
)
from logstore.storage.batch import HEADER, HEADER_SIZE, MAGIC, build_batch, iter_batch_records
from logstore.storage.checkpoint import fsync_dir, read_checkpoint, write_checkpoint
from logstore.storage.config import Durability, LogConfig
from logstore.storage.groupcommit import GroupCommit
from logstore.storage.index import IndexCorrupt
from logstore.storage.records import Record
from logstore.storage.segment import DELETED_SUFFIX, LOG_SUFFIX, Segment, SegmentGone

_LOGGER = logging.getLogger(__name__)

__all__ = ["PartitionLog", "RecoveryReport"]

CLEAN_SHUTDOWN = ".clean-shutdown"
RECOVERY_POINT = "recovery-point"
LOG_START_OFFSET = "log-start-offset"

_SEGMENT_LOG = re.compile(r"^(\d{20})\.log$")


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``open`` had to do to make the log consistent."""

    clean: bool
    """True when a valid clean-shutdown marker let the indexes be trusted."""
    truncated_bytes: int
    """Bytes cut from the end of segment files (torn or corrupt tails)."""
    segments_scanned: int
    """Segments fully re-read and re-indexed."""
    segments_deleted: int
    """Segments deleted because they came after a cut."""
    side_files: tuple[str, ...] = ()
    """Names of the files that keep the cut-off bytes for forensics."""


class PartitionLog:
    """A segmented, memory-mapped, CRC-checked append-only log.  Build with ``open``."""

    def __init__(self, directory: Path, config: LogConfig, clock: Clock) -> None:
        self.directory = directory
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._segments: tuple[Segment, ...] = ()
        # Readers take (segments, bases) in one read of this attribute, so the
        # two can never come from different versions of the segment list.
        self._view: tuple[tuple[Segment, ...], tuple[int, ...]] = ((), ())
        self._start_offset = 0
        self._end_offset = 0
        self._closed = False
        self._sync_count = 0
        self._unflushed_messages = 0
        self._last_flush_ms = clock()
        self._group = GroupCommit(self._sync_active)
        self.last_recovery = RecoveryReport(True, 0, 0, 0)

    # -- opening and recovery --------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        config: LogConfig | None = None,
        clock: Clock | None = None,
    ) -> "PartitionLog":
        """Open (creating if needed) the log in ``directory`` and recover it."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        log = cls(path, config or LogConfig(), clock or wall_clock_ms)
        with log._lock:
            log._load_locked()
        return log

    def _load_locked(self) -> None:
        d = self.directory
        for leftover in list(d.glob("*" + DELETED_SUFFIX)) + list(d.glob("*.tmp")):
            leftover.unlink(missing_ok=True)
        bases = sorted(int(m.group(1)) for p in d.iterdir() if (m := _SEGMENT_LOG.match(p.name)))
        marker = read_checkpoint(d / CLEAN_SHUTDOWN)
        recovery_point = _parse_int(read_checkpoint(d / RECOVERY_POINT), 0)
        start_checkpoint = _parse_int(read_checkpoint(d / LOG_START_OFFSET), 0)

        if not bases:
            seg = Segment.create(d, start_checkpoint, self.config, self._clock)
            fsync_dir(d)
            self._set_segments_locked([seg])
            self._start_offset = self._end_offset = start_checkpoint
            self._group.mark_durable(self._end_offset)
            self.last_recovery = RecoveryReport(True, 0, 0, 0)
            (d / CLEAN_SHUTDOWN).unlink(missing_ok=True)
            return

        clean = self._marker_matches(marker, bases)
        segments: list[Segment] = []
        truncated = scanned = deleted = 0
        side_files: list[str] = []
        for i, base in enumerate(bases):
            is_last = i == len(bases) - 1
            next_base = None if is_last else bases[i + 1]
            if segments and segments[-1].next_offset != base:
                _LOGGER.error(
                    "%s: segment %d does not continue the log (expected base %d); "
                    "deleting it and every later segment",
                    d, base, segments[-1].next_offset,
                )
                deleted += self._delete_files_from(bases[i:])
                break
            must_scan = not clean and (next_base is None or next_base > recovery_point)
            seg = None
            if not must_scan:
                try:
                    seg = Segment.load(d, base, self.config, self._clock, active=is_last)
                except IndexCorrupt as exc:
                    _LOGGER.warning("%s: %s; rebuilding from the log", d, exc)
            if seg is None:
                seg = Segment(d, base, self.config, self._clock)
                cut = seg.recover_locked(active=True)
                scanned += 1
                truncated += cut
                if seg.side_file is not None:
                    side_files.append(seg.side_file.name)
                if cut and not is_last:
                    deleted += self._delete_files_from(bases[i + 1 :])
                    is_last = True
                if not is_last:
                    seg.seal_locked()
            segments.append(seg)
            if is_last:
                break

        self._set_segments_locked(segments)
        active = segments[-1]
        if scanned:
            active.sync()  # what recovery kept is now on disk, whatever the page cache held
            self._count_sync()
        self._end_offset = active.next_offset
        self._start_offset = min(max(start_checkpoint, segments[0].base_offset), self._end_offset)
        self._group.mark_durable(self._end_offset)
        self.last_recovery = RecoveryReport(clean, truncated, scanned, deleted, tuple(side_files))
        (d / CLEAN_SHUTDOWN).unlink(missing_ok=True)
        fsync_dir(d)
        if not clean:
            write_checkpoint(d / RECOVERY_POINT, str(self._end_offset))
            _LOGGER.info(
                "%s: recovered after an unclean shutdown: end offset %d, %d segments scanned, "
                "%d bytes truncated, %d segments deleted",
                d, self._end_offset, scanned, truncated, deleted,
            )

    def _marker_matches(self, marker: str | None, bases: list[int]) -> bool:
        """A clean-shutdown marker is only trusted if it describes the files as they are."""
        if marker is None:
            return False
        try:
            _end, active_base, active_size = (int(x) for x in marker.split())
        except ValueError:
            return False
        if active_base != bases[-1]:
            return False
        try:
            return (self.directory / f"{active_base:020d}{LOG_SUFFIX}").stat().st_size == active_size
        except FileNotFoundError:
            return False

    def _delete_files_from(self, bases: Iterable[int]) -> int:
        count = 0
        for base in bases:
            for suffix in (".log", ".index", ".timeindex"):
                (self.directory / f"{base:020d}{suffix}").unlink(missing_ok=True)
            count += 1
        return count

    def _set_segments_locked(self, segments: list[Segment]) -> None:
        # Copy-on-write: readers keep whatever tuple they picked up.
        self._segments = tuple(segments)
        self._view = (self._segments, tuple(s.base_offset for s in segments))

    # -- properties ------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        """The first offset that can still be read."""
        return self._start_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        return self._end_offset

    @property
    def durable_end_offset(self) -> int:
        """Every offset below this one is covered by an fdatasync."""
        return min(self._group.durable, self._end_offset)

    @property
    def sync_count(self) -> int:
        """fdatasync calls made on segment files since open."""
        return self._sync_count

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segment_bases(self) -> list[int]:
        return list(self._view[1])

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- appends -------------------------------------------------------------------

    def append(
        self, batch: bytes | bytearray | memoryview, *, expected_offset: int | None = None, wait_durable: bool = True
    ) -> int:
        """Append one batch (built by ``build_batch``); return its base offset.

        The batch's own base offset field is ignored and replaced by the next
        offset of the log.  Under ``always`` durability this returns only once
        an fdatasync covers the batch, unless ``wait_durable`` is False: then
        the caller must call ``flush_to(base + count)`` before it reports the
        batch durable (so it can release its own locks first).  With
        ``expected_offset``, the append happens only if the log end equals it
        (checked under the append lock); otherwise FailedPrecondition, naming
        the log end, and nothing changes.
        """
        view = memoryview(batch)
        length = len(view)
        if length > self.config.max_batch_bytes:
            raise RecordTooLarge(
                f"batch of {length} bytes exceeds max_batch_bytes={self.config.max_batch_bytes}; "
                "send fewer or smaller records per batch"
            )
        if length < HEADER_SIZE:
            raise InvalidArgument(f"a batch is at least {HEADER_SIZE} bytes, got {length}")
        (_b, declared, magic, _c, _a, count, _f, max_ts, *_rest) = HEADER.unpack_from(view, 0)
        if declared != length or magic != MAGIC or count < 1:
            raise InvalidArgument(
                "not a well-formed batch (length, magic or record count field is wrong); "
                "build batches with logstore.storage.batch.build_batch"
            )
        with self._lock:
            if expected_offset is not None and expected_offset != self._end_offset:
                raise FailedPrecondition(
                    f"expected_offset {expected_offset} is not the log end {self._end_offset}: someone "
                    f"appended since; read up to {self._end_offset} and retry with "
                    f"expected_offset={self._end_offset}"
                )
            base = self._append_locked(view, count, max_ts, length)
            end = self._end_offset
            sync = self.config.durability is Durability.ALWAYS or self._flush_due_locked()
        if sync and (wait_durable or self.config.durability is not Durability.ALWAYS):
            self._group.await_durable(end)
        return base

    def append_records(self, records: Iterable[Record]) -> int:
        """Encode ``records`` as one batch and append it; return the base offset."""
        return self.append(build_batch(records))

    def _append_locked(self, view: memoryview, count: int, max_ts: int, length: int) -> int:
        if self._closed:
            raise LogClosed(f"log {self.directory} is closed")
        base = self._end_offset
        active = self._segments[-1]
        if not active.can_take(length, base + count - 1, self._clock()):
            active = self._roll_locked()
        active.append_locked(view, base, count, max_ts)
        self._end_offset = base + count
        self._unflushed_messages += count
        return base

    def _flush_due_locked(self) -> bool:
        if self.config.durability is not Durability.INTERVAL or self._group.durable >= self._end_offset:
            return False
        return (
            self._unflushed_messages >= self.config.flush_interval_messages
            or self._clock() - self._last_flush_ms >= self.config.flush_interval_ms
        )

    # -- rolling -------------------------------------------------------------------------

    def roll(self) -> None:
        """Seal the active segment and start a new one (no-op if it is empty)."""
        with self._lock:
            self._check_open_locked()
            if self._segments[-1].size:
                self._roll_locked()

    def _roll_locked(self) -> Segment:
        old = self._segments[-1]
        old.seal_locked()  # trims preallocated space first, so the sync covers the final size
        old.sync()
        self._count_sync()
        new = Segment.create(self.directory, self._end_offset, self.config, self._clock)
        fsync_dir(self.directory)
        self._set_segments_locked([*self._segments, new])
        self._group.mark_durable(new.base_offset)
        # The recovery-point checkpoint is written by checkpoint() (the broker
        # runs it periodically) and close(); a stale one only means more
        # scanning after a crash.
        _LOGGER.debug("%s: rolled to segment %d", self.directory, new.base_offset)
        return new

    # -- durability ----------------------------------------------------------------------------

    def _count_sync(self) -> None:
        with self._stats_lock:
            self._sync_count += 1

    def _sync_active(self) -> int:
        """One fdatasync covering every append made so far (the group-commit leader's job).

        Lock-free on purpose: the end offset is read before the active
        segment.  If a roll comes in between, the segment read is the new one
        and the roll has already synced the old one, which holds everything
        below that end.
        """
        end = self._end_offset
        segment = self._segments[-1]
        try:
            segment.sync()
            self._count_sync()
        except SegmentGone:
            pass  # closed meanwhile; close() synced it
        if self.config.durability is Durability.INTERVAL:
            with self._lock:
                self._unflushed_messages = max(0, self._end_offset - end)
                self._last_flush_ms = self._clock()
        return end

    def flush(self) -> None:
        """Return once every append made so far is on disk (shares group commit)."""
        self._check_open()
        self._group.await_durable(self._end_offset)

    def flush_to(self, offset: int) -> None:
        """Return once every offset below ``offset`` is on disk."""
        self._group.await_durable(offset)

    def maybe_flush(self) -> bool:
        """Under ``interval`` durability, flush if the interval has passed; report whether it did."""
        with self._lock:
            due = not self._closed and self._flush_due_locked()
        if due:
            self.flush()
        return due

    def checkpoint(self) -> None:
        """Write the recovery-point checkpoint (cheaper recovery after a crash)."""
        with self._lock:
            self._check_open_locked()
            write_checkpoint(self.directory / RECOVERY_POINT, str(self.durable_end_offset))

    # -- reads -----------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int = 1 << 20) -> list[bytes]:
        """Whole stored batches, the first one holding ``offset``.

        Returns at least one batch (even one larger than ``max_bytes``) unless
        ``offset`` is the log end, which gives ``[]``.  Stops at a segment
        boundary; call again from the next offset to continue.
        """
        self._check_open()
        if max_bytes < 1:
            raise InvalidArgument(f"max_bytes must be positive, got {max_bytes}")
        start, end = self._start_offset, self._end_offset
        if offset < start or offset > end:
            raise OffsetOutOfRange(offset, start, end)
        if offset == end:
            return []
        segments, bases = self._view
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            raise OffsetOutOfRange(offset, self._start_offset, self._end_offset)
        while i < len(segments):
            segment = segments[i]
            try:
                batches = self._read_segment(segment, offset, max_bytes)
            except SegmentGone:
                raise OffsetOutOfRange(offset, self._start_offset, self._end_offset) from None
            if batches:
                return batches
            i += 1
        return []

    def _read_segment(self, segment: Segment, offset: int, max_bytes: int) -> list[bytes]:
        try:
            return segment.read(offset, max_bytes)
        except IndexCorrupt as exc:
            if segment.indexes_rebuilt:
                raise CorruptBatch(f"{exc}: the batch there is damaged and will not be served") from None
            _LOGGER.warning("%s: %s; rebuilding the segment's indexes", self.directory, exc)
            with self._lock:
                self._check_open_locked()
                segment.rebuild_indexes_locked()
        try:
            return segment.read(offset, max_bytes)
        except IndexCorrupt as exc:
            raise CorruptBatch(f"{exc}: the batch there is damaged and will not be served") from None

    def read_records(self, offset: int, max_bytes: int = 1 << 20) -> list[tuple[int, Record]]:
        """Decoded ``(offset, Record)`` pairs from ``offset`` on (for tools and tests)."""
        out = []
        for batch in self.read(offset, max_bytes):
            out.extend((o, r) for o, r in iter_batch_records(batch) if o >= offset)
        return out

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """The first offset whose record timestamp is >= ``timestamp``, or None."""
        self._check_open()
        for segment in self._segments:
            if segment.max_timestamp >= timestamp and segment.next_offset > self._start_offset:
                try:
                    found = segment.offset_for_timestamp(timestamp)
                except SegmentGone:
                    continue
                if found is not None:
                    return max(found, self._start_offset)
        return None

    # -- retention --------------------------------------------------------------------------------

    def apply_retention(self) -> int:
        """Delete whole sealed segments past the time or size limit; return how many."""
        with self._lock:
            self._check_open_locked()
            return self._apply_retention_locked()

    def _apply_retention_locked(self) -> int:
        sealed = self._segments[:-1]
        if not sealed:
            return 0
        now = self._clock()
        doomed = 0
        retention_ms = self.config.retention_ms
        if retention_ms > 0:
            while doomed < len(sealed) and sealed[doomed].max_timestamp < now - retention_ms:
                doomed += 1
        retention_bytes = self.config.retention_bytes
        if retention_bytes > 0:
            excess = sum(s.size for s in self._segments) - retention_bytes
            for s in sealed[:doomed]:
                excess -= s.size
            while doomed < len(sealed) and excess - sealed[doomed].size >= 0:
                excess -= sealed[doomed].size
                doomed += 1
        if not doomed:
            return 0
        victims = sealed[:doomed]
        # Move the log start first, so a reader never finds a closed segment
        # holding offsets the log still claims to have.
        self._set_segments_locked(list(self._segments[doomed:]))
        self._start_offset = max(self._start_offset, self._segments[0].base_offset)
        renamed = [seg.delete_phase1_locked() for seg in victims]
        write_checkpoint(self.directory / LOG_START_OFFSET, str(self._start_offset))
        for seg, paths in zip(victims, renamed):
            seg.delete_phase2(paths)
        _LOGGER.info(
            "%s: retention deleted %d segment(s); log start offset is now %d",
            self.directory, doomed, self._start_offset,
        )
        return doomed

    # -- closing -------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"log {self.directory} is closed")

    _check_open_locked = _check_open

    def close(self) -> None:
        """Flush, trim and close every segment, then write the clean-shutdown marker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = self._segments[-1]
            active.sync()
            self._count_sync()
            for segment in self._segments:
                segment.close_locked()
            d = self.directory
            write_checkpoint(d / RECOVERY_POINT, str(self._end_offset))
            write_checkpoint(d / LOG_START_OFFSET, str(self._start_offset))
            write_checkpoint(d / CLEAN_SHUTDOWN, f"{self._end_offset} {active.base_offset} {active.size}")
        self._group.mark_durable(self._end_offset)

    def __enter__(self) -> "PartitionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PartitionLog({str(self.directory)!r}, start={self._start_offset}, "
            f"end={self._end_offset}, segments={len(self._segments)})"
        )


def _parse_int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
