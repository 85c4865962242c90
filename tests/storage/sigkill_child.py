"""Writer process for the SIGKILL recovery test (tests/storage/test_recovery.py).

Usage: python sigkill_child.py DIRECTORY CHILD_ID

Opens the log with Durability.ALWAYS, prints ``ready START END`` once open,
then appends forever, printing ``ack BASE COUNT CHILD_ID SEQ`` (and flushing
stdout) only after each append has returned.  It never exits on its own:
the parent kills it with SIGKILL.
"""

from __future__ import annotations

import sys

from logstore.storage.config import Durability, LogConfig
from logstore.storage.log import PartitionLog
from logstore.storage.records import Record

CONFIG = LogConfig(
    segment_bytes=16 * 1024,
    index_interval_bytes=256,
    index_max_bytes=4096,
    retention_ms=-1,
    max_batch_bytes=16 * 1024,
    durability=Durability.ALWAYS,
)


def value_for(child: int, seq: int) -> bytes:
    """The value of the writer ``child``'s record number ``seq``."""
    return f"{child}:{seq}:".encode() + b"x" * ((seq * 37 + child) % 300)


def main() -> None:
    directory, child = sys.argv[1], int(sys.argv[2])
    log = PartitionLog.open(directory, config=CONFIG)
    out = sys.stdout
    out.write(f"ready {log.log_start_offset} {log.log_end_offset}\n")
    out.flush()
    seq = 0
    while True:
        n = 1 + seq % 4
        records = [Record(key=str(child).encode(), value=value_for(child, seq + j)) for j in range(n)]
        base = log.append_records(records)
        out.write(f"ack {base} {n} {child} {seq}\n")
        out.flush()
        seq += n


if __name__ == "__main__":
    main()
