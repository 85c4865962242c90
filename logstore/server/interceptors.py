"""The server interceptor: the thin shell around authentication, authorization,
limits and quotas, so that the servicers stay untouched.

``SecurityInterceptor`` sees every call.  For each it

1. lets the health checks through untouched (load balancers call them
   without a token);
2. with authentication on, finds the principal from the call's token
   (``auth``) or answers UNAUTHENTICATED; a method no rule covers is
   refused with PERMISSION_DENIED (fail closed), except server reflection,
   which any valid token may use;
3. wraps the method handler's behavior so that the *parsed* request (or
   each message of a request stream) is checked against ``authz.RULES``
   before the servicer sees it: the request of a unary call, every
   ProduceStream message, the first message (the join) of Consume;
4. checks ``max_records_per_request`` on Produce, each ProduceStream
   message and ProduceAndCommit;
5. charges produce bytes to the principal's quota and holds the request for
   the wait ``limits`` computes, then reports it in ``throttle_time_ms``;
6. filters ListTopics and ListGroups answers to what the principal may see.

Nothing is wrapped that has nothing to check: with no authentication, no
quota and no record limit the interceptor is not installed at all, and
otherwise a call to a method with nothing to check costs one dictionary
lookup.  Quota bytes are the length of the request as received when the
servicer kept it (Produce, ProduceStream), else ``ByteSize()``, computed
only for a principal that has a quota.

A refused ProduceStream message is answered in its place with the refusal's
status as a per-request ``error`` (``status.Refused``), and the stream goes
on, like any other failed request.

What this does NOT guarantee: a throttled request holds a worker thread while it
waits; one whose call ends meanwhile (cancelled, server stopping) is dropped
unappended.  List answers are filtered after paging, so a page may hold fewer
than ``page_size`` entries (even none) and still have a next page token.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Any, Callable, Iterator

import grpc

from logstore._proto.logstore.v1 import groups_pb2, log_pb2
from logstore.errors import LogstoreError, PermissionDenied, Unauthenticated
from logstore.server.auth import ANONYMOUS
from logstore.server.authz import AUTHENTICATED_ONLY, RULES, UNCHECKED, Grants, check, visible_group, visible_topic
from logstore.server.limits import QuotaRegistry, monotonic_ms
from logstore.server.security import SecurityConfig
from logstore.server.status import BadRequest, Refused

_LOGGER = logging.getLogger(__name__)

__all__ = ["SecurityInterceptor", "interceptors_for"]

_PRODUCE = "/logstore.v1.Log/Produce"
_PRODUCE_STREAM = "/logstore.v1.Log/ProduceStream"
_PRODUCE_AND_COMMIT = "/logstore.v1.Groups/ProduceAndCommit"
_CONSUME = "/logstore.v1.Groups/Consume"
_LIST_TOPICS = "/logstore.v1.Admin/ListTopics"
_LIST_GROUPS = "/logstore.v1.Groups/ListGroups"
_PRODUCING = frozenset({_PRODUCE, _PRODUCE_STREAM, _PRODUCE_AND_COMMIT})
_THROTTLE_MARGIN_MS = 100  # answer this long before the caller's deadline rather than miss it


def interceptors_for(config: SecurityConfig, clock: Callable[[], int] = monotonic_ms) -> list[grpc.ServerInterceptor]:
    """The interceptors a broker with ``config`` needs: none when nothing is checked per call."""
    return [SecurityInterceptor(config, clock)] if config.needs_interceptor else []


def _unwrap(request: Any) -> tuple[Any, bytes | None]:
    """The parsed message of a request as the servicer's deserializer left it, and
    its bytes if kept; (None, None) for a request that did not parse (the
    servicer answers INVALID_ARGUMENT for it)."""
    if isinstance(request, BadRequest):
        return None, None
    raw = getattr(request, "raw", None)
    if raw is not None:
        return request.message, raw
    return request, None


def _abort(context: grpc.ServicerContext, exc: LogstoreError) -> None:
    context.abort(grpc.StatusCode[exc.grpc_status], exc.message)


def _refusal(handler: grpc.RpcMethodHandler, exc: LogstoreError) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers ``exc`` without reading the request."""
    code, message = grpc.StatusCode[exc.grpc_status], exc.message

    def refuse(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class _Caller:
    """Who is calling, and what to enforce on the call."""

    __slots__ = ("name", "grants", "rule")

    def __init__(self, name: str, grants: Grants | None, rule: Callable[[Any], Any] | None) -> None:
        self.name = name
        self.grants = grants  # None: authorization off
        self.rule = rule

    def check(self, message: Any) -> None:
        if self.grants is not None and self.rule is not None:
            check(self.name, self.grants, self.rule(message))


class SecurityInterceptor(grpc.ServerInterceptor):
    """See the module docstring."""

    def __init__(self, config: SecurityConfig, clock: Callable[[], int] = monotonic_ms) -> None:
        self._auth = config.auth
        self._limits = config.limits
        self._max_records = config.limits.max_records_per_request
        self._quotas = QuotaRegistry(config.quotas, clock) if config.quotas.any else None

    # -- the per-call decision ---------------------------------------------------------

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        method = details.method
        if handler is None or method in UNCHECKED:
            return handler
        if self._auth is None:
            if method not in _PRODUCING:
                return handler
            caller = _Caller(ANONYMOUS, None, None)
        else:
            try:
                principal = self._auth.authenticate(details.invocation_metadata)
            except Unauthenticated as exc:
                _LOGGER.debug("refused %s: %s", method, exc.message)
                return _refusal(handler, exc)
            rule = RULES.get(method)
            if rule is None:
                if method in AUTHENTICATED_ONLY:
                    return handler
                return _refusal(handler, PermissionDenied(
                    f"principal {principal.name!r} may not call {method}: no permission rule covers it"
                ))
            caller = _Caller(principal.name, principal.grants, rule)
        if method == _PRODUCE:
            return handler._replace(unary_unary=self._produce(handler.unary_unary, caller))
        if method == _PRODUCE_STREAM:
            return handler._replace(stream_stream=self._produce_stream(handler.stream_stream, caller))
        if method == _PRODUCE_AND_COMMIT:
            return handler._replace(unary_unary=self._produce_and_commit(handler.unary_unary, caller))
        if method == _CONSUME:
            return handler._replace(stream_stream=_checked_first(handler.stream_stream, caller))
        if method == _LIST_TOPICS:
            return handler._replace(unary_unary=_filtered(handler.unary_unary, "topics", caller, visible_topic))
        if method == _LIST_GROUPS:
            return handler._replace(unary_unary=_filtered(handler.unary_unary, "groups", caller, visible_group))
        if handler.request_streaming:  # no such logstore RPC besides those above
            return _refusal(handler, PermissionDenied(f"{method}: no permission rule covers this request stream"))
        if handler.response_streaming:
            return handler._replace(unary_stream=_checked(handler.unary_stream, caller))
        return handler._replace(unary_unary=_checked(handler.unary_unary, caller))

    # -- produce: authorization, record limit, quota -----------------------------------

    def _admit(self, caller: _Caller, message: Any, records: Any, what: str) -> None:
        caller.check(message)
        if self._max_records is not None:
            self._limits.check_record_count(len(records), what)

    def _throttle(self, caller: _Caller, message: Any, raw: bytes | None, context: grpc.ServicerContext,
                  done: threading.Event | None) -> tuple[int, threading.Event | None]:
        """Charge the request to the caller's quota and wait as told; returns the wait (ms)."""
        assert self._quotas is not None
        delay = self._quotas.charge(caller.name, len(raw) if raw is not None else message.ByteSize())
        if delay <= 0:
            return 0, done
        remaining = context.time_remaining()
        if remaining is not None:
            delay = min(delay, max(0, int(remaining * 1000) - _THROTTLE_MARGIN_MS))
            if delay <= 0:
                return 0, done
        if done is None:
            done = threading.Event()
            if not context.add_callback(done.set):
                done.set()  # the call is over already
        if done.wait(delay / 1000.0):  # cancelled, or the server is stopping: append nothing
            context.abort(grpc.StatusCode.CANCELLED, "the call ended while it was held back for its produce quota")
        return delay, done

    def _produce(self, behavior: Callable, caller: _Caller) -> Callable:
        return self._unary_produce(behavior, caller, "a Produce request", lambda m: m, lambda r: r)

    def _produce_and_commit(self, behavior: Callable, caller: _Caller) -> Callable:
        return self._unary_produce(
            behavior, caller, "a ProduceAndCommit request", lambda m: m.produce, lambda r: r.produce, keeps_raw=False
        )

    def _unary_produce(
        self, behavior: Callable, caller: _Caller, what: str, produce_of: Callable[[Any], Any],
        answer_of: Callable[[Any], Any], *, keeps_raw: bool = True,
    ) -> Callable:
        """A unary produce behavior (``produce_of(request)`` is its ProduceRequest, ``answer_of(response)``
        its ProduceResponse): admitted, then charged to the quota, the wait reported in the answer."""
        quotas = self._quotas

        def produce(request: Any, context: grpc.ServicerContext) -> Any:
            message, raw = _unwrap(request)
            if message is None:
                return behavior(request, context)
            try:
                self._admit(caller, message, produce_of(message).records, what)
            except LogstoreError as exc:
                _abort(context, exc)
            if quotas is None:
                return behavior(request, context)
            waited, _ = self._throttle(caller, produce_of(message), raw if keeps_raw else None, context, None)
            response = behavior(request, context)
            if waited and isinstance(response, (log_pb2.ProduceResponse, groups_pb2.ProduceAndCommitResponse)):
                answer_of(response).throttle_time_ms = waited
            return response

        return produce

    def _produce_stream(self, behavior: Callable, caller: _Caller) -> Callable:
        quotas = self._quotas

        def produce_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            waits: collections.deque[int] = collections.deque()
            done: list[threading.Event | None] = [None]

            def admitted() -> Iterator[Any]:
                for request in requests:
                    message, raw = _unwrap(request)
                    if message is not None and message.HasField("produce"):
                        try:
                            self._admit(caller, message, message.produce.records, "a ProduceStream request")
                        except LogstoreError as exc:
                            if quotas is not None:
                                waits.append(0)
                            yield Refused(message.request_id, exc)  # answered in its place; the stream goes on
                            continue
                        if quotas is not None:
                            waited, done[0] = self._throttle(caller, message.produce, raw, context, done[0])
                            waits.append(waited)
                    elif quotas is not None:
                        waits.append(0)
                    yield request

            responses = behavior(admitted(), context)
            try:
                for response in responses:
                    if quotas is not None and waits:
                        waited = waits.popleft()
                        if waited and isinstance(response, log_pb2.ProduceStreamResponse) and response.HasField("response"):
                            response.response.throttle_time_ms = waited
                    yield response
            finally:
                close = getattr(responses, "close", None)
                if close is not None:
                    close()

        return produce_stream


# -- authorization-only shells ---------------------------------------------------------


def _checked(behavior: Callable, caller: _Caller) -> Callable:
    """A unary-request behavior that checks the request first (the answer may be a stream)."""

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        message, _ = _unwrap(request)
        if message is not None:
            try:
                caller.check(message)
            except LogstoreError as exc:
                _abort(context, exc)
        return behavior(request, context)

    return checked


def _checked_first(behavior: Callable, caller: _Caller) -> Callable:
    """A request-stream behavior that checks the first message (Consume's join) only."""

    def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        first = next(requests, None)
        if first is None:
            return behavior(iter(()), context)
        message, _ = _unwrap(first)
        if message is not None:
            try:
                caller.check(message)
            except LogstoreError as exc:
                _abort(context, exc)
        return behavior(itertools.chain((first,), requests), context)

    return checked


def _filtered(behavior: Callable, field: str, caller: _Caller, visible: Callable[[Grants, str], bool]) -> Callable:
    """A unary behavior whose answer keeps only the ``field`` entries the caller may see."""
    grants = caller.grants
    assert grants is not None

    def filtered(request: Any, context: grpc.ServicerContext) -> Any:
        response = behavior(request, context)
        entries = getattr(response, field, None)
        if entries is not None:
            kept = [entry for entry in entries if visible(grants, entry.name)]
            if len(kept) != len(entries):
                del entries[:]
                entries.extend(kept)
        return response

    return filtered
