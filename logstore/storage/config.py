"""Per-log configuration."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from logstore.errors import InvalidArgument

__all__ = ["Durability", "LogConfig"]


class Durability(str, enum.Enum):
    """When appended bytes are forced to disk.

    ALWAYS    append() returns only after an fdatasync covers the batch.
              Concurrent appenders share one fdatasync (group commit).
    INTERVAL  fdatasync once ``flush_interval_messages`` records were appended
              or ``flush_interval_ms`` elapsed since the last one, whichever
              comes first (checked on append and by ``maybe_flush``).
    OS        leave it to the page cache; fdatasync only on roll and close.
    """

    ALWAYS = "always"
    INTERVAL = "interval"
    OS = "os"


_MiB = 1 << 20
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Tunables of one partition log.  ``-1`` means "no limit" for retention."""

    segment_bytes: int = 1 << 30
    """Roll to a new segment once the active one would grow past this."""
    segment_ms: int = 7 * _DAY_MS
    """Roll once the active segment's first append is this old."""
    index_interval_bytes: int = 4096
    """Add a sparse offset-index entry about every this many log bytes."""
    index_max_bytes: int = 10 * _MiB
    """Preallocated size of each index file; a full index rolls the segment."""
    retention_ms: int = 7 * _DAY_MS
    """Delete sealed segments whose newest record is older than this."""
    retention_bytes: int = -1
    """Delete the oldest sealed segments while the log is larger than this."""
    durability: Durability = Durability.OS
    flush_interval_ms: int = 1000
    flush_interval_messages: int = 10_000
    max_batch_bytes: int = 4 * _MiB
    """Largest batch (header included) the log accepts.  A batch larger than
    ``segment_bytes`` gets a segment of its own."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "durability", Durability(self.durability))
        if not 1024 <= self.segment_bytes <= (1 << 31) - 1:
            raise InvalidArgument(
                f"segment_bytes must be between 1024 and 2147483647, got {self.segment_bytes}"
            )
        if self.segment_ms < 1:
            raise InvalidArgument(f"segment_ms must be positive, got {self.segment_ms}")
        if self.index_interval_bytes < 1:
            raise InvalidArgument(f"index_interval_bytes must be positive, got {self.index_interval_bytes}")
        if self.index_max_bytes < 64:
            raise InvalidArgument(f"index_max_bytes must be at least 64, got {self.index_max_bytes}")
        for name in ("retention_ms", "retention_bytes"):
            value = getattr(self, name)
            if value < -1 or value == 0:
                raise InvalidArgument(f"{name} must be positive or -1 (unlimited), got {value}")
        if self.flush_interval_ms < 1 or self.flush_interval_messages < 1:
            raise InvalidArgument("flush_interval_ms and flush_interval_messages must be positive")
        if not 64 <= self.max_batch_bytes <= (1 << 31) - 1:
            raise InvalidArgument(
                f"max_batch_bytes must be between 64 and 2147483647, got {self.max_batch_bytes}"
            )
