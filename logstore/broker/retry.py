"""Retry policies of consumer groups, and the names of their retry tiers and dead-letter topics.

A ``RetryPolicy`` says, for one group reading one topic, how often a record
may be delivered (``max_attempts``) and how long to wait before each
redelivery.  The waits come either from an explicit list (``delays_ms``,
the wait before attempt 2, 3, ...; the last repeats) or from an exponential
backoff (``initial_delay_ms * multiplier ** (n - 1)`` before the n-th retry, capped
at ``max_delay_ms``), rounded to whole milliseconds.

Every distinct wait is one *retry tier*: an ordinary topic named

    <topic>.<group>.retry.<delay_ms>ms        e.g. orders.email.retry.5000ms

with as many partitions as ``<topic>``; a record failed in partition ``p``
is copied to partition ``p`` of the tier, so its key stays in one partition
number everywhere.  Records that are out of attempts (or nacked as terminal)
go to the group's dead-letter topic

    <topic>.<group>.dlq

and a redrive copies dead letters back, attempts reset, into

    <topic>.<group>.redrive

which the group reads like a tier whose records are due at once.

These names must fit the topic-name rules (249 characters); a policy whose
names would not is refused when it is set.  Since ``.`` may occur in topic
and group names, two pairs can spell the same prefix (topic ``a.b`` with
group ``c``, topic ``a`` with group ``b.c``); the coordinator refuses a
policy whose prefix another pair's policy already uses.

Jitter: ``jitter`` (0 to 0.5) spreads each wait uniformly over
``[wait * (1 - jitter), wait]``, so a record is never due later than its
tier's wait.  The random source is injected (``random.Random``) for tests.

What a policy does not do: it knows nothing of time or I/O; the coordinator
applies it.  A tier is named by its topic, group and wait, so two groups' tiers never
mix (see the prefix rule above).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from logstore.broker.names import MAX_NAME_LENGTH, validate_group_name, validate_topic_name
from logstore.errors import InvalidArgument

__all__ = [
    "RetryPolicy",
    "MAX_ATTEMPTS",
    "MAX_TIERS",
    "MAX_DELAY_MS",
    "tier_topic",
    "dlq_topic",
    "redrive_topic",
    "delay_topic",
    "parse_tier_topic",
]

MAX_ATTEMPTS = 100
"""The most deliveries a policy may allow."""
MAX_TIERS = 10
"""The most distinct waits (retry tiers) one policy may have."""
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
"""The longest wait: a week."""


def tier_topic(topic: str, group: str, delay_ms: int) -> str:
    """The retry tier of ``group`` for ``topic`` with wait ``delay_ms``."""
    return f"{topic}.{group}.retry.{delay_ms}ms"


def dlq_topic(topic: str, group: str) -> str:
    """The dead-letter topic of ``group`` for ``topic``."""
    return f"{topic}.{group}.dlq"


def delay_topic(topic: str, group: str) -> str:
    """Where ``group`` sets aside records of ``topic`` whose delivery time has not come."""
    return f"{topic}.{group}.delay"


def redrive_topic(topic: str, group: str) -> str:
    """Where ``RedriveDeadLetters`` puts dead letters of ``group`` back into its delivery path."""
    return f"{topic}.{group}.redrive"


def parse_tier_topic(name: str, topic: str, group: str) -> int | None:
    """The wait of ``name`` if it is a retry tier of ``group`` for ``topic``, else None."""
    prefix = f"{topic}.{group}.retry."
    if not name.startswith(prefix) or not name.endswith("ms"):
        return None
    digits = name[len(prefix) : -2]
    return int(digits) if digits.isdigit() else None


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgument(f"retry policy: {name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a group retries the records of one topic.  See the module docstring."""

    max_attempts: int
    """Deliveries in all, the first included: 1 means no retry (straight to the DLQ on failure)."""
    delays_ms: tuple[int, ...] = ()
    """Explicit waits before attempt 2, 3, ...; the last one repeats.  Empty: use the backoff."""
    initial_delay_ms: int = 1000
    multiplier: float = 2.0
    max_delay_ms: int = 60_000
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)
        if not isinstance(self.delays_ms, tuple):
            object.__setattr__(self, "delays_ms", tuple(self.delays_ms))
        if len(self.delays_ms) > MAX_ATTEMPTS:
            raise InvalidArgument(f"retry policy: delays_ms holds at most {MAX_ATTEMPTS} delays, got {len(self.delays_ms)}")
        for i, d in enumerate(self.delays_ms):
            _check_int(f"delays_ms[{i}]", d, 0, MAX_DELAY_MS)
        _check_int("initial_delay_ms", self.initial_delay_ms, 0, MAX_DELAY_MS)
        _check_int("max_delay_ms", self.max_delay_ms, 0, MAX_DELAY_MS)
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, (int, float)) or not 1.0 <= self.multiplier <= 100.0:
            raise InvalidArgument(f"retry policy: multiplier must be in [1, 100], got {self.multiplier!r}")
        if not isinstance(self.jitter, (int, float)) or not 0.0 <= self.jitter <= 0.5:
            raise InvalidArgument(f"retry policy: jitter must be in [0, 0.5], got {self.jitter!r}")
        if not self.delays_ms and self.max_delay_ms < self.initial_delay_ms:
            raise InvalidArgument(
                f"retry policy: max_delay_ms ({self.max_delay_ms}) is below initial_delay_ms ({self.initial_delay_ms})"
            )
        tiers = self.tier_delays()
        if len(tiers) > MAX_TIERS:
            raise InvalidArgument(
                f"retry policy: its waits make {len(tiers)} retry tiers (one topic each); at most {MAX_TIERS} "
                "are allowed: use fewer distinct delays or a lower max_delay_ms"
            )

    def delay_before(self, attempt: int) -> int:
        """The wait before delivery ``attempt`` (2 or more), in ms, without jitter."""
        if attempt < 2:
            raise InvalidArgument(f"attempt {attempt} has no wait before it; retries start at attempt 2")
        if self.delays_ms:
            return self.delays_ms[min(attempt - 2, len(self.delays_ms) - 1)]
        try:
            wait = self.initial_delay_ms * self.multiplier ** (attempt - 2)
        except OverflowError:
            return self.max_delay_ms
        return int(min(round(wait), self.max_delay_ms))

    def tier_delays(self) -> tuple[int, ...]:
        """Every distinct wait the policy uses, sorted: one retry tier each."""
        return tuple(sorted({self.delay_before(a) for a in range(2, self.max_attempts + 1)}))

    def due_ms(self, attempt: int, failed_ms: int, rng: random.Random | None = None) -> int:
        """When delivery ``attempt`` is due after a failure at ``failed_ms`` (jitter applied)."""
        wait = self.delay_before(attempt)
        if self.jitter and wait:
            wait = math.ceil(wait * (1 - (rng or random).random() * self.jitter))
        return failed_ms + wait

    def check_names(self, topic: str, group: str) -> None:
        """Refuse the policy if a tier or DLQ name of ``group`` on ``topic`` breaks the name rules."""
        validate_topic_name(topic)
        validate_group_name(group)
        longest = max([dlq_topic(topic, group), redrive_topic(topic, group)] + [tier_topic(topic, group, d) for d in self.tier_delays()], key=len)
        if len(longest) > MAX_NAME_LENGTH:
            raise InvalidArgument(
                f"retry policy: the topic {longest[:60]!r}... would be {len(longest)} characters, over the "
                f"{MAX_NAME_LENGTH}-character limit; use a shorter group or topic name"
            )

    def to_json(self) -> dict:
        return {
            "max_attempts": self.max_attempts,
            "delays_ms": list(self.delays_ms),
            "initial_delay_ms": self.initial_delay_ms,
            "multiplier": self.multiplier,
            "max_delay_ms": self.max_delay_ms,
            "jitter": self.jitter,
        }

    @classmethod
    def from_json(cls, d: dict) -> "RetryPolicy":
        return cls(
            int(d["max_attempts"]),
            tuple(int(x) for x in d.get("delays_ms", ())),
            int(d.get("initial_delay_ms", 1000)),
            float(d.get("multiplier", 2.0)),
            int(d.get("max_delay_ms", 60_000)),
            float(d.get("jitter", 0.0)),
        )
