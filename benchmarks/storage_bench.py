"""Storage-layer benchmark: what one partition log can append and serve.

Run it as::

    python benchmarks/storage_bench.py            # full run, about 70 seconds
    python benchmarks/storage_bench.py --quick    # about 20 seconds
    python benchmarks/storage_bench.py --dir /mnt/disk   # data on another filesystem

It prints the machine it ran on (CPU, cores, Python, the filesystem of the
data directory and the measured cost of one ``fdatasync``), then one table
row per case with records/s, MB/s and per-call latency percentiles, the
targets with PASS/MISS, and a raw write-path micro-benchmark (``os.pwrite``
against slice assignment into a preallocated ``mmap``).

Units: MB = 10**6 bytes.  "payload MB/s" counts only the 100-byte record
values; "stored MB/s" counts the bytes that go to or come from the log
(batch header, record framing and timestamps included).  Latencies are per
call (one ``append``, one ``read``, one ``read_records`` or one
``build_batch``), measured with ``time.perf_counter_ns``.

Cases:
- append of pre-built batch bytes (what the broker appends after receiving
  bytes off the wire), 1,000-record and 1-record batches, durability OS;
- the Python-side producer cost of building a 1,000-record batch, with the
  framing + CRC share shown separately;
- durability ALWAYS with 1 and 8 appending threads, 1-record and
  1,000-record batches; the log's ``sync_count`` shows how many appends one
  ``fdatasync`` covered (group commit);
- sequential reads of whole batches over the log written by the first case:
  warm (right after writing), after close + reopen (the first read of a
  segment verifies CRCs), and after close + reopen with the segment files
  evicted from the page cache (``posix_fadvise(DONTNEED)``);
- ``read_records`` (every record decoded in Python), for reference.

Page-cache priming: on a VM with free page reporting, memory freed by the
guest goes back to the hypervisor after about 2 s and writing into it again
costs a host page fault per page (about 300 MB/s instead of about 4 GB/s on
the development VM).  Each write-heavy case therefore runs right after a
scratch file was written and deleted, so it gets recycled pages; the full run
also shows the batched OS append without priming, and the machine section
shows both write speeds.  ``--no-prime`` turns priming off.

What this benchmark does NOT tell you:
- It measures one process on one partition; no gRPC, no network, no broker.
- Each case runs once, bounded by time or bytes; numbers from a shared or
  virtualised machine move by 10-20 % between runs, and write-heavy cases
  depend on the VM's memory handling (see priming above).  Compare runs made on the
  same machine, not numbers across machines.
- The "cache evicted" read is best effort: ``POSIX_FADV_DONTNEED`` only drops
  clean pages that nobody maps, and the device or hypervisor may still cache
  the data.  Nothing here drops the whole page cache (that needs root).
- Durability OS means "handed to the kernel"; those numbers say nothing about
  what survives a power cut.
"""

from __future__ import annotations

import argparse
import math
import mmap
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    # Run as a plain script from a checkout: make ``logstore`` importable without installing it.
    sys.path.insert(0, str(_REPO_ROOT))

from logstore.storage.batch import (  # noqa: E402
    HEADER_SIZE,
    RECORD_COUNT_OFFSET,
    build_batch,
    build_batch_from_encoded,
)
from logstore.storage.records import Record, encode_records  # noqa: E402

VALUE_BYTES = 100
"""Payload size of every record: a 100-byte value, no key, no headers."""

BIG_BATCH = 1_000
"""Records per batch in the batched cases."""

TIMESTAMP_MS = time.time_ns() // 1_000_000
"""Record timestamp (the producer's create time): now, so time-based retention never deletes test data."""

MB = 1_000_000
KIB = 1024
MIB = 1024 * 1024

_BASE_OFFSET = struct.Struct("<q")  # batch header field at byte 0
_RECORD_COUNT = struct.Struct("<i")  # batch header field at RECORD_COUNT_OFFSET

TARGET_APPEND_BATCHED = 2_000_000  # records/s, append 1,000-record batches, durability OS
TARGET_READ_SEQUENTIAL = 5_000_000  # records/s, sequential read of whole batches (warm)
TARGET_ALWAYS_8_THREADS = 20_000  # appends/s, durability ALWAYS, 8 threads, 1-record batches


class BenchError(Exception):
    """A case could not be measured (hang, wrong data, error inside the log)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how big each case is."""

    quick: bool
    case_seconds: float
    """Time bound of each append case and of read_records."""
    encode_seconds: float
    read_log_max_bytes: int
    """Byte cap of the log written by the batched OS append case, which the read cases then read."""
    segment_bytes: int
    read_max_bytes: int
    """``max_bytes`` passed to each ``log.read`` call."""
    thread_join_slack_s: float
    """How long past its deadline a thread may run before the case is declared hung."""
    fsync_samples: int
    raw_total_bytes: int
    """Bytes written per (method, chunk size) in the pwrite-vs-mmap micro-benchmark."""
    raw_repeats: int
    prime: bool
    """Prime the page cache right before each write-heavy case (see ``_prime_page_cache``)."""
    prime_big_bytes: int
    """Scratch bytes written before the 1,000-record ALWAYS cases."""
    unprimed_case: bool
    """Also run the batched OS append on memory the hypervisor has taken back (full run only)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One table row."""

    name: str
    calls: int
    records: int
    payload_bytes: int
    stored_bytes: int
    elapsed_ns: int
    p50_ns: float
    p99_ns: float
    p999_ns: float
    samples: int
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.elapsed_ns / 1e9

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.elapsed_ns else 0.0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.elapsed_ns else 0.0

    @property
    def payload_mb_s(self) -> float:
        return self.payload_bytes / MB / self.seconds if self.elapsed_ns else 0.0

    @property
    def stored_mb_s(self) -> float:
        return self.stored_bytes / MB / self.seconds if self.elapsed_ns else 0.0


# --------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(f"[storage_bench] {msg}", file=sys.stderr, flush=True)


def _percentile(sorted_values: list[int], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(pct / 100.0 * len(sorted_values)) - 1)
    return float(sorted_values[min(rank, len(sorted_values) - 1)])


def _fmt_ns(ns: float) -> str:
    if math.isnan(ns):
        return "-"
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 10_000:
        return f"{ns / 1e3:.2f}us"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}us"
    if ns < 10_000_000:
        return f"{ns / 1e6:.2f}ms"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.2f}s"


def _fmt_rate(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:,.1f}"


def _make_result(
    name: str,
    calls: int,
    records: int,
    payload_bytes: int,
    stored_bytes: int,
    elapsed_ns: int,
    latencies: list[int],
    note: str = "",
) -> CaseResult:
    latencies.sort()
    return CaseResult(
        name=name,
        calls=calls,
        records=records,
        payload_bytes=payload_bytes,
        stored_bytes=stored_bytes,
        elapsed_ns=elapsed_ns,
        p50_ns=_percentile(latencies, 50),
        p99_ns=_percentile(latencies, 99),
        p999_ns=_percentile(latencies, 99.9),
        samples=len(latencies),
        note=note,
    )


def _records(n: int) -> list[Record]:
    """``n`` records with distinct 100-byte values (compressible text; no compression is applied)."""
    out = []
    for i in range(n):
        value = (f"record-{i:010d}-".encode() * 8)[:VALUE_BYTES]
        value = value.ljust(VALUE_BYTES, b".")
        out.append(Record(value=value, timestamp=TIMESTAMP_MS))
    return out


def _batch_record_count(batch: bytes | memoryview) -> int:
    return _RECORD_COUNT.unpack_from(batch, RECORD_COUNT_OFFSET)[0]


def _batch_base_offset(batch: bytes | memoryview) -> int:
    return _BASE_OFFSET.unpack_from(batch, 0)[0]


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def _filesystem_of(path: str) -> str:
    """Device, type and options of the mount holding ``path`` (longest mount-point prefix)."""
    real = os.path.realpath(path)
    best: tuple[str, str, str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    continue
                device, mount_point, fstype, options = parts[:4]
                mount_point = mount_point.replace("\\040", " ")
                prefix = mount_point.rstrip("/") + "/"
                if real == mount_point or (real + "/").startswith(prefix) or mount_point == "/":
                    if best is None or len(mount_point) >= len(best[1]):
                        best = (device, mount_point, fstype, options)
    except OSError:
        return "unknown (/proc/mounts unreadable)"
    if best is None:
        return "unknown"
    device, mount_point, fstype, options = best
    return f"{fstype} on {device} mounted at {mount_point} ({options})"


def _fdatasync_cost(directory: str, samples: int) -> dict[str, float]:
    """Median and p99 of ``fdatasync`` after a 4 KiB write: appending (file grows) and overwriting."""
    path = os.path.join(directory, "fdatasync-probe")
    block = os.urandom(4 * KIB)
    out: dict[str, float] = {}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for mode in ("append", "overwrite"):
            times: list[int] = []
            for i in range(samples + 5):
                if mode == "append":
                    os.write(fd, block)
                else:
                    os.pwrite(fd, block, 0)
                t0 = time.perf_counter_ns()
                os.fdatasync(fd)
                t1 = time.perf_counter_ns()
                if i >= 5:  # the first few include allocating the file's first blocks
                    times.append(t1 - t0)
            times.sort()
            out[f"{mode}_median"] = statistics.median(times)
            out[f"{mode}_p99"] = _percentile(times, 99)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def _prime_page_cache(directory: str, nbytes: int) -> float:
    """Write and unlink a scratch file of ``nbytes``; return its write speed in MB/s.

    Why: on a VM whose balloon device does free page reporting (the
    development VM does), memory the guest frees goes back to the hypervisor
    about 2 s later, and the next write into it pays a host page fault per
    page.  Measured there: a 1 GiB file is written at ~300 MB/s into such
    memory and at ~4,000 MB/s into memory freed less than a second before.
    Writing and deleting a scratch file right before a case hands the case
    recycled pages, so the row measures the log rather than the hypervisor.
    The "unprimed" row and the machine section show the other number.  On
    bare metal, or once the page cache has filled RAM, priming changes nothing.
    """
    path = os.path.join(directory, "prime-scratch")
    chunk = os.urandom(1 * MIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter_ns()
        for pos in range(0, nbytes, len(chunk)):
            os.pwrite(fd, chunk, pos)
        elapsed = time.perf_counter_ns() - t0
    finally:
        os.close(fd)
        os.unlink(path)  # dirty pages are dropped, never written back
    return nbytes / MB / (elapsed / 1e9)


def _print_machine(
    directory: str, settings: Settings, fsync: dict[str, float], batch_len: int, touch: dict[str, float] | None
) -> None:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    print("Machine")
    print(f"  CPU            : {_cpu_model()}")
    print(f"  cores          : {os.cpu_count()} online, {affinity} usable by this process")
    print(f"  memory         : {_mem_total()}")
    print(f"  kernel         : {platform.system()} {platform.release()}")
    print(f"  Python         : {platform.python_implementation()} {platform.python_version()} ({sys.executable})")
    print(f"  data directory : {directory}")
    print(f"  filesystem     : {_filesystem_of(directory)}")
    print(
        f"  fdatasync      : median {_fmt_ns(fsync['append_median'])} (p99 {_fmt_ns(fsync['append_p99'])}) "
        f"after a 4 KiB appending write; median {_fmt_ns(fsync['overwrite_median'])} "
        f"(p99 {_fmt_ns(fsync['overwrite_p99'])}) after a 4 KiB overwrite; {settings.fsync_samples} samples each"
    )
    if touch:
        print(
            f"  page cache     : a 256 MiB file is written at {touch['first']:,.0f} MB/s after 3 s idle, "
            f"{touch['recycled']:,.0f} MB/s right after freeing the same amount"
        )
    if settings.prime:
        print(
            "                   write-heavy cases below run right after writing and deleting a scratch file "
            "(\"primed\"; see _prime_page_cache)"
        )
    else:
        print("                   page cache NOT primed before the cases (--no-prime)")
    print("Settings")
    print(
        f"  mode {'--quick' if settings.quick else 'full'}; {settings.case_seconds:g} s per append case; "
        f"segment_bytes {settings.segment_bytes // MIB} MiB; read max_bytes {settings.read_max_bytes // KIB} KiB; "
        f"read log capped at {settings.read_log_max_bytes // MIB} MiB"
    )
    print(
        f"  records: {VALUE_BYTES}-byte value, no key, no headers, timestamp set; "
        f"a {BIG_BATCH:,}-record batch is {batch_len:,} bytes stored "
        f"({batch_len / BIG_BATCH:.1f} B/record, {HEADER_SIZE}-byte batch header)"
    )
    print()


# --------------------------------------------------------------------------- cases


def _bench_encode(settings: Settings) -> list[CaseResult]:
    """Producer-side cost: build a 1,000-record batch from Record objects."""
    records = _records(BIG_BATCH)
    out: list[CaseResult] = []
    encoded = encode_records(records)
    batch_len = len(build_batch_from_encoded(encoded))
    cases: list[tuple[str, Callable[[], object], str]] = [
        (f"encode build_batch({BIG_BATCH:,} records)", lambda: build_batch(records), "Python, per batch"),
        (
            "  of which frame+CRC only",
            lambda: build_batch_from_encoded(encoded),
            "build_batch_from_encoded",
        ),
    ]
    for name, fn, note in cases:
        lat: list[int] = []
        now = time.perf_counter_ns
        fn()  # warm up
        start = now()
        deadline = start + int(settings.encode_seconds * 1e9)
        t = start
        calls = 0
        while t < deadline:
            fn()
            t2 = now()
            lat.append(t2 - t)
            t = t2
            calls += 1
        elapsed = t - start
        out.append(
            _make_result(
                name, calls, calls * BIG_BATCH, calls * BIG_BATCH * VALUE_BYTES, calls * batch_len, elapsed, lat, note
            )
        )
        _log(f"{name}: {out[-1].records_per_s:,.0f} records/s")
    return out


def _append_loop(log: object, batch: bytes, deadline_ns: int, max_appends: int, lat: list[int]) -> None:
    append = log.append  # type: ignore[attr-defined]
    now = time.perf_counter_ns
    record = lat.append
    n = 0
    t = now()
    while t < deadline_ns and n < max_appends:
        append(batch)
        t2 = now()
        record(t2 - t)
        t = t2
        n += 1


def _run_appenders(
    log: object, batch: bytes, threads: int, seconds: float, max_appends: int, slack_s: float
) -> tuple[int, list[int]]:
    """Append ``batch`` from ``threads`` threads until the deadline; return (elapsed_ns, latencies)."""
    barrier = threading.Barrier(threads + 1)
    lats: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    deadline = [0]
    per_thread = max(1, max_appends // threads)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            _append_loop(log, batch, deadline[0], per_thread, lats[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,), name=f"appender-{i}", daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter_ns() + int(seconds * 1e9)
    t0 = time.perf_counter_ns()
    barrier.wait()
    for w in workers:
        w.join(timeout=max(0.0, (deadline[0] - time.perf_counter_ns()) / 1e9) + slack_s)
    t1 = time.perf_counter_ns()
    hung = [w.name for w in workers if w.is_alive()]
    if hung:
        raise BenchError(f"{len(hung)} appender thread(s) still inside log.append {slack_s:g} s after the deadline")
    if errors:
        raise BenchError(f"log.append raised {errors[0]!r}") from errors[0]
    merged = [x for part in lats for x in part]
    return t1 - t0, merged


def _sync_count(log: object) -> int | None:
    value = getattr(log, "sync_count", None)
    return value if isinstance(value, int) else None


def _bench_append(
    name: str,
    directory: str,
    settings: Settings,
    durability: object,
    batch: bytes,
    records_per_batch: int,
    threads: int,
    max_bytes: int,
    keep_open: bool = False,
    seconds: float | None = None,
    note: str = "",
) -> tuple[CaseResult, object | None]:
    from logstore.storage.config import LogConfig
    from logstore.storage.log import PartitionLog

    os.makedirs(directory)
    log = PartitionLog.open(
        directory, config=LogConfig(segment_bytes=settings.segment_bytes, durability=durability), clock=None
    )
    try:
        # One warm-up append so file creation is not timed.
        log.append(batch)
        s0 = _sync_count(log)
        max_appends = max(threads, max_bytes // len(batch))
        elapsed, lat = _run_appenders(
            log, batch, threads, seconds or settings.case_seconds, max_appends, settings.thread_join_slack_s
        )
        s1 = _sync_count(log)
        calls = len(lat)
        expected_end = calls * records_per_batch + records_per_batch
        leo = getattr(log, "log_end_offset", None)
        if isinstance(leo, int) and leo != expected_end:
            raise BenchError(f"log_end_offset is {leo:,} after {calls + 1:,} appends; expected {expected_end:,}")
        notes = [f"{threads} thread{'s' if threads > 1 else ''}"] + ([note] if note else [])
        if s0 is not None and s1 is not None:
            syncs = s1 - s0
            if durability_name(durability) == "ALWAYS":
                notes.append(f"{syncs:,} fdatasyncs")
                if syncs:
                    notes.append(f"{calls / syncs:,.2f} appends/fdatasync")
            else:
                notes.append(f"{syncs:,} fdatasyncs (segment rolls)")
        else:
            notes.append("sync_count n/a")
        if calls and not keep_open and durability_name(durability) != "ALWAYS":
            t0 = time.perf_counter_ns()
            log.flush()  # type: ignore[attr-defined]
            notes.append(f"final flush {_fmt_ns(time.perf_counter_ns() - t0)}")
        result = _make_result(
            name,
            calls,
            calls * records_per_batch,
            calls * records_per_batch * VALUE_BYTES,
            calls * len(batch),
            elapsed,
            lat,
            ", ".join(notes),
        )
    except BaseException:
        _safe_close(log)
        raise
    _log(f"{name}: {result.calls_per_s:,.0f} appends/s, {result.records_per_s:,.0f} records/s ({result.note})")
    if keep_open:
        return result, log
    log.close()  # type: ignore[attr-defined]
    shutil.rmtree(directory, ignore_errors=True)
    return result, None


def durability_name(durability: object) -> str:
    return str(getattr(durability, "name", durability))


def _safe_close(log: object) -> None:
    try:
        log.close()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - best effort while already failing
        _log(f"log.close() failed while handling another error: {exc!r}")


def _read_all(name: str, log: object, settings: Settings, expected_records: int, note: str) -> CaseResult:
    """One pass of ``log.read`` over the whole log, checking offsets are contiguous."""
    read = log.read  # type: ignore[attr-defined]
    max_bytes = settings.read_max_bytes
    now = time.perf_counter_ns
    lat: list[int] = []
    offset = 0
    records = 0
    stored = 0
    calls = 0
    start = now()
    t = start
    while offset < expected_records:
        batches = read(offset, max_bytes)
        t2 = now()
        lat.append(t2 - t)
        t = t2
        calls += 1
        if not batches:
            raise BenchError(f"{name}: read({offset:,}) returned [] before the end of the log ({expected_records:,})")
        first = batches[0]
        if _batch_base_offset(first) != offset:
            raise BenchError(f"{name}: read({offset}) returned a batch starting at {_batch_base_offset(first)}")
        for b in batches:
            stored += len(b)
            records += _batch_record_count(b)
        last = batches[-1]
        offset = _batch_base_offset(last) + _batch_record_count(last)
    elapsed = t - start
    if records != expected_records:
        raise BenchError(f"{name}: read {records:,} records, the log holds {expected_records:,}")
    tail = read(offset, max_bytes)  # untimed: the API promises [] at the end of the log
    if tail:
        raise BenchError(f"{name}: read({offset:,}) at the end of the log returned {len(tail)} batch(es), not []")
    return _make_result(
        name,
        calls,
        records,
        records * VALUE_BYTES,
        stored,
        elapsed,
        lat,
        (note + ", " if note else "") + f"{stored / calls / KIB:,.0f} KiB/call",
    )


def _read_records(name: str, log: object, settings: Settings, expected_records: int) -> CaseResult:
    """``read_records`` from offset 0 until the time bound (or the end of the log)."""
    read_records = log.read_records  # type: ignore[attr-defined]
    max_bytes = settings.read_max_bytes
    now = time.perf_counter_ns
    lat: list[int] = []
    offset = 0
    records = 0
    payload = 0
    calls = 0
    start = now()
    deadline = start + int(settings.case_seconds * 1e9)
    t = start
    while t < deadline:
        got = read_records(offset, max_bytes)
        t2 = now()
        lat.append(t2 - t)
        t = t2
        calls += 1
        if not got:
            break
        if got[0][0] > offset:
            raise BenchError(f"{name}: read_records({offset}) started at {got[0][0]}")
        for off, rec in got:
            if off >= offset:
                records += 1
                payload += len(rec.value or b"")
        offset = got[-1][0] + 1
    elapsed = t - start
    end_note = "reached end of log" if offset >= expected_records else f"stopped at the time bound, offset {offset:,}"
    # stored bytes are not tracked here: the records come back decoded.
    return _make_result(name, calls, records, payload, 0, elapsed, lat, f"decoded Record objects, {end_note}")


def _evict_page_cache(directory: str) -> str:
    """fsync and POSIX_FADV_DONTNEED every file of the closed log (best effort)."""
    if not hasattr(os, "posix_fadvise"):
        return "posix_fadvise unavailable: cache NOT evicted"
    total = 0
    for root, _dirs, files in os.walk(directory):
        for fname in files:
            path = os.path.join(root, fname)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # only clean pages can be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return f"fadvise(DONTNEED) on {total / MIB:,.0f} MiB"


def _bench_reads(
    log: object,
    directory: str,
    settings: Settings,
    durability: object,
    add: Callable[[str, CaseResult], None],
) -> None:
    """Read cases over the log the batched OS append case wrote; ``log`` is that still-open log."""
    from logstore.storage.config import LogConfig
    from logstore.storage.log import PartitionLog

    expected = log.log_end_offset  # type: ignore[attr-defined]
    config = LogConfig(segment_bytes=settings.segment_bytes, durability=durability)

    def done(key: str, result: CaseResult) -> None:
        add(key, result)
        _log(f"{result.name}: {result.records_per_s:,.0f} records/s, {result.stored_mb_s:,.0f} MB/s stored")

    try:
        done("read_warm", _read_all("read batches, warm (just written)", log, settings, expected, "same open log"))
    finally:
        log.close()  # type: ignore[attr-defined]

    t0 = time.perf_counter_ns()
    log = PartitionLog.open(directory, config=config, clock=None)
    open_ns = time.perf_counter_ns() - t0
    try:
        done(
            "read_reopen",
            _read_all("read batches, reopened (CRC check)", log, settings, expected, f"open took {_fmt_ns(open_ns)}"),
        )
    finally:
        log.close()  # type: ignore[attr-defined]

    evicted = _evict_page_cache(directory)
    t0 = time.perf_counter_ns()
    log = PartitionLog.open(directory, config=config, clock=None)
    open_ns = time.perf_counter_ns() - t0
    try:
        done(
            "read_evicted",
            _read_all(
                "read batches, reopened, cache evicted",
                log,
                settings,
                expected,
                f"open took {_fmt_ns(open_ns)}, {evicted}",
            ),
        )
        done("read_records", _read_records("read_records (Python decode)", log, settings, expected))
    finally:
        log.close()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- raw write path


def _raw_pwrite(path: str, chunk: bytes, total: int, prealloc: bool) -> int:
    n = len(chunk)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite = os.pwrite
        t0 = time.perf_counter_ns()
        if prealloc:
            os.ftruncate(fd, total)
        pos = 0
        while pos < total:
            pwrite(fd, chunk, pos)
            pos += n
        return time.perf_counter_ns() - t0
    finally:
        os.close(fd)
        os.unlink(path)


def _raw_mmap(path: str, chunk: bytes, total: int, rewrite: bool) -> int:
    """Slice-assign ``chunk`` into a fresh ftruncate'd file's mapping; with ``rewrite`` time a second pass."""
    n = len(chunk)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter_ns()
        os.ftruncate(fd, total)
        mm = mmap.mmap(fd, total)
        try:
            passes = 2 if rewrite else 1
            for p in range(passes):
                if p == 1:
                    t0 = time.perf_counter_ns()
                pos = 0
                while pos < total:
                    mm[pos : pos + n] = chunk
                    pos += n
        finally:
            mm.close()
        return time.perf_counter_ns() - t0
    finally:
        os.close(fd)
        os.unlink(path)


def _bench_raw_writes(directory: str, settings: Settings) -> list[tuple[int, dict[str, float]]]:
    """MB/s of each write method per chunk size (best of ``raw_repeats``)."""
    sizes = [1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 128 * KIB]
    methods: dict[str, Callable[[str, bytes, int], int]] = {
        "pwrite, growing file": lambda p, c, t: _raw_pwrite(p, c, t, prealloc=False),
        "pwrite, ftruncated": lambda p, c, t: _raw_pwrite(p, c, t, prealloc=True),
        "mmap, ftruncated": lambda p, c, t: _raw_mmap(p, c, t, rewrite=False),
        "mmap, pages resident": lambda p, c, t: _raw_mmap(p, c, t, rewrite=True),
    }
    path = os.path.join(directory, "raw-write-probe")
    total = settings.raw_total_bytes
    rows = []
    for size in sizes:
        chunk = os.urandom(size)
        total_here = (total // size) * size
        row: dict[str, float] = {}
        for mname, fn in methods.items():
            best = min(fn(path, chunk, total_here) for _ in range(settings.raw_repeats))
            row[mname] = total_here / MB / (best / 1e9)
        rows.append((size, row))
        _log(f"raw writes {size // KIB} KiB: " + ", ".join(f"{k} {v:,.0f} MB/s" for k, v in row.items()))
    return rows


# --------------------------------------------------------------------------- report


def _print_table(results: list[CaseResult]) -> None:
    header = (
        f"{'case':<42} {'calls':>9} {'calls/s':>11} {'records/s':>12} {'payload':>8} {'stored':>8} "
        f"{'p50':>8} {'p99':>8} {'p99.9':>8}  notes"
    )
    print("Results (payload/stored in MB/s, MB = 10^6 B; latency per call)")
    print(header)
    print("-" * len(header))
    for r in results:
        p999 = _fmt_ns(r.p999_ns) + ("*" if r.samples < 1000 else "")
        stored = _fmt_rate(r.stored_mb_s) if r.stored_bytes else "-"
        print(
            f"{r.name:<42} {r.calls:>9,} {_fmt_rate(r.calls_per_s):>11} {_fmt_rate(r.records_per_s):>12} "
            f"{_fmt_rate(r.payload_mb_s):>8} {stored:>8} "
            f"{_fmt_ns(r.p50_ns):>8} {_fmt_ns(r.p99_ns):>8} {p999:>8}  {r.note}"
        )
    print("  * fewer than 1,000 samples: p99.9 is the maximum")
    print()


def _print_targets(by_key: dict[str, CaseResult]) -> None:
    print("Targets")
    checks = [
        ("append_os_b1000", "append 1,000-record batches, OS", "records/s", TARGET_APPEND_BATCHED, "records"),
        ("read_warm", "sequential read of whole batches (warm)", "records/s", TARGET_READ_SEQUENTIAL, "records"),
        ("append_always_b1_t8", "ALWAYS, 8 threads, 1-record appends", "appends/s", TARGET_ALWAYS_8_THREADS, "calls"),
    ]
    for key, label, unit, target, kind in checks:
        r = by_key.get(key)
        if r is None:
            print(f"  {label:<44} >= {target:>10,} {unit:<9}  NOT RUN")
            continue
        value = r.records_per_s if kind == "records" else r.calls_per_s
        verdict = "PASS" if value >= target else "MISS"
        print(f"  {label:<44} >= {target:>10,} {unit:<9}  measured {value:>12,.0f}  {verdict}")
    print()


def _print_derived(by_key: dict[str, CaseResult], fsync: dict[str, float] | None) -> None:
    """A few numbers computed from the rows above, so nobody has to do the arithmetic."""
    lines = []
    one = by_key.get("append_os_b1")
    if one and one.calls:
        lines.append(f"fixed cost of one append call (1-record batches, OS): {1e6 / one.calls_per_s:.2f} us")
    big = by_key.get("append_os_b1000")
    if big and big.calls:
        lines.append(
            f"append of a {BIG_BATCH:,}-record batch (OS): {1e6 / big.calls_per_s:,.0f} us per call, "
            f"{1e9 / big.records_per_s:,.0f} ns per record"
        )
    enc = by_key.get("encode_0")
    if enc and big and enc.records and big.records:
        serial = 1.0 / (1.0 / enc.records_per_s + 1.0 / big.records_per_s)
        lines.append(
            f"Python encode (build_batch) is {big.records_per_s / enc.records_per_s:,.1f}x slower than the "
            f"append of the same batch; encode + append in one thread: {serial:,.0f} records/s"
        )
    a1 = by_key.get("append_always_b1_t1")
    if a1 and fsync:
        lines.append(
            f"ALWAYS, 1 thread: p50 {_fmt_ns(a1.p50_ns)} per append against a bare fdatasync median of "
            f"{_fmt_ns(fsync['append_median'])} (appending write)"
        )
    a8 = by_key.get("append_always_b1_t8")
    if a1 and a8 and a1.calls:
        lines.append(f"group commit: 8 threads give {a8.calls_per_s / a1.calls_per_s:,.2f}x the appends/s of 1 thread")
    warm, reopened = by_key.get("read_warm"), by_key.get("read_reopen")
    if warm and reopened:
        lines.append(
            f"first read after reopen (CRC32C of every batch) runs at {reopened.stored_mb_s:,.0f} MB/s stored, "
            f"{warm.stored_mb_s / reopened.stored_mb_s:,.1f}x slower than a warm read"
        )
    dec = by_key.get("read_records")
    if warm and dec and dec.records:
        lines.append(f"read_records (Python decode) is {warm.records_per_s / dec.records_per_s:,.0f}x slower than read")
    if not lines:
        return
    print("Derived")
    for line in lines:
        print(f"  {line}")
    print()


def _print_raw(rows: list[tuple[int, dict[str, float]]], settings: Settings) -> None:
    print(
        f"Raw write path: {settings.raw_total_bytes // MIB} MiB per run into a fresh file, MB/s, "
        f"best of {settings.raw_repeats}; no fsync (page cache only)"
    )
    if not rows:
        print("  not run")
        return
    names = list(rows[0][1])
    print(f"  {'chunk':>7} " + " ".join(f"{n:>21}" for n in names) + f" {'mmap/pwrite (ftrunc)':>21}")
    for size, row in rows:
        ratio = row["mmap, ftruncated"] / row["pwrite, ftruncated"]
        print(
            f"  {size // KIB:>4} KiB "
            + " ".join(f"{_fmt_rate(row[n]):>21}" for n in names)
            + f" {ratio:>20.2f}x"
        )
    print(
        "  'mmap, ftruncated' includes ftruncate, mmap, the first-touch page faults and munmap;"
        " 'pages resident' is a second pass over the same mapping (memcpy + Python only)."
    )
    print()


# --------------------------------------------------------------------------- main


def _settings(args: argparse.Namespace) -> Settings:
    common = dict(
        segment_bytes=args.segment_mib * MIB,
        read_max_bytes=args.read_max_kib * KIB,
        fsync_samples=200,
        prime=not args.no_prime,
    )
    if args.quick:
        return Settings(
            quick=True,
            case_seconds=1.0,
            encode_seconds=0.5,
            read_log_max_bytes=192 * MIB,
            thread_join_slack_s=30.0,
            raw_total_bytes=32 * MIB,
            raw_repeats=1,
            prime_big_bytes=384 * MIB,
            unprimed_case=False,
            **common,
        )
    return Settings(
        quick=False,
        case_seconds=5.0,
        encode_seconds=2.0,
        read_log_max_bytes=1024 * MIB,
        thread_join_slack_s=60.0,
        raw_total_bytes=128 * MIB,
        raw_repeats=3,
        prime_big_bytes=1024 * MIB,
        unprimed_case=not args.no_prime,
        **common,
    )


def _default_parent() -> str:
    """The directory holding the checkout: same filesystem as the code, outside the source tree."""
    return str(_REPO_ROOT.parent)


@dataclass(frozen=True, slots=True)
class AppendCase:
    key: str
    name: str
    durability: object
    batch: bytes
    records_per_batch: int
    threads: int
    prime_bytes: int
    """0: no priming."""
    max_bytes: int = 1 << 62
    keep_open: bool = False
    """Keep the log open for the read cases."""
    seconds: float | None = None
    note: str = ""


_TABLE_ORDER = [
    "append_os_b1000",
    "append_os_b1000_unprimed",
    "encode_0",
    "encode_1",
    "append_os_b1",
    "append_always_b1_t1",
    "append_always_b1_t8",
    "append_always_b1000_t1",
    "append_always_b1000_t8",
    "read_warm",
    "read_reopen",
    "read_evicted",
    "read_records",
]

_IDLE_FOR_RECLAIM_S = 3.0
"""Idle time after which freed memory has gone back to the hypervisor (free page reporting waits 2 s)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (about 20 s)")
    parser.add_argument(
        "--dir",
        default=None,
        help=f"parent directory for the temporary data directory (default: {_default_parent()}); "
        "the filesystem under test",
    )
    parser.add_argument("--segment-mib", type=int, default=128, help="segment_bytes of the logs, in MiB")
    parser.add_argument("--read-max-kib", type=int, default=1024, help="max_bytes of each read call, in KiB")
    parser.add_argument(
        "--no-prime", action="store_true", help="do not prime the page cache before write-heavy cases"
    )
    parser.add_argument("--skip-raw", action="store_true", help="skip the pwrite-vs-mmap micro-benchmark")
    args = parser.parse_args(argv)
    settings = _settings(args)

    from logstore.storage.config import Durability  # after argparse so --help works without the log

    parent = args.dir or _default_parent()
    workdir = tempfile.mkdtemp(prefix="storage-bench-", dir=parent)
    by_key: dict[str, CaseResult] = {}
    raw_rows: list[tuple[int, dict[str, float]]] = []
    failures: list[str] = []
    fsync: dict[str, float] | None = None
    touch: dict[str, float] | None = None
    big_batch = b""
    started = time.perf_counter()

    def add(key: str, result: CaseResult) -> None:
        by_key[key] = result

    try:
        big_records = _records(BIG_BATCH)
        big_batch = build_batch(big_records)
        one_batch = build_batch(big_records[:1])

        _log(f"data directory {workdir}; measuring fdatasync")
        fsync = _fdatasync_cost(workdir, settings.fsync_samples)
        for n, r in enumerate(_bench_encode(settings)):
            add(f"encode_{n}", r)
        _log(f"idle {_IDLE_FOR_RECLAIM_S:g} s, then probing page-cache write speed")
        time.sleep(_IDLE_FOR_RECLAIM_S)
        touch = {
            "first": _prime_page_cache(workdir, 256 * MIB),
            "recycled": _prime_page_cache(workdir, 256 * MIB),
        }

        prime = settings.prime
        big = settings.prime_big_bytes if prime else 0
        read_log_prime = settings.read_log_max_bytes + 64 * MIB if prime else 0
        cases = []
        if settings.unprimed_case:
            cases.append(
                AppendCase(
                    "append_os_b1000_unprimed", "append 1,000-rec batches, OS, unprimed", Durability.OS,
                    big_batch, BIG_BATCH, 1, 0, max_bytes=512 * MIB, note=f"after {_IDLE_FOR_RECLAIM_S:g} s idle",
                )
            )
        cases += [
            AppendCase(
                "append_os_b1000", "append 1,000-rec batches, OS", Durability.OS, big_batch, BIG_BATCH, 1,
                read_log_prime, max_bytes=settings.read_log_max_bytes, keep_open=True,
            ),
            AppendCase(
                "append_os_b1", "append 1-rec batches, OS", Durability.OS, one_batch, 1, 1, 256 * MIB if prime else 0
            ),
            AppendCase(
                "append_always_b1_t1", "append 1-rec, ALWAYS, 1 thread", Durability.ALWAYS, one_batch, 1, 1,
                64 * MIB if prime else 0,
            ),
            AppendCase(
                "append_always_b1_t8", "append 1-rec, ALWAYS, 8 threads", Durability.ALWAYS, one_batch, 1, 8,
                64 * MIB if prime else 0,
            ),
            AppendCase(
                "append_always_b1000_t1", "append 1,000-rec, ALWAYS, 1 thread", Durability.ALWAYS,
                big_batch, BIG_BATCH, 1, big,
            ),
            AppendCase(
                "append_always_b1000_t8", "append 1,000-rec, ALWAYS, 8 threads", Durability.ALWAYS,
                big_batch, BIG_BATCH, 8, big,
            ),
        ]
        for i, case in enumerate(cases):
            directory = os.path.join(workdir, f"log-{i}-{case.key}")
            note = case.note
            if case.key == "append_os_b1000_unprimed":
                _log(f"idle {_IDLE_FOR_RECLAIM_S:g} s so freed memory goes back to the hypervisor")
                time.sleep(_IDLE_FOR_RECLAIM_S)
            if case.prime_bytes:
                mb_s = _prime_page_cache(workdir, case.prime_bytes)
                note = (note + ", " if note else "") + f"primed {case.prime_bytes // MIB} MiB at {mb_s:,.0f} MB/s"
            try:
                result, log = _bench_append(
                    case.name, directory, settings, case.durability, case.batch, case.records_per_batch,
                    case.threads, case.max_bytes, keep_open=case.keep_open, seconds=case.seconds, note=note,
                )
            except Exception as exc:  # noqa: BLE001 - report and go on with the other cases
                failures.append(f"{case.name}: {exc!r}")
                _log(f"FAILED {case.name}: {exc!r}")
                shutil.rmtree(directory, ignore_errors=True)
                continue
            add(case.key, result)
            if log is not None:
                try:
                    _bench_reads(log, directory, settings, case.durability, add)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    failures.append(f"read cases: {exc!r}")
                    _log(f"FAILED read cases: {exc!r}")
            shutil.rmtree(directory, ignore_errors=True)

        if not args.skip_raw:
            if prime:
                _prime_page_cache(workdir, 2 * settings.raw_total_bytes)
            raw_rows = _bench_raw_writes(workdir, settings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if fsync is not None:
        _print_machine(workdir, settings, fsync, len(big_batch), touch)
    _print_table([by_key[k] for k in _TABLE_ORDER if k in by_key])
    _print_targets(by_key)
    _print_derived(by_key, fsync)
    _print_raw(raw_rows, settings)
    if failures:
        print("Failures")
        for f in failures:
            print(f"  {f}")
        print()
    print(f"Total run time {time.perf_counter() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
