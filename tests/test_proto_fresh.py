"""The gRPC contract: generated code is fresh, every element is documented, and stored
record bytes splice into RecordBatch responses unchanged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given
from hypothesis import strategies as st

from logstore._proto.logstore.v1 import log_pb2, records_pb2
from logstore.storage.records import Record, decode_records, encode_records

REPO = Path(__file__).resolve().parent.parent
GEN_PROTO = REPO / "tools" / "gen-proto"
COMMITTED = REPO / "logstore" / "_proto"
PROTO_ROOT = REPO / "proto"


# --- freshness -----------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".pyi")
    }


def _versions(tree: dict[str, bytes]) -> set[str]:
    found = set()
    for content in tree.values():
        text = content.decode("utf-8", "replace")
        found.update(re.findall(r"^# Protobuf Python Version: (\S+)", text, re.MULTILINE))
        found.update(f"grpc {v}" for v in re.findall(r"^GRPC_GENERATED_VERSION = '([^']+)'", text, re.MULTILINE))
    return found


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """Regenerating with tools/gen-proto reproduces logstore/_proto byte for byte."""
    result = subprocess.run(
        [sys.executable, str(GEN_PROTO), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, f"tools/gen-proto failed:\n{result.stdout}\n{result.stderr}"
    fresh = _tree(tmp_path)
    committed = _tree(COMMITTED)
    assert fresh, "tools/gen-proto produced no files"
    problems = [
        f"{name}: {'missing' if name not in committed else 'not generated any more' if name not in fresh else 'differs'}"
        for name in sorted(set(fresh) | set(committed))
        if fresh.get(name) != committed.get(name)
    ]
    hint = ""
    if _versions(fresh) != _versions(committed):
        hint = (
            f"\n(the committed files were made by {sorted(_versions(committed))}, "
            f"the installed grpcio-tools makes {sorted(_versions(fresh))})"
        )
    assert not problems, (
        "logstore/_proto is stale; run tools/gen-proto and commit the result:\n  "
        + "\n  ".join(problems)
        + hint
    )


# --- documentation -------------------------------------------------------------------------


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "descriptors.pb"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "logstore" / "v1").glob("*.proto"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *protos,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _elements(file: descriptor_pb2.FileDescriptorProto):
    """Yield (source path, display name) for every service, RPC, message, field, oneof,
    enum and enum value of a file."""
    def enum(e, path, prefix):
        yield path, f"enum {prefix}{e.name}"
        for j, v in enumerate(e.value):
            yield path + (2, j), f"enum value {prefix}{e.name}.{v.name}"

    def message(m, path, prefix):
        name = prefix + m.name
        yield path, f"message {name}"
        for j, f in enumerate(m.field):
            yield path + (2, j), f"field {name}.{f.name}"
        for j, o in enumerate(m.oneof_decl):
            if not o.name.startswith("_"):  # synthetic oneofs of proto3 `optional` fields
                yield path + (8, j), f"oneof {name}.{o.name}"
        for j, n in enumerate(m.nested_type):
            yield from message(n, path + (3, j), name + ".")
        for j, e in enumerate(m.enum_type):
            yield from enum(e, path + (4, j), name + ".")

    for i, m in enumerate(file.message_type):
        yield from message(m, (4, i), "")
    for i, e in enumerate(file.enum_type):
        yield from enum(e, (5, i), "")
    for i, s in enumerate(file.service):
        yield (6, i), f"service {s.name}"
        for j, rpc in enumerate(s.method):
            yield (6, i, 2, j), f"rpc {s.name}.{rpc.name}"


def test_every_proto_element_has_a_comment(tmp_path: Path) -> None:
    """Every service, RPC, message, field, oneof, enum and enum value has a leading comment."""
    descriptors = _descriptor_set(tmp_path)
    assert {f.name for f in descriptors.file} >= {
        "logstore/v1/records.proto",
        "logstore/v1/log.proto",
        "logstore/v1/admin.proto",
    }
    missing = []
    checked = 0
    for file in descriptors.file:
        assert file.package == "logstore.v1", file.name
        comments = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
        for path, what in _elements(file):
            checked += 1
            if not comments.get(path):
                missing.append(f"{file.name}: {what}")
    assert checked > 100
    assert not missing, "undocumented proto elements:\n  " + "\n  ".join(missing)


def test_rpcs_document_their_status_codes(tmp_path: Path) -> None:
    """Each RPC comment names the gRPC status codes it returns."""
    codes = re.compile(r"\b(OK|NOT_FOUND|INVALID_ARGUMENT|OUT_OF_RANGE|ALREADY_EXISTS|RESOURCE_EXHAUSTED)\b")
    undocumented = []
    for file in _descriptor_set(tmp_path).file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for i, service in enumerate(file.service):
            for j, rpc in enumerate(service.method):
                text = comments.get((6, i, 2, j), "")
                if "Status codes" not in text or not codes.search(text):
                    undocumented.append(f"{service.name}.{rpc.name}")
    assert not undocumented, f"RPCs without a status-code section: {undocumented}"


# --- the splice contract -------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _spliced_batch(records: list[Record], base_offset: int, partition: int) -> bytes:
    """A RecordBatch as the broker builds it: header fields first, then the stored bytes as they are."""
    encoded = encode_records(records)
    header = (
        _int_field(2, base_offset)
        + _int_field(3, partition)
        + _int_field(4, encoded.max_timestamp)
        + _int_field(5, encoded.count)
        + _int_field(6, records_pb2.TIMESTAMP_TYPE_CREATE_TIME)
    )
    return header + encoded.data


def _assert_same_records(parsed: records_pb2.RecordBatch, records: list[Record], base_offset: int) -> None:
    assert len(parsed.records) == len(records)
    assert parsed.base_offset == base_offset
    for got, want in zip(parsed.records, records):
        assert got.timestamp_ms == want.timestamp
        assert got.HasField("key") == (want.key is not None)
        assert got.HasField("value") == (want.value is not None)
        if want.key is not None:
            assert got.key == want.key
        if want.value is not None:
            assert got.value == want.value
        assert [(h.name, h.value) for h in got.headers] == list(want.headers)


def test_record_field_numbers_match_the_storage_format() -> None:
    """Record, Header and RecordBatch.records keep the numbers and types the stored bytes use."""
    fd = records_pb2.Record.DESCRIPTOR.fields_by_name
    t = records_pb2.Record.DESCRIPTOR.fields_by_name["timestamp_ms"]
    assert 1 not in {f.number for f in records_pb2.Record.DESCRIPTOR.fields}
    assert (fd["timestamp_ms"].number, fd["timestamp_ms"].type) == (2, t.TYPE_INT64)
    assert (fd["key"].number, fd["key"].type, fd["key"].has_presence) == (3, t.TYPE_BYTES, True)
    assert (fd["value"].number, fd["value"].type, fd["value"].has_presence) == (4, t.TYPE_BYTES, True)
    assert (fd["headers"].number, fd["headers"].message_type.full_name) == (5, "logstore.v1.Header")
    hd = records_pb2.Header.DESCRIPTOR.fields_by_name
    assert (hd["name"].number, hd["name"].type, hd["value"].number, hd["value"].type) == (
        1,
        t.TYPE_STRING,
        2,
        t.TYPE_BYTES,
    )
    rb = records_pb2.RecordBatch.DESCRIPTOR.fields_by_name["records"]
    assert (rb.number, rb.message_type.full_name) == (1, "logstore.v1.Record")


def test_spliced_batch_parses_to_the_same_records() -> None:
    """Header fields followed by encode_records(...).data parse as a RecordBatch holding those records."""
    records = [
        Record(key=b"k1", value=b"v1", headers=(("trace", b"abc"), ("trace", b"")), timestamp=1_700_000_000_000),
        Record(key=None, value=b"no key"),
        Record(key=b"", value=None, timestamp=5),
        Record(key=b"\x00\xff", value=b"", headers=(("", b"\x00"), ("\u00e9t\u00e9", b"x" * 300)), timestamp=-1),
        Record(value=b"y" * 20_000, timestamp=(1 << 63) - 1),
    ]
    parsed = records_pb2.RecordBatch.FromString(_spliced_batch(records, base_offset=41, partition=3))
    assert (parsed.base_offset, parsed.partition, parsed.record_count) == (41, 3, 5)
    assert parsed.max_timestamp_ms == (1 << 63) - 1
    assert parsed.timestamp_type == records_pb2.TIMESTAMP_TYPE_CREATE_TIME
    _assert_same_records(parsed, records, base_offset=41)
    assert not parsed.records[1].HasField("key") and parsed.records[2].HasField("key")
    assert parsed.records[2].key == b"" and not parsed.records[2].HasField("value")


_records = st.lists(
    st.builds(
        Record,
        key=st.none() | st.binary(max_size=40),
        value=st.none() | st.binary(max_size=300),
        headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=3).map(tuple),
        timestamp=st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    ),
    min_size=1,
    max_size=20,
)


@given(_records, st.integers(min_value=0, max_value=(1 << 62)), st.integers(min_value=0, max_value=1 << 20))
def test_any_spliced_batch_parses_to_the_same_records(records: list[Record], base_offset: int, partition: int) -> None:
    """For any records, stored bytes spliced after the batch header parse back to exactly those records."""
    parsed = records_pb2.RecordBatch.FromString(_spliced_batch(records, base_offset, partition))
    assert (parsed.base_offset, parsed.partition, parsed.record_count) == (base_offset, partition, len(records))
    _assert_same_records(parsed, records, base_offset)


@given(_records)
def test_stock_encoded_records_decode_with_the_storage_decoder(records: list[Record]) -> None:
    """A RecordBatch's records serialized by stock protobuf decode with storage's decode_records."""
    batch = records_pb2.RecordBatch()
    for i, r in enumerate(records):
        pr = batch.records.add(timestamp_ms=r.timestamp)
        if r.key is not None:
            pr.key = r.key
        if r.value is not None:
            pr.value = r.value
        for name, value in r.headers:
            pr.headers.add(name=name, value=value)
    decoded = list(decode_records(batch.SerializeToString()))
    assert decoded == list(enumerate(records))


def test_fetch_response_of_spliced_batches_parses() -> None:
    """A FetchResponse framed around several spliced batches parses with the stock stubs."""
    first = [Record(key=b"a", value=b"1"), Record(key=b"b", value=b"2")]
    second = [Record(key=None, value=b"3", headers=(("h", b"v"),))]
    body = (
        _len_field(1, _spliced_batch(first, base_offset=10, partition=0))
        + _len_field(1, _spliced_batch(second, base_offset=12, partition=0))
        + _int_field(2, 4)
        + _int_field(3, 13)
    )
    response = log_pb2.FetchResponse.FromString(body)
    assert (response.log_start_offset, response.log_end_offset) == (4, 13)
    assert [b.base_offset for b in response.batches] == [10, 12]
    _assert_same_records(response.batches[0], first, base_offset=10)
    _assert_same_records(response.batches[1], second, base_offset=12)
    last = response.batches[-1]
    assert last.base_offset + last.record_count == response.log_end_offset


def test_produce_stream_response_reports_a_per_request_error() -> None:
    """A ProduceStreamResponse carries either a ProduceResponse or a Status, never both."""
    ok = log_pb2.ProduceStreamResponse(
        request_id=7,
        response=log_pb2.ProduceResponse(
            partitions=[log_pb2.PartitionProduceResult(partition=2, base_offset=100, record_count=3)]
        ),
    )
    failed = log_pb2.ProduceStreamResponse(request_id=8, error=log_pb2.Status(code=5, message="no topic"))
    assert ok.WhichOneof("result") == "response"
    assert failed.WhichOneof("result") == "error"
    failed.response.SetInParent()
    assert failed.WhichOneof("result") == "response" and not failed.HasField("error")


@pytest.mark.parametrize(
    ("message", "numbers"),
    [
        (records_pb2.RecordBatch, {7, 8, 9}),
        (records_pb2.ProducerRecord, {1, 7, 8}),
    ],
)
def test_reserved_numbers_stay_reserved(message, numbers: set[int]) -> None:
    """Field numbers kept for idempotence and delayed delivery are reserved, not taken by a field."""
    proto = descriptor_pb2.DescriptorProto()
    message.DESCRIPTOR.CopyToProto(proto)
    reserved = {n for r in proto.reserved_range for n in range(r.start, r.end)}
    assert numbers <= reserved
    assert not numbers & {f.number for f in message.DESCRIPTOR.fields}


def test_produce_request_carries_the_idempotent_producer_fields_at_their_reserved_numbers() -> None:
    """producer_id, producer_epoch and base_sequence took the numbers 5, 6, 7 that were reserved for them."""
    fields = log_pb2.ProduceRequest.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in ("producer_id", "producer_epoch", "base_sequence")} == {
        "producer_id": 5, "producer_epoch": 6, "base_sequence": 7,
    }
    assert not log_pb2.ProduceRequest().HasField("producer_id")
