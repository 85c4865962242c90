"""Shared helpers for the storage tests: an in-memory oracle of the log and
checks that compare a real ``PartitionLog`` against it.

Nothing here mocks logstore code: the oracle is a plain list of what was
appended, and every check reads the real log on real files.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from logstore.storage.batch import iter_batch_records, read_header, validate_batch
from logstore.storage.records import Record

CLEAN_MARKER = ".clean-shutdown"


def seg_name(base: int, ext: str) -> str:
    """File name of one segment file, e.g. ``seg_name(0, "log")``."""
    return f"{base:020d}.{ext}"


def log_file(directory: Path, base: int) -> Path:
    return Path(directory) / seg_name(base, "log")


def files_with_suffix(directory: Path, suffix: str) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if p.name.endswith(suffix))


def remove_clean_marker(directory: Path) -> None:
    """Turn a clean shutdown into an unclean one (as if the process had died)."""
    marker = Path(directory) / CLEAN_MARKER
    if marker.exists():
        marker.unlink()


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def random_record(rng: random.Random, timestamp: int, max_value: int = 300) -> Record:
    """A record with random key/value/header shapes (null and empty included)."""
    kind = rng.random()
    if kind < 0.1:
        key = None
    elif kind < 0.2:
        key = b""
    else:
        key = rng.randbytes(rng.randint(1, 16))
    vkind = rng.random()
    if vkind < 0.05:
        value = None
    elif vkind < 0.1:
        value = b""
    else:
        value = rng.randbytes(rng.randint(1, max_value))
    headers = tuple(
        (f"h{i}-\u00e9", rng.randbytes(rng.randint(0, 8))) for i in range(rng.choice((0, 0, 1, 3)))
    )
    return Record(key=key, value=value, headers=headers, timestamp=timestamp)


@dataclass
class StoredBatch:
    base: int
    records: list[Record]
    length: int

    @property
    def next_offset(self) -> int:
        return self.base + len(self.records)

    @property
    def max_timestamp(self) -> int:
        return max(r.timestamp for r in self.records)


@dataclass
class Oracle:
    """What the log must contain: the batches appended, minus the deleted prefix."""

    batches: list[StoredBatch] = field(default_factory=list)
    start: int = 0
    end: int = 0

    def appended(self, base: int, records: list[Record], length: int) -> None:
        assert base == self.end, f"append returned base {base}, expected the log end {self.end}"
        self.batches.append(StoredBatch(base, list(records), length))
        self.end = base + len(records)

    def drop_below(self, new_start: int) -> None:
        """Forget the batches retention deleted (those that end at or below new_start)."""
        assert new_start >= self.start
        self.batches = [b for b in self.batches if b.next_offset > new_start]
        if self.batches:
            assert self.batches[0].base == new_start, "retention cut inside a batch"
        self.start = new_start

    def truncate_to(self, new_end: int) -> None:
        """Forget every batch at or above new_end (new_end must be a batch boundary)."""
        self.batches = [b for b in self.batches if b.base < new_end]
        if self.batches:
            assert self.batches[-1].next_offset == new_end
        self.end = new_end

    def batch_containing(self, offset: int) -> int:
        for i, b in enumerate(self.batches):
            if b.base <= offset < b.next_offset:
                return i
        raise KeyError(offset)

    def records(self) -> list[tuple[int, Record]]:
        return [(b.base + i, r) for b in self.batches for i, r in enumerate(b.records)]

    def size_bytes(self) -> int:
        return sum(b.length for b in self.batches)

    def first_offset_at_or_after(self, ts: int) -> int | None:
        for off, rec in self.records():
            if rec.timestamp >= ts:
                return off
        return None


def check_read(log, oracle: Oracle, offset: int, max_bytes: int) -> list[bytes]:
    """Read at ``offset`` and check the answer batch by batch against the oracle."""
    batches = log.read(offset, max_bytes)
    if offset == oracle.end:
        assert batches == [], f"read at the log end {offset} returned {len(batches)} batches"
        return batches
    assert batches, f"read at {offset} (log {oracle.start}..{oracle.end}) returned nothing"
    i = oracle.batch_containing(offset)
    bases = set(log.segment_bases)
    total = 0
    for batch in batches:
        expected = oracle.batches[i]
        header = validate_batch(batch)  # whole, CRC-valid batch
        assert header.base_offset == expected.base, (header.base_offset, expected.base)
        assert len(batch) == expected.length
        got = [rec for _, rec in iter_batch_records(batch)]
        assert got == expected.records, f"batch at {expected.base} differs from what was appended"
        offsets = [off for off, _ in iter_batch_records(batch)]
        assert offsets == list(range(expected.base, expected.next_offset))
        total += len(batch)
        i += 1
    assert total <= max_bytes or len(batches) == 1, (
        f"read({offset}, max_bytes={max_bytes}) returned {len(batches)} batches, {total} bytes"
    )
    # It stops early only at max_bytes, at the log end or at a segment boundary.
    if i < len(oracle.batches):
        nxt = oracle.batches[i]
        assert total + nxt.length > max_bytes or nxt.base in bases, (
            f"read({offset}, max_bytes={max_bytes}) stopped at {nxt.base} with {total} bytes "
            "although the next batch fits and is in the same segment"
        )
    return batches


def check_read_records(log, oracle: Oracle, offset: int, max_bytes: int) -> list[tuple[int, Record]]:
    """read_records gives a non-empty run of the oracle's records starting at ``offset``."""
    got = log.read_records(offset, max_bytes)
    if offset == oracle.end:
        assert got == []
        return got
    assert got, f"read_records({offset}) returned nothing below the end {oracle.end}"
    expected = [(o, r) for o, r in oracle.records() if o >= offset]
    assert got[0][0] == offset, f"read_records({offset}) starts at {got[0][0]}"
    assert got == expected[: len(got)]
    return got


def read_everything(log, start: int | None = None, max_bytes: int = 1 << 20) -> list[tuple[int, Record]]:
    """All records from ``start`` (default: the log start) to the end, looping reads."""
    offset = log.log_start_offset if start is None else start
    out: list[tuple[int, Record]] = []
    end = log.log_end_offset
    while offset < end:
        chunk = log.read_records(offset, max_bytes)
        assert chunk, f"read_records({offset}) returned nothing below the end {end}"
        assert chunk[0][0] == offset
        out.extend(chunk)
        offset = chunk[-1][0] + 1
    return out


def check_matches_oracle(log, oracle: Oracle) -> None:
    """The log's bounds, segments and full content equal the oracle's."""
    assert log.log_start_offset == oracle.start
    assert log.log_end_offset == oracle.end
    bases = log.segment_bases
    assert bases == sorted(set(bases)), f"segment bases not strictly increasing: {bases}"
    assert log.segment_count == len(bases)
    assert bases[0] == oracle.start, f"first segment {bases[0]} != log start {oracle.start}"
    assert bases[-1] <= oracle.end
    assert log.size_bytes == oracle.size_bytes()
    for base in bases:
        assert log_file(log.directory, base).exists(), f"segment file for {base} missing"
    assert read_everything(log) == oracle.records()


def flip_byte(path: Path, position: int, mask: int) -> None:
    assert mask & 0xFF
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        assert len(b) == 1
        f.seek(position)
        f.write(bytes((b[0] ^ mask,)))
        f.flush()
        os.fsync(f.fileno())


def batch_positions(log_path: Path) -> list[tuple[int, int, int]]:
    """``(position, base_offset, length)`` of every batch in a healthy .log file."""
    data = Path(log_path).read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        header = read_header(data, pos)
        out.append((pos, header.base_offset, header.length))
        pos += header.length
    assert pos == len(data)
    return out
