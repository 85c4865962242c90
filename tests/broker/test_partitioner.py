"""Kafka-compatible key partitioning: murmur2 pinned to Kafka's and librdkafka's own test vectors."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore.broker.partitioner import murmur2, partition_for_key, to_positive
from logstore.errors import InvalidArgument

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (apache/kafka, clients/src/test/java),
# checked against the Kafka source: input -> Utils.murmur2 as a Java int.
KAFKA_UTILS_TEST = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# librdkafka src/rdmurmur2.c unittest_murmur2 ("java_murmur2_results"), as unsigned bit
# patterns.  Between them the inputs end on every tail length 0-3 and include the empty key.
_UNALIGNED = b"PreAmbleWillBeRemoved,ThePrePartThatIs"
LIBRDKAFKA_TEST = [
    (b"kafka", 0xD067CF64),
    (b"giberish123456789", 0x8F552B0C),
    (b"1234", 0x9FC97B14),
    (b"234", 0xE7C009CA),
    (b"34", 0x873930DA),
    (b"4", 0x5A4B5CA1),
    (_UNALIGNED, 0x78424F1C),
    (_UNALIGNED[1:], 0x4A62B377),
    (_UNALIGNED[2:], 0xE0E4E09E),
    (_UNALIGNED[3:], 0x62B8B43F),
    (b"", 0x106E08D9),
]

# toPositive(murmur2(key)) as generated with the JVM Kafka client 1.0.0 (the Go kafkautil
# murmur2 test), including one binary key.
KAFKA_TO_POSITIVE = [
    (b"21", 1173551340),
    (b"foobar", 1357151166),
    (bytes([12, 42, 56, 24, 109, 111]), 274204207),
    (b"a-little-bit-long-string", 1161502112),
    (b"a-little-bit-longer-string", 661178819),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 2088585677),
    (b"abc", 479470107),
]

# Where keys land: BuiltInPartitioner.partitionForKey = toPositive(murmur2(key)) % numPartitions,
# worked out by hand from the toPositive values above, for 3, 7, 12 and 100 partitions.
KEY_LANDS_IN = [
    (b"21", {3: 0, 7: 3, 12: 0, 100: 40}),
    (b"foobar", {3: 0, 7: 0, 12: 6, 100: 66}),
    (b"a-little-bit-long-string", {3: 2, 7: 1, 12: 8, 100: 12}),
    (b"a-little-bit-longer-string", {3: 2, 7: 0, 12: 11, 100: 19}),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", {3: 2, 7: 3, 12: 5, 100: 77}),
    (b"abc", {3: 0, 7: 4, 12: 3, 100: 7}),
]


@pytest.mark.parametrize(("key", "expected"), KAFKA_UTILS_TEST)
def test_murmur2_matches_kafka_utils_test(key: bytes, expected: int) -> None:
    """murmur2 returns exactly Kafka's Utils.murmur2 value, as a signed 32-bit int."""
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected_bits"), LIBRDKAFKA_TEST)
def test_murmur2_matches_librdkafka_vectors(key: bytes, expected_bits: int) -> None:
    """murmur2 agrees with librdkafka's Java-compatible vectors, including every tail length."""
    result = murmur2(key)
    assert -(1 << 31) <= result < (1 << 31)
    assert result & 0xFFFFFFFF == expected_bits


@pytest.mark.parametrize(("key", "expected"), KAFKA_TO_POSITIVE)
def test_to_positive_of_murmur2_matches_jvm_client(key: bytes, expected: int) -> None:
    """to_positive(murmur2(key)) equals the JVM client's value (sign bit cleared, not abs)."""
    assert to_positive(murmur2(key)) == expected


def test_to_positive_clears_only_the_sign_bit() -> None:
    """to_positive masks with 0x7fffffff like Kafka, which differs from abs() for negatives."""
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(1 << 31)) == 0
    assert to_positive(5) == 5


@pytest.mark.parametrize(("key", "by_count"), KEY_LANDS_IN)
def test_key_lands_in_the_kafka_partition(key: bytes, by_count: dict[int, int]) -> None:
    """partition_for_key puts a key in the partition a Kafka default partitioner would."""
    for num_partitions, expected in by_count.items():
        assert partition_for_key(key, num_partitions) == expected


def test_one_partition_takes_every_key() -> None:
    """With a single partition every key, the empty key included, goes to partition 0."""
    assert {partition_for_key(k, 1) for k, _ in KAFKA_UTILS_TEST + LIBRDKAFKA_TEST} == {0}


@pytest.mark.parametrize("count", [0, -1])
def test_partition_count_below_one_is_rejected(count: int) -> None:
    """A partition count below 1 raises InvalidArgument instead of dividing by zero."""
    with pytest.raises(InvalidArgument, match="at least 1 partition"):
        partition_for_key(b"k", count)


def _java_murmur2(data: bytes) -> int:
    """An independent transcription in Java int semantics, for differential testing.

    Uses ctypes.c_int32 for wrapping signed arithmetic, Java's signed bytes masked with
    0xff, and ``>>>`` as a shift of the unsigned bit pattern.
    """

    def i32(x: int) -> int:
        return ctypes.c_int32(x).value

    def ushr(x: int, n: int) -> int:
        return i32((x & 0xFFFFFFFF) >> n)

    signed = [b - 256 if b > 127 else b for b in data]  # Java byte[]
    length = len(signed)
    m = i32(0x5BD1E995)
    h = i32(i32(0x9747B28C) ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = i32(
            (signed[i4] & 0xFF)
            + ((signed[i4 + 1] & 0xFF) << 8)
            + ((signed[i4 + 2] & 0xFF) << 16)
            + ((signed[i4 + 3] & 0xFF) << 24)
        )
        k = i32(k * m)
        k = i32(k ^ ushr(k, 24))
        k = i32(k * m)
        h = i32(h * m)
        h = i32(h ^ k)
    rest = length % 4
    base = length & ~3
    if rest == 3:
        h = i32(h ^ ((signed[base + 2] & 0xFF) << 16))
    if rest >= 2:
        h = i32(h ^ ((signed[base + 1] & 0xFF) << 8))
    if rest >= 1:
        h = i32(h ^ (signed[base] & 0xFF))
        h = i32(h * m)
    h = i32(h ^ ushr(h, 13))
    h = i32(h * m)
    h = i32(h ^ ushr(h, 15))
    return h


def test_reference_transcription_agrees_with_the_vectors() -> None:
    """The differential reference itself reproduces Kafka's vectors, so it can be trusted."""
    for key, expected in KAFKA_UTILS_TEST:
        assert _java_murmur2(key) == expected


@given(st.binary(max_size=64))
def test_murmur2_matches_java_semantics_on_any_bytes(key: bytes) -> None:
    """For arbitrary bytes (high bytes included) murmur2 equals the Java-semantics reference."""
    assert murmur2(key) == _java_murmur2(key)


@given(st.binary(max_size=32), st.integers(min_value=1, max_value=10_000))
def test_partition_is_in_range_and_accepts_buffer_types(key: bytes, num_partitions: int) -> None:
    """partition_for_key lies in [0, n) and gives the same answer for bytes, bytearray and memoryview."""
    p = partition_for_key(key, num_partitions)
    assert 0 <= p < num_partitions
    assert partition_for_key(bytearray(key), num_partitions) == p
    assert partition_for_key(memoryview(key), num_partitions) == p
