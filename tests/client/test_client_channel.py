"""Address resolution and the gRPC status -> logstore error table (no broker needed)."""

from __future__ import annotations

import grpc
import pytest

from logstore import errors
from logstore.client._channel import error_from_status, resolve_address


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "127.0.0.1:50051"),
        ("", "127.0.0.1:50051"),
        ("localhost", "localhost:50051"),
        ("10.0.0.5:9092", "10.0.0.5:9092"),
        ("grpc://broker:7000", "broker:7000"),
        ("[::1]:6000", "[::1]:6000"),
        ("[::1]", "[::1]:50051"),
        ("::1", "[::1]:50051"),
        ("unix:/tmp/logstore.sock", "unix:/tmp/logstore.sock"),
    ],
)
def test_resolve_address_forms(given: str | None, expected: str) -> None:
    """Every accepted broker spelling resolves to the gRPC target it names."""
    assert resolve_address(given) == expected


@pytest.mark.parametrize("bad", ["host:notaport", "host:0", "host:70000", ":5000", "[::1"])
def test_resolve_address_rejects_bad_ports_and_hosts(bad: str) -> None:
    """A malformed broker address raises InvalidArgument naming the address."""
    with pytest.raises(errors.InvalidArgument, match="broker address"):
        resolve_address(bad)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.OUT_OF_RANGE, errors.OffsetOutOfRange),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.DATA_LOSS, errors.CorruptBatch),
        (grpc.StatusCode.UNAVAILABLE, errors.LogClosed),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    ],
)
def test_status_codes_map_back_to_the_error_classes(code: grpc.StatusCode, cls: type) -> None:
    """A status (as a code or its number) maps back to the error class it came from, message kept."""
    for given in (code, code.value[0]):
        err = error_from_status(given, "what went wrong")
        assert type(err) is cls
        assert err.grpc_status == code.name
        assert "what went wrong" in err.message


def test_out_of_range_keeps_the_valid_range() -> None:
    """OUT_OF_RANGE with the broker's usual message yields OffsetOutOfRange with offset/start/end."""
    text = str(errors.OffsetOutOfRange(120, 10, 100))
    err = error_from_status(grpc.StatusCode.OUT_OF_RANGE, text)
    assert isinstance(err, errors.OffsetOutOfRange)
    assert (err.offset, err.start, err.end) == (120, 10, 100)
    assert err.message == text


def test_other_codes_become_plain_errors_with_their_status() -> None:
    """Codes without a class of their own give LogstoreError carrying the code's name."""
    err = error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow", "h:1")
    assert type(err) is errors.LogstoreError
    assert err.grpc_status == "DEADLINE_EXCEEDED"
    assert "h:1" in err.message
