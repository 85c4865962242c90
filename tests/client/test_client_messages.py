"""Message as a value object: reader-made views and hand-made messages behave alike (no broker)."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle

import pytest

from logstore._proto.logstore.v1 import records_pb2
from logstore.client import Message
from logstore.client.messages import MessageBatch, record_messages
from logstore.client.reader import decode_batches, slice_batches


def _batch(base: int, records: list[records_pb2.Record], **kw: object) -> records_pb2.RecordBatch:
    return records_pb2.RecordBatch(base_offset=base, record_count=len(records), records=records, **kw)


def _decoded() -> list[Message]:
    records = [
        records_pb2.Record(timestamp_ms=5, key=b"k", value=b"v", headers=[records_pb2.Header(name="h", value=b"1")]),
        records_pb2.Record(timestamp_ms=6),
        records_pb2.Record(timestamp_ms=7, key=b"", value=b""),
    ]
    return decode_batches("t", 3, [_batch(40, records)])


def test_decoded_messages_equal_hand_made_ones_field_by_field() -> None:
    """A reader-made message equals, hashes and prints like Message(...) with the same seven fields."""
    got = _decoded()
    expected = [
        Message("t", 3, 40, 5, b"k", b"v", (("h", b"1"),)),
        Message("t", 3, 41, 6, None, None, ()),
        Message("t", 3, 42, 7, b"", b"", ()),
    ]
    assert got == expected
    assert [hash(m) for m in got] == [hash(m) for m in expected]
    assert [repr(m) for m in got] == [repr(m) for m in expected]
    assert repr(expected[1]) == (
        "Message(topic='t', partition=3, offset=41, timestamp_ms=6, key=None, value=None, headers=())"
    )
    assert got[0] != got[1] and got[1] != Message("t", 3, 41, 6, b"", None, ())
    assert len({*got, *expected}) == 3


def test_null_and_empty_key_and_value_stay_apart() -> None:
    """An absent key/value reads as None, a present empty one as b''."""
    with_values, nulls, empties = _decoded()
    assert (with_values.key, with_values.value, with_values.headers) == (b"k", b"v", (("h", b"1"),))
    assert (nulls.key, nulls.value, nulls.headers) == (None, None, ())
    assert (empties.key, empties.value) == (b"", b"")


def test_copy_and_pickle_give_standalone_equal_messages() -> None:
    """copy, deepcopy and pickle give equal messages that no longer hold the received record."""
    message = _decoded()[0]
    for other in (copy.copy(message), copy.deepcopy(message), pickle.loads(pickle.dumps(message))):
        assert other == message and type(other) is Message
        assert all(isinstance(item, (str, int, bytes, tuple, type(None))) for item in tuple.__iter__(other))


def test_message_is_read_only_unordered_and_not_a_sequence() -> None:
    """Like the frozen dataclass it replaced: no setting, no ordering, no unpacking."""
    message = Message("t", 0, 1, 2, None, b"v")
    with pytest.raises(AttributeError):
        message.value = b"x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        _ = message < message  # type: ignore[operator]
    with pytest.raises(TypeError):
        topic, *_rest = message  # type: ignore[misc]
    assert message != ("t", 0, 1, None, 2, None, b"v", ()) and not ("t", 0, 1, None, 2, None, b"v", ()) == message
    assert bool(message)


def test_dataclass_helpers_and_match_keep_working() -> None:
    """dataclasses.fields/asdict/replace and positional match patterns see the seven fields."""
    message = _decoded()[0]
    assert [f.name for f in dataclasses.fields(Message)] == [
        "topic", "partition", "offset", "timestamp_ms", "key", "value", "headers",
    ]  # fmt: skip
    assert dataclasses.asdict(message) == {
        "topic": "t", "partition": 3, "offset": 40, "timestamp_ms": 5,
        "key": b"k", "value": b"v", "headers": (("h", b"1"),),
    }  # fmt: skip
    assert dataclasses.replace(message, value=b"w") == Message("t", 3, 40, 5, b"k", b"w", (("h", b"1"),))
    match message:
        case Message(topic, partition, offset):
            assert (topic, partition, offset) == ("t", 3, 40)
        case _:
            pytest.fail("a Message did not match its own class pattern")


def test_slice_batches_cuts_only_the_edge_batches() -> None:
    """Range [3, 12) over batches [0,5) [5,10) [10,15): the middle batch stays whole, the edges are cut."""
    batches = [_batch(b, [records_pb2.Record(value=b"%d" % i) for i in range(b, b + 5)]) for b in (0, 5, 10)]
    got = slice_batches("t", 1, batches, 3, 12)
    assert [(b.offset, len(b), b.next_offset) for b in got] == [(3, 2, 5), (5, 5, 10), (10, 2, 12)]
    assert [r.value for b in got for r in b.records] == [b"%d" % i for i in range(3, 12)]
    assert [m.offset for m in got[0]] == [3, 4] and all(isinstance(m, Message) for m in got[2])


def test_log_append_time_batch_gives_every_message_its_time() -> None:
    """A MessageBatch with log_append_time_ms overrides the records' own timestamps."""
    batch = MessageBatch("t", 0, 7, [records_pb2.Record(timestamp_ms=1), records_pb2.Record(timestamp_ms=2)], 99)
    assert [(m.offset, m.timestamp_ms) for m in batch] == [(7, 99), (8, 99)]


def test_record_messages_view_records_by_position_and_stop_with_the_offsets() -> None:
    """Message i views records[i] with offsets[i]; the messages end when the offsets do."""
    records = [records_pb2.Record(value=b"a"), records_pb2.Record(value=b"b"), records_pb2.Record(value=b"c")]
    got = list(record_messages("t", 0, iter([5, 6]), records))
    assert [(m.offset, m.value) for m in got] == [(5, b"a"), (6, b"b")]


def test_messages_consumed_one_at_a_time_leave_the_collector_idle() -> None:
    """Iterating a big batch without keeping the messages triggers no garbage collection."""
    batch = _batch(0, [records_pb2.Record(value=b"x")] * 20_000)
    (whole,) = slice_batches("t", 0, [batch])
    collections: list[int] = []
    callback = lambda phase, info: collections.append(info["generation"])  # noqa: E731
    gc.collect()
    gc.callbacks.append(callback)
    try:
        count = sum(1 for _ in whole)
    finally:
        gc.callbacks.remove(callback)
    assert count == 20_000
    assert collections == []
