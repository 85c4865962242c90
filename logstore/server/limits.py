"""Limits that protect the broker, and the per-principal produce quota.

Two kinds of protection, both configured in the ``[limits]`` and
``[quotas]`` sections of the security file (see ``logstore.server.security``
and docs/security.md):

- ``Limits``: per-request and per-connection caps.  ``max_request_bytes``
  becomes the gRPC server's ``grpc.max_receive_message_length`` (a larger
  message is refused by gRPC itself with RESOURCE_EXHAUSTED before any
  handler runs), ``max_concurrent_streams`` its ``grpc.max_concurrent_streams``
  (HTTP/2 streams per connection: further calls on that connection wait for
  a free stream; only calls started before the client learned the limit may
  be refused, UNAVAILABLE and unprocessed), and ``max_records_per_request`` is
  checked by the interceptor on Produce, on each ProduceStream message and
  on ProduceAndCommit (INVALID_ARGUMENT naming the limit).
- ``ProduceQuotas`` + ``ByteRateLimiter``: a token bucket per principal, in
  bytes of produce requests as received.  A request over quota is never
  refused: ``charge`` says how long it must wait, the interceptor holds the
  request that long before appending it and reports the wait in
  ``ProduceResponse.throttle_time_ms``.

``ByteRateLimiter`` is pure: it takes an injected ``clock`` (milliseconds,
monotonic by default) and never sleeps, so it is tested without waiting.

What this does NOT guarantee: the quota bounds a principal's *long-run*
rate (``burst + rate * t`` bytes in any ``t``); a burst of up to ``burst_ms``
worth of bytes passes unthrottled, and a wait is capped at
``max_throttle_ms`` (the debt stays, so later requests wait longer).  A
throttled request holds a broker worker thread while it waits.  Record and
byte counts are those of the request as sent; nothing here looks inside a
record.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from logstore.broker.config import MAX_BATCH_BYTES
from logstore.errors import InvalidArgument

__all__ = [
    "Limits",
    "ProduceQuotas",
    "ByteRateLimiter",
    "QuotaRegistry",
    "monotonic_ms",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_RECORDS_PER_REQUEST",
    "DEFAULT_MAX_CONCURRENT_STREAMS",
    "DEFAULT_BURST_MS",
    "DEFAULT_MAX_THROTTLE_MS",
]

DEFAULT_MAX_REQUEST_BYTES = MAX_BATCH_BYTES + (1 << 20)
"""65 MiB: the largest batch a topic may allow (64 MiB) plus room for the request around it."""
DEFAULT_MAX_RECORDS_PER_REQUEST = 1_000_000
"""Far above what a 1 MiB batch of real records holds; stops requests of millions of empty records."""
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
"""HTTP/2 streams per client connection; a Reader uses one per partition it reads."""
DEFAULT_BURST_MS = 1000
"""A principal may send this many milliseconds' worth of its quota at once."""
DEFAULT_MAX_THROTTLE_MS = 30_000
"""The longest a single request is held back for quota."""

_MIN_REQUEST_BYTES = 1 << 10


def monotonic_ms() -> int:
    """A monotonic clock in milliseconds (quotas measure intervals, not dates)."""
    return time.monotonic_ns() // 1_000_000


def _limit(section: str, name: str, value: Any, *, low: int = 1) -> int | None:
    """A configured count: an integer >= ``low``, or -1 for "no limit" (None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"[{section}] {name} must be an integer (-1 for no limit), got {value!r}")
    if value == -1:
        return None
    if value < low:
        raise InvalidArgument(f"[{section}] {name} must be at least {low}, or -1 for no limit; got {value}")
    return value


def _check_keys(section: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(f"[{section}]: unknown setting(s) {unknown}; known: {sorted(known)}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request and per-connection caps.  None means no limit."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_records_per_request: int | None = DEFAULT_MAX_RECORDS_PER_REQUEST
    max_concurrent_streams: int | None = DEFAULT_MAX_CONCURRENT_STREAMS

    def __post_init__(self) -> None:
        if not _MIN_REQUEST_BYTES <= self.max_request_bytes <= (1 << 31) - 1:
            raise InvalidArgument(
                f"[limits] max_request_bytes must be in [{_MIN_REQUEST_BYTES}, {(1 << 31) - 1}], "
                f"got {self.max_request_bytes}"
            )
        for name in ("max_records_per_request", "max_concurrent_streams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgument(f"[limits] {name} must be at least 1 (or None for no limit), got {value!r}")

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> "Limits":
        """The ``[limits]`` section; absent keys keep their defaults."""
        _check_keys("limits", data, {"max_request_bytes", "max_records_per_request", "max_concurrent_streams"})
        kwargs: dict[str, Any] = {}
        if "max_request_bytes" in data:
            value = data["max_request_bytes"]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument(f"[limits] max_request_bytes must be an integer, got {value!r}")
            kwargs["max_request_bytes"] = value
        for name in ("max_records_per_request", "max_concurrent_streams"):
            if name in data:
                kwargs[name] = _limit("limits", name, data[name])
        return cls(**kwargs)

    def check_record_count(self, count: int, what: str) -> None:
        """Raise InvalidArgument if ``count`` records exceed ``max_records_per_request``."""
        limit = self.max_records_per_request
        if limit is not None and count > limit:
            raise InvalidArgument(
                f"{what} carries {count} records; this broker accepts at most {limit} per request "
                f"(max_records_per_request): split it into smaller requests"
            )


@dataclass(frozen=True, slots=True)
class ProduceQuotas:
    """Produce quotas in bytes per second: a default for every principal and overrides by name."""

    default_bytes_per_second: int | None = None
    """For every principal without an override (``anonymous`` included); None: unlimited."""
    overrides: tuple[tuple[str, int | None], ...] = ()
    """``(principal, bytes_per_second or None for unlimited)`` pairs."""
    burst_ms: int = DEFAULT_BURST_MS
    max_throttle_ms: int = DEFAULT_MAX_THROTTLE_MS
    _by_name: dict[str, int | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, tuple):
            object.__setattr__(self, "overrides", tuple(self.overrides))
        for name, rate in ((None, self.default_bytes_per_second), *self.overrides):
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate < 1):
                who = "the default" if name is None else f"principal {name!r}"
                raise InvalidArgument(f"[quotas] the produce quota of {who} must be >= 1 byte/s (or -1), got {rate!r}")
        if isinstance(self.burst_ms, bool) or not isinstance(self.burst_ms, int) or not 1 <= self.burst_ms <= 60_000:
            raise InvalidArgument(f"[quotas] burst_ms must be an integer in [1, 60000], got {self.burst_ms!r}")
        if (
            isinstance(self.max_throttle_ms, bool)
            or not isinstance(self.max_throttle_ms, int)
            or not 1 <= self.max_throttle_ms <= 300_000
        ):
            raise InvalidArgument(f"[quotas] max_throttle_ms must be an integer in [1, 300000], got {self.max_throttle_ms!r}")
        object.__setattr__(self, "_by_name", dict(self.overrides))

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> "ProduceQuotas":
        """The ``[quotas]`` section: ``produce_bytes_per_second``, ``burst_ms``,
        ``max_throttle_ms`` and a ``[quotas.principals]`` table of overrides."""
        _check_keys("quotas", data, {"produce_bytes_per_second", "burst_ms", "max_throttle_ms", "principals"})
        default = None
        if "produce_bytes_per_second" in data:
            default = _limit("quotas", "produce_bytes_per_second", data["produce_bytes_per_second"])
        principals = data.get("principals", {})
        if not isinstance(principals, dict):
            raise InvalidArgument("[quotas.principals] must be a table of principal = bytes_per_second")
        overrides = tuple(
            (str(name), _limit("quotas.principals", str(name), rate)) for name, rate in sorted(principals.items())
        )
        kwargs: dict[str, Any] = {}
        for name in ("burst_ms", "max_throttle_ms"):
            if name in data:
                kwargs[name] = data[name]
        return cls(default, overrides, **kwargs)

    @property
    def any(self) -> bool:
        """True if some principal has a quota."""
        return self.default_bytes_per_second is not None or any(rate is not None for _, rate in self.overrides)

    def rate_for(self, principal: str) -> int | None:
        """The quota of ``principal`` in bytes per second, None if unlimited."""
        return self._by_name.get(principal, self.default_bytes_per_second)


class ByteRateLimiter:
    """A token bucket of bytes: ``charge(n)`` takes ``n`` bytes and answers how
    many milliseconds the request must wait so that the owner's rate stays
    within ``bytes_per_second`` (0 if it need not wait).

    The bucket holds at most ``burst_bytes`` and refills at the rate; a
    charge may take it below zero (debt), and the wait is the time the
    refill needs to pay that debt back.  So over any interval ``t`` a
    principal whose requests all waited as told gets at most
    ``burst_bytes + bytes_per_second * t`` bytes through.  Thread-safe.
    """

    __slots__ = ("rate", "burst", "_clock", "_lock", "_tokens", "_last_ms")

    def __init__(self, bytes_per_second: int, burst_bytes: int, clock: Callable[[], int] = monotonic_ms) -> None:
        if bytes_per_second < 1 or burst_bytes < 1:
            raise InvalidArgument(f"a rate limiter needs a rate and a burst >= 1, got {bytes_per_second}, {burst_bytes}")
        self.rate = bytes_per_second
        self.burst = burst_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst_bytes)
        self._last_ms = clock()

    def charge(self, nbytes: int) -> int:
        """Take ``nbytes`` from the bucket; return the wait in milliseconds."""
        with self._lock:
            return self._charge_locked(nbytes)

    def _charge_locked(self, nbytes: int) -> int:
        now = self._clock()
        if now > self._last_ms:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last_ms) * self.rate / 1000.0)
            self._last_ms = now
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0
        return math.ceil(-self._tokens * 1000.0 / self.rate)

    @property
    def tokens(self) -> float:
        """Bytes in the bucket now (negative: debt), without charging anything."""
        with self._lock:
            elapsed = max(0, self._clock() - self._last_ms)
            return min(float(self.burst), self._tokens + elapsed * self.rate / 1000.0)


class QuotaRegistry:
    """One ``ByteRateLimiter`` per principal that has a quota, made on first use."""

    __slots__ = ("quotas", "_clock", "_lock", "_limiters")

    def __init__(self, quotas: ProduceQuotas, clock: Callable[[], int] = monotonic_ms) -> None:
        self.quotas = quotas
        self._clock = clock
        self._lock = threading.Lock()
        self._limiters: dict[str, ByteRateLimiter | None] = {}

    def limiter(self, principal: str) -> ByteRateLimiter | None:
        """The bucket of ``principal``, None if it has no quota."""
        try:
            return self._limiters[principal]
        except KeyError:
            pass
        with self._lock:
            if principal not in self._limiters:
                rate = self.quotas.rate_for(principal)
                self._limiters[principal] = (
                    None
                    if rate is None
                    else ByteRateLimiter(rate, max(1, rate * self.quotas.burst_ms // 1000), self._clock)
                )
            return self._limiters[principal]

    def charge(self, principal: str, nbytes: int) -> int:
        """Charge ``nbytes`` to ``principal``; the wait in ms, capped at ``max_throttle_ms``."""
        limiter = self.limiter(principal)
        if limiter is None:
            return 0
        return min(limiter.charge(nbytes), self.quotas.max_throttle_ms)
