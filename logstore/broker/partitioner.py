"""Choosing a partition for a keyed record, exactly as Kafka's default partitioner does.

``partition_for_key(key, n)`` is ``(murmur2(key) & 0x7fffffff) % n``, the
formula of Kafka's ``BuiltInPartitioner.partitionForKey`` with
``Utils.murmur2`` and ``Utils.toPositive``.  Matching it bit for bit means a
key lands on the same partition whether a logstore client or a Kafka client
with the default partitioner chose it, so data keyed by a Kafka producer can
be moved here without reshuffling.

``murmur2`` is MurmurHash2 (32-bit) with Kafka's fixed seed ``0x9747b28c``,
computed in Java ``int`` arithmetic: every product wraps to 32 bits, shifts
are unsigned (``>>>``) and the result is returned as a signed 32-bit int.

What this module does not do: it does not choose partitions for records
without a key (the broker's job), and it offers no stability when the
partition count changes: raising the count moves most keys to another
partition, as in Kafka.  It is plain Python, a few microseconds per key;
callers route records one key at a time only when the producer did not name
a partition.
"""

from __future__ import annotations

from logstore.errors import InvalidArgument

__all__ = ["murmur2", "to_positive", "partition_for_key"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Kafka's ``Utils.murmur2``: the 32-bit MurmurHash2 of ``data`` as a signed int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    tail = length & ~3
    # Whole 4-byte little-endian words.
    for i in range(0, tail, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK32
        k ^= k >> _R
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    # The last 1 to 3 bytes (Java's fall-through switch on length % 4).
    remaining = length & 3
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK32
    # Final avalanche.
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit of a 32-bit int (not ``abs``)."""
    return number & 0x7FFFFFFF


def partition_for_key(key: bytes | bytearray | memoryview, num_partitions: int) -> int:
    """The partition, in ``[0, num_partitions)``, Kafka's default partitioner gives ``key``."""
    if num_partitions < 1:
        raise InvalidArgument(f"a topic needs at least 1 partition to place a key, got {num_partitions}")
    return to_positive(murmur2(key)) % num_partitions
