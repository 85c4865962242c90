"""The one error hierarchy of logstore.

Every error carries the name of the gRPC status code the server answers
with (``grpc_status``), the way h11's ``ProtocolError`` carries an HTTP
status hint.  The code is kept as a plain string so that the storage and
broker layers stay free of any gRPC import; ``logstore.server`` turns it
into a ``grpc.StatusCode`` with ``grpc.StatusCode[err.grpc_status]``.

Messages are written for the person who has to fix the call: they say
what was wrong and what would be accepted instead.
"""

from __future__ import annotations

__all__ = [
    "LogstoreError",
    "InvalidArgument",
    "RecordTooLarge",
    "NotFound",
    "AlreadyExists",
    "OffsetOutOfRange",
    "FailedPrecondition",
    "ProducerFenced",
    "UnknownProducer",
    "OutOfOrderSequence",
    "CorruptBatch",
    "LogClosed",
    "ResourceExhausted",
    "PermissionDenied",
    "Unauthenticated",
]


class LogstoreError(Exception):
    """Base of every error logstore raises on purpose."""

    grpc_status: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LogstoreError):
    """The request itself is wrong: a bad name, a negative count, ..."""

    grpc_status = "INVALID_ARGUMENT"


class RecordTooLarge(InvalidArgument):
    """A record or batch is larger than the configured maximum.

    Mapped to INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: retrying the same
    record can never succeed, so the client must change the request.
    """


class NotFound(LogstoreError):
    """A topic, partition or group does not exist."""

    grpc_status = "NOT_FOUND"


class AlreadyExists(LogstoreError):
    """Something with that name exists already."""

    grpc_status = "ALREADY_EXISTS"


class OffsetOutOfRange(LogstoreError):
    """An offset lies outside ``[log_start_offset, log_end_offset]``.

    ``start`` and ``end`` carry the valid range so a caller can reposition.
    """

    grpc_status = "OUT_OF_RANGE"

    def __init__(self, offset: int, start: int, end: int, what: str = "log") -> None:
        super().__init__(
            f"offset {offset} is outside the {what}: valid offsets are "
            f"{start} (log start) to {end} (log end, the next offset to be written)"
        )
        self.offset = offset
        self.start = start
        self.end = end


class FailedPrecondition(LogstoreError):
    """The system is not in the state the request requires."""

    grpc_status = "FAILED_PRECONDITION"


class ProducerFenced(FailedPrecondition):
    """An idempotent producer's epoch is older than the latest one issued for
    its id: another instance registered with the same client id since."""


class UnknownProducer(FailedPrecondition):
    """An idempotent produce names a producer id or epoch the broker never issued."""


class OutOfOrderSequence(LogstoreError):
    """An idempotent produce's sequence number is not the next one expected for
    its producer and partition (a gap, or an old batch no longer remembered).

    ``expected`` is the sequence the broker would have accepted."""

    grpc_status = "OUT_OF_RANGE"
    MESSAGE_PREFIX = "out-of-order sequence"
    """Every message starts with this, so clients can tell it from an offset out of range."""

    def __init__(self, message: str, expected: int | None = None) -> None:
        if not message.startswith(self.MESSAGE_PREFIX):
            message = f"{self.MESSAGE_PREFIX}: {message}"
        super().__init__(message)
        self.expected = expected


class CorruptBatch(LogstoreError):
    """Stored bytes failed their CRC or structure check; they are never served."""

    grpc_status = "DATA_LOSS"


class LogClosed(LogstoreError):
    """The log (or broker) is closed or shutting down."""

    grpc_status = "UNAVAILABLE"


class ResourceExhausted(LogstoreError):
    """A limit or quota was hit; the same request may succeed later."""

    grpc_status = "RESOURCE_EXHAUSTED"


class PermissionDenied(LogstoreError):
    """The caller is known but not allowed to do this."""

    grpc_status = "PERMISSION_DENIED"


class Unauthenticated(LogstoreError):
    """The caller did not prove who it is."""

    grpc_status = "UNAUTHENTICATED"
