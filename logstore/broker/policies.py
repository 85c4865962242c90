"""Retry policies of consumer groups, kept durably in the internal topic ``__group_policies``.

One partition; every ``set``/``clear`` is one record appended with an
fdatasync before it returns, and ``open`` replays the topic into memory (the
last record for a key wins, a null value removes the key).

Record layout: key = ``<group>/<topic>`` in ASCII (neither name can hold
``/``); value = the policy as UTF-8 JSON (``RetryPolicy.to_json``), or null
to clear it.

What this does not guarantee: the topic is never compacted, so it grows by
one small record per change (policies change rarely).  A ``set`` that raised
may or may not be stored.  Malformed records are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import threading

from logstore.broker.broker import Acks, Broker
from logstore.broker.config import TopicConfig
from logstore.broker.names import validate_group_name, validate_topic_name
from logstore.broker.retry import RetryPolicy
from logstore.errors import AlreadyExists, CorruptBatch, InvalidArgument
from logstore.storage.batch import HEADER
from logstore.storage.config import Durability
from logstore.storage.records import Record, decode_records, encode_records

_LOGGER = logging.getLogger(__name__)

__all__ = ["POLICIES_TOPIC", "PolicyStore"]

POLICIES_TOPIC = "__group_policies"
_CONFIG = TopicConfig(retention_ms=-1, retention_bytes=-1, durability=Durability.ALWAYS)


class PolicyStore:
    """``(group, topic) -> RetryPolicy``, durable.  Build with ``PolicyStore.open``.  Thread-safe."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._lock = threading.Lock()
        self._policies: dict[tuple[str, str], RetryPolicy] = {}

    @classmethod
    def open(cls, broker: Broker) -> "PolicyStore":
        try:
            broker.create_topic(POLICIES_TOPIC, 1, _CONFIG, internal=True)
        except AlreadyExists:
            pass
        store = cls(broker)
        store._replay()
        return store

    def _replay(self) -> None:
        log = self._broker.partition(POLICIES_TOPIC, 0).log
        offset, end = log.log_start_offset, log.log_end_offset
        while offset < end:
            batches = log.read(offset, 1 << 20)
            if not batches:
                break
            for batch in batches:
                base, length, _m, _c, _a, count = HEADER.unpack_from(batch, 0)[:6]
                offset = base + count
                try:
                    for _i, record in decode_records(batch, HEADER.size, length):
                        self._apply(record)
                except CorruptBatch as exc:
                    _LOGGER.error("%s batch at %d: %s; skipped", POLICIES_TOPIC, base, exc)
        _LOGGER.info("replayed %s: %d retry polic(ies)", POLICIES_TOPIC, len(self._policies))

    def _apply(self, record: Record) -> None:
        try:
            group, _, topic = (record.key or b"").decode("ascii").partition("/")
            if not group or not topic:
                raise ValueError("bad key")
            if record.value is None:
                self._policies.pop((group, topic), None)
            else:
                self._policies[(group, topic)] = RetryPolicy.from_json(json.loads(record.value))
        except (ValueError, KeyError, TypeError, InvalidArgument, RecursionError, OverflowError) as exc:
            _LOGGER.warning("%s: a malformed policy record was skipped: %s", POLICIES_TOPIC, exc)

    def get(self, group: str, topic: str) -> RetryPolicy | None:
        with self._lock:
            return self._policies.get((group, topic))

    def pairs(self) -> list[tuple[str, str]]:
        """Every (group, topic) with a policy."""
        with self._lock:
            return sorted(self._policies)

    def of_group(self, group: str) -> dict[str, RetryPolicy]:
        """Every policy of ``group``, by topic."""
        with self._lock:
            return {t: p for (g, t), p in self._policies.items() if g == group}

    def set(self, group: str, topic: str, policy: RetryPolicy | None) -> None:
        """Store (or, with None, clear) the policy of ``group`` for ``topic``; return once on disk."""
        validate_group_name(group)
        validate_topic_name(topic)
        policy_check = policy.check_names if policy is not None else None
        if policy_check is not None:
            policy_check(topic, group)
        value = None if policy is None else json.dumps(policy.to_json(), sort_keys=True).encode("utf-8")
        now = self._broker.clock()
        encoded = encode_records([Record(key=f"{group}/{topic}".encode("ascii"), value=value, timestamp=now)])
        with self._lock:
            self._broker.append(POLICIES_TOPIC, 0, encoded, Acks.DURABLE, append_time_ms=now, internal=True)
            if policy is None:
                self._policies.pop((group, topic), None)
            else:
                self._policies[(group, topic)] = policy
