"""Connecting to a broker and turning gRPC failures back into logstore errors.

``resolve_address`` accepts ``HOST:PORT``, a bare ``HOST`` (port 50051),
``[IPv6]:PORT``, a bare IPv6 address, an optional ``grpc://`` prefix, and
passes gRPC's own ``unix:`` / ``dns:`` / ``ipv4:`` / ``ipv6:`` targets through
unchanged.  ``open_channel`` makes a channel with message-size limits large
enough for any batch the broker may send: plaintext, or TLS with
``tls=ClientTLS(...)`` (a CA file to trust, or the system's roots; a client
certificate and key for mutual TLS), sending ``token`` as
``authorization: Bearer <token>`` on every call when given (TLS: gRPC's
access-token call credentials; plaintext: a client interceptor, and the
token then crosses the network in clear text).

``error_from_status`` is the one table from gRPC status codes to the classes
of ``logstore.errors``; every client module raises through it, so a caller
only ever catches ``LogstoreError`` subclasses.

What this module does not do: retries, load balancing, reloading
certificates, or refreshing tokens.  A channel reconnects by itself (gRPC does that); a call made
while the broker is down fails at once with ``LogClosed`` (UNAVAILABLE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import grpc

from logstore.errors import (
    AlreadyExists,
    CorruptBatch,
    FailedPrecondition,
    InvalidArgument,
    LogClosed,
    LogstoreError,
    NotFound,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PermissionDenied,
    ProducerFenced,
    ResourceExhausted,
    Unauthenticated,
)

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_PORT",
    "resolve_address",
    "open_channel",
    "ClientTLS",
    "error_from_status",
    "translate_rpc_error",
    "call_unary",
]

DEFAULT_PORT = 50051
DEFAULT_BROKER = f"127.0.0.1:{DEFAULT_PORT}"

# The broker may send up to its own maximum message size; accept anything.
# Sending is limited by the broker's receive limit, not ours.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)

_PASS_THROUGH_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:")

_ERROR_CLASSES: dict[grpc.StatusCode, type[LogstoreError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: CorruptBatch,
    grpc.StatusCode.UNAVAILABLE: LogClosed,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    # OUT_OF_RANGE -> OffsetOutOfRange, built by _offset_out_of_range (it carries the range).
}

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

_RANGE_RE = re.compile(r"valid offsets are (-?\d+)\D+?(-?\d+)")
_OFFSET_RE = re.compile(r"offset (-?\d+)")
_EXPECTED_RE = re.compile(r"next sequence expected is (\d+)")
_FENCED_RE = re.compile(r"epoch \d+ is fenced")


def resolve_address(broker: str | None) -> str:
    """The gRPC target for ``broker`` (see the module docstring for the forms)."""
    if broker is None or not broker.strip():
        return DEFAULT_BROKER
    target = broker.strip()
    if target.startswith("grpc://"):
        target = target[len("grpc://") :].rstrip("/")
    if target.startswith(_PASS_THROUGH_SCHEMES):
        return target
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or not host:
            raise InvalidArgument(f"broker address {broker!r} has an unclosed '[': use [IPV6]:PORT")
        if not rest:
            return f"[{host}]:{DEFAULT_PORT}"
        if not rest.startswith(":"):
            raise InvalidArgument(f"broker address {broker!r}: expected ':PORT' after ']'")
        return f"[{host}]:{_port(rest[1:], broker)}"
    if target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{DEFAULT_PORT}"
    host, sep, port = target.partition(":")
    if not host:
        raise InvalidArgument(f"broker address {broker!r} has no host: use HOST:PORT, e.g. 127.0.0.1:50051")
    if not sep:
        return f"{host}:{DEFAULT_PORT}"
    return f"{host}:{_port(port, broker)}"


def _port(text: str, broker: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"broker address {broker!r}: port must be a number from 1 to 65535, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """How a client connects with TLS.

    ``ca_file``: PEM CA certificate(s) to trust for the broker's certificate
    (None: the system's trusted roots).  ``cert_file`` and ``key_file``: the
    client's certificate chain and key, for brokers that require mutual TLS.
    ``server_name``: the name to check the broker's certificate against when
    it differs from the host in the address.
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("ClientTLS: cert_file and key_file go together (mutual TLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials, reading the files now (InvalidArgument naming a file it cannot read)."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA certificate"),
            private_key=_read(self.key_file, "client key"),
            certificate_chain=_read(self.cert_file, "client certificate"),
        )


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a plaintext channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # noqa: ANN001, ANN201
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # noqa: ANN001, ANN201
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # noqa: ANN001, ANN201
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # noqa: ANN001, ANN201
        return continuation(self._details(client_call_details), request_iterator)


class _CallDetails(grpc.ClientCallDetails):
    """``details`` with other metadata (for call details that are not namedtuples)."""

    def __init__(self, details: Any, metadata: list) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def _check_token(token: str) -> str:
    token = token.strip()
    if not token or any(ch in token for ch in "\r\n\0") or not token.isprintable():
        raise InvalidArgument("a token must be one line of printable characters (and not empty)")
    return token


def open_channel(
    broker: str | None, *, tls: ClientTLS | None = None, token: str | None = None
) -> tuple[grpc.Channel, str]:
    """A channel to ``broker`` (TLS with ``tls``, else plaintext; sending ``token``
    on every call when given) and the resolved target it points at."""
    target = resolve_address(broker)
    if token is not None:
        token = _check_token(token)
    if tls is None:
        channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        if token is not None:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        return channel, target
    credentials = tls.credentials()
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    options = CHANNEL_OPTIONS
    if tls.server_name:
        options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(target, credentials, options=options), target


def error_from_status(code: grpc.StatusCode | int, message: str, target: str | None = None) -> LogstoreError:
    """The ``LogstoreError`` for a gRPC status (a ``grpc.StatusCode`` or its number)."""
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    message = message or code.name.lower().replace("_", " ")
    if code is grpc.StatusCode.OUT_OF_RANGE:
        if message.startswith(OutOfOrderSequence.MESSAGE_PREFIX):
            expected = _EXPECTED_RE.search(message)
            return OutOfOrderSequence(message, int(expected.group(1)) if expected else None)
        return _offset_out_of_range(message)
    if code is grpc.StatusCode.FAILED_PRECONDITION and _FENCED_RE.search(message):
        return ProducerFenced(message)
    if code is grpc.StatusCode.UNAVAILABLE and target is not None:
        message = f"broker {target} is unavailable: {message}"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and target is not None:
        message = f"broker {target} did not answer in time: {message}"
    cls = _ERROR_CLASSES.get(code)
    if cls is not None:
        return cls(message)
    err = LogstoreError(message)
    err.grpc_status = code.name  # CANCELLED, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...
    return err


def _offset_out_of_range(message: str) -> OffsetOutOfRange:
    """An ``OffsetOutOfRange`` keeping the broker's message; the range is parsed from it
    when the message has the usual form, else ``start``/``end``/``offset`` are None."""
    err = OffsetOutOfRange.__new__(OffsetOutOfRange)
    LogstoreError.__init__(err, message)
    found = _RANGE_RE.search(message)
    err.start = int(found.group(1)) if found else None  # type: ignore[assignment]
    err.end = int(found.group(2)) if found else None  # type: ignore[assignment]
    offset = _OFFSET_RE.search(message)
    err.offset = int(offset.group(1)) if offset else None  # type: ignore[assignment]
    return err


def translate_rpc_error(exc: grpc.RpcError, target: str | None = None) -> LogstoreError:
    """The ``LogstoreError`` for a failed gRPC call."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    return error_from_status(code, details or "", target)


_T = TypeVar("_T")


def call_unary(method: Callable[..., _T], request: object, target: str, timeout: float | None = None) -> _T:
    """Make a unary call, raising ``LogstoreError`` subclasses instead of ``grpc.RpcError``."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise translate_rpc_error(exc, target) from None
