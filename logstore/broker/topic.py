"""A topic: its persisted metadata and its partitions.

On disk a topic is one directory under ``<data-dir>/topics/``::

    topics/<name>/topic.json      metadata checkpoint (name, partition count, config)
    topics/<name>/0/              partition 0's log (see logstore.storage.log)
    topics/<name>/1/              ...

``topic.json`` is written with the storage layer's checkpoint routine
(temp file, fsync, rename, directory fsync, CRC-suffixed), so it is either
the old or the new version after a crash.  Partitions are only ever added.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from logstore.broker.config import TopicConfig
from logstore.broker.producerstate import ProducerStates
from logstore.clock import Clock
from logstore.errors import NotFound
from logstore.storage.checkpoint import read_checkpoint, write_checkpoint
from logstore.storage.log import PartitionLog

_LOGGER = logging.getLogger(__name__)

__all__ = ["TopicMetadata", "Partition", "Topic", "METADATA_FILE"]

METADATA_FILE = "topic.json"


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """What is persisted about a topic."""

    name: str
    partition_count: int
    config: TopicConfig
    created_ms: int

    def to_line(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "partition_count": self.partition_count,
                "config": self.config.to_json(),
                "created_ms": self.created_ms,
            },
            sort_keys=True,
        )

    @classmethod
    def from_line(cls, line: str) -> "TopicMetadata":
        d = json.loads(line)
        return cls(d["name"], int(d["partition_count"]), TopicConfig.from_json(d["config"]), int(d["created_ms"]))

    def save(self, directory: Path) -> None:
        write_checkpoint(directory / METADATA_FILE, self.to_line())

    @classmethod
    def load(cls, directory: Path) -> "TopicMetadata | None":
        line = read_checkpoint(directory / METADATA_FILE)
        return None if line is None else cls.from_line(line)


class Partition:
    """One partition's log plus a condition that long-polling readers wait on."""

    __slots__ = ("topic", "index", "log", "_cond", "_listeners", "producer_lock", "producer_states")

    def __init__(self, topic: str, index: int, log: PartitionLog) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.producer_lock = threading.Lock()
        """Held across the check, append and record of an idempotent append (see ``idempotence``)."""
        self.producer_states: ProducerStates | None = None
        """The idempotent producers' state, loaded at the first idempotent append."""
        self._cond = threading.Condition()
        self._listeners: tuple[Callable[[], None], ...] = ()

    def notify_appended(self) -> None:
        """Wake every reader waiting for data past the old end, and call the listeners."""
        with self._cond:
            self._cond.notify_all()
        for listener in self._listeners:
            listener()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every append (and wake).  It must be quick and must not raise."""
        with self._cond:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``; a listener never added is ignored."""
        with self._cond:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def wait_for_data(self, offset: int, timeout_s: float) -> bool:
        """Block until the log end passes ``offset`` or the timeout; report which."""
        if self.log.log_end_offset > offset:
            return True
        with self._cond:
            if self.log.log_end_offset > offset or self.log.closed:
                return self.log.log_end_offset > offset
            self._cond.wait(timeout_s)
        return self.log.log_end_offset > offset

    def wake(self) -> None:
        """Wake waiters so they re-check their own stop conditions (cancel, shutdown)."""
        self.notify_appended()


class Topic:
    """A topic's metadata and open partitions."""

    def __init__(self, directory: Path, metadata: TopicMetadata, clock: Clock) -> None:
        self.directory = directory
        self.metadata = metadata
        self._clock = clock
        self.partitions: list[Partition] = []
        self.lock = threading.Lock()
        """Serialises metadata changes (adding partitions)."""
        self._round_robin = 0

    @property
    def name(self) -> str:
        return self.metadata.name

    def open_partitions(self) -> None:
        config = self.metadata.config.log_config()
        for index in range(len(self.partitions), self.metadata.partition_count):
            log = PartitionLog.open(self.directory / str(index), config, self._clock)
            self.partitions.append(Partition(self.name, index, log))

    def partition(self, index: int) -> Partition:
        partitions = self.partitions
        if not 0 <= index < len(partitions):
            raise NotFound(
                f"topic {self.name!r} has partitions 0 to {len(partitions) - 1}; "
                f"partition {index} does not exist"
            )
        return partitions[index]

    def next_sticky_partition(self) -> int:
        """Partition for a request's keyless records: rotates request by request."""
        n = len(self.partitions)
        self._round_robin = (self._round_robin + 1) % n
        return self._round_robin

    def close(self) -> None:
        for p in self.partitions:
            p.log.close()
            p.wake()
