"""Turning broker errors into gRPC statuses (one table: each error knows its code)."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

import grpc
from google.protobuf.message import DecodeError

from logstore.errors import InvalidArgument, LogstoreError

_LOGGER = logging.getLogger(__name__)

__all__ = ["status_code", "translate_errors", "safe_deserializer", "BadRequest", "Refused"]

F = TypeVar("F", bound=Callable[..., Any])


def status_code(error: LogstoreError) -> grpc.StatusCode:
    return grpc.StatusCode[error.grpc_status]


class BadRequest:
    """Stands in for a request message that could not be parsed."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class Refused:
    """Stands in for a message of a request stream that the interceptor refused
    (permission, limits): the servicer answers it with ``error`` in its place in
    the stream and goes on with the next one."""

    __slots__ = ("request_id", "error")

    def __init__(self, request_id: int, error: LogstoreError) -> None:
        self.request_id = request_id
        self.error = error


def safe_deserializer(message_cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer that yields ``BadRequest`` instead of raising,
    so the handler can answer INVALID_ARGUMENT with a useful message."""
    from_string = message_cls.FromString
    name = message_cls.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return from_string(data)
        except (DecodeError, ValueError) as exc:
            return BadRequest(f"the request is not a valid {name} message: {exc}")

    return deserialize


def check_request(request: Any) -> None:
    if isinstance(request, BadRequest):
        raise InvalidArgument(request.error)


def translate_errors(method: F) -> F:
    """Run a unary handler; answer LogstoreErrors with their status, anything
    else with INTERNAL (logged), never letting an exception escape."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            check_request(request)
            return method(self, request, context)
        except LogstoreError as exc:
            context.abort(status_code(exc), exc.message)
        except Exception:  # noqa: BLE001 - a bug must not take the server down
            _LOGGER.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the broker log")

    return wrapper  # type: ignore[return-value]


def translate_stream_errors(method: F) -> F:
    """The same as ``translate_errors`` for handlers that are generators."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            check_request(request)
            yield from method(self, request, context)
        except LogstoreError as exc:
            context.abort(status_code(exc), exc.message)
        except Exception:  # noqa: BLE001
            _LOGGER.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the broker log")

    return wrapper  # type: ignore[return-value]
