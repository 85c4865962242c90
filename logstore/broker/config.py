"""Topic and broker configuration (domain values, no I/O)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from logstore.errors import InvalidArgument
from logstore.storage.batch import HEADER_SIZE
from logstore.storage.config import Durability, LogConfig

__all__ = ["TopicConfig", "BrokerConfig", "MAX_PARTITIONS"]

MAX_BATCH_BYTES = 64 << 20
"""Upper bound on max_batch_bytes: the gRPC server accepts messages up to this size."""

MAX_PARTITIONS = 10_000
"""Upper bound on a topic's partition count (each one is a directory and open files)."""

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicConfig:
    """Per-topic settings, persisted with the topic.  ``-1`` means unlimited."""

    retention_ms: int = 7 * _DAY_MS
    retention_bytes: int = -1
    """Per partition, as in Kafka."""
    segment_bytes: int = 256 << 20
    segment_ms: int = 7 * _DAY_MS
    durability: Durability = Durability.OS
    flush_interval_ms: int = 1000
    max_record_bytes: int = 1 << 20
    """Largest single record (its encoded size).  Larger records get INVALID_ARGUMENT."""
    max_batch_bytes: int = 16 << 20
    """Largest share of one produce request for one partition (one stored batch)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "durability", Durability(self.durability))
        if not 1 <= self.max_record_bytes <= self.max_batch_bytes <= MAX_BATCH_BYTES:
            raise InvalidArgument(
                f"need 1 <= max_record_bytes <= max_batch_bytes <= {MAX_BATCH_BYTES}, got "
                f"max_record_bytes={self.max_record_bytes}, max_batch_bytes={self.max_batch_bytes}"
            )
        self.log_config()  # validates the rest with the storage layer's rules

    def log_config(self) -> LogConfig:
        """The storage configuration of each partition of the topic."""
        return LogConfig(
            segment_bytes=self.segment_bytes,
            segment_ms=self.segment_ms,
            retention_ms=self.retention_ms,
            retention_bytes=self.retention_bytes,
            durability=self.durability,
            flush_interval_ms=self.flush_interval_ms,
            max_batch_bytes=self.max_batch_bytes + HEADER_SIZE,
        )

    def with_overrides(self, **overrides: Any) -> "TopicConfig":
        """A copy with the given (non-None) fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["durability"] = self.durability.value
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TopicConfig":
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    """Broker-wide settings; loaded from the optional ``--config`` JSON file."""

    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    """Settings for topics created without explicit values."""
    max_fetch_bytes: int = 16 << 20
    """Upper bound on one Fetch/Subscribe response."""
    max_wait_ms: int = 30_000
    """Upper bound on a Fetch long-poll."""
    scheduler_interval_ms: int = 500
    """How often retention and interval flushes run."""
    checkpoint_interval_ms: int = 60_000
    """How often recovery points are checkpointed."""

    @classmethod
    def from_file(cls, path: str) -> "BrokerConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"cannot read config file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidArgument(f"config file {path} must hold a JSON object")
        topic = TopicConfig.from_json(data.pop("topic_defaults", {}) or {})
        known = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"config file {path}: unknown settings {sorted(unknown)}")
        return cls(topic_defaults=topic, **data)
