"""Retry policies: validation, waits per attempt, retry tiers, jitter, JSON, and tier/DLQ names."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstore.broker.names import MAX_NAME_LENGTH
from logstore.broker.retry import (
    MAX_ATTEMPTS,
    MAX_DELAY_MS,
    MAX_TIERS,
    RetryPolicy,
    dlq_topic,
    parse_tier_topic,
    redrive_topic,
    tier_topic,
)
from logstore.errors import InvalidArgument

T0 = 1_700_000_000_000


class FixedRandom(random.Random):
    """A stdlib random source whose ``random()`` always returns ``value`` (a chosen jitter draw)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# -- strategies -----------------------------------------------------------------------------------

delays = st.integers(min_value=0, max_value=MAX_DELAY_MS)
jitters = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@st.composite
def explicit_policies(draw, jitter=jitters) -> RetryPolicy:
    """Policies with an explicit delay list using at most MAX_TIERS distinct waits."""
    pool = draw(st.lists(delays, min_size=1, max_size=MAX_TIERS, unique=True))
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=30))
    return RetryPolicy(draw(st.integers(1, MAX_ATTEMPTS)), tuple(chosen), jitter=draw(jitter))


@st.composite
def backoff_policies(draw, jitter=jitters) -> RetryPolicy:
    """Backoff policies; at most 11 attempts keep them within MAX_TIERS waits."""
    initial = draw(delays)
    cap = draw(st.integers(min_value=initial, max_value=MAX_DELAY_MS))
    multiplier = draw(st.floats(min_value=1.0, max_value=100.0, allow_nan=False))
    return RetryPolicy(
        draw(st.integers(1, MAX_TIERS + 1)),
        initial_delay_ms=initial,
        multiplier=multiplier,
        max_delay_ms=cap,
        jitter=draw(jitter),
    )


policies = st.one_of(explicit_policies(), backoff_policies())


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="zero-attempts"),
        pytest.param({"max_attempts": -1}, "max_attempts", id="negative-attempts"),
        pytest.param({"max_attempts": MAX_ATTEMPTS + 1}, "max_attempts", id="too-many-attempts"),
        pytest.param({"max_attempts": 2.0}, "max_attempts", id="float-attempts"),
        pytest.param({"max_attempts": True}, "max_attempts", id="bool-attempts"),
        pytest.param({"max_attempts": "3"}, "max_attempts", id="str-attempts"),
        pytest.param({"delays_ms": (-1,)}, "delays_ms[0]", id="negative-first-delay"),
        pytest.param({"delays_ms": (10, -5)}, "delays_ms[1]", id="negative-second-delay"),
        pytest.param({"delays_ms": (MAX_DELAY_MS + 1,)}, "delays_ms[0]", id="delay-over-a-week"),
        pytest.param({"delays_ms": (1.5,)}, "delays_ms[0]", id="float-delay"),
        pytest.param({"initial_delay_ms": -1}, "initial_delay_ms", id="negative-initial"),
        pytest.param({"initial_delay_ms": MAX_DELAY_MS + 1}, "initial_delay_ms", id="initial-over-a-week"),
        pytest.param({"max_delay_ms": -1}, "max_delay_ms", id="negative-max"),
        pytest.param({"max_delay_ms": MAX_DELAY_MS + 1}, "max_delay_ms", id="max-over-a-week"),
        pytest.param({"multiplier": 0.5}, "multiplier", id="multiplier-below-1"),
        pytest.param({"multiplier": 0}, "multiplier", id="multiplier-zero"),
        pytest.param({"multiplier": -2.0}, "multiplier", id="multiplier-negative"),
        pytest.param({"multiplier": 100.5}, "multiplier", id="multiplier-over-100"),
        pytest.param({"multiplier": float("nan")}, "multiplier", id="multiplier-nan"),
        pytest.param({"multiplier": float("inf")}, "multiplier", id="multiplier-inf"),
        pytest.param({"multiplier": "2"}, "multiplier", id="multiplier-str"),
        pytest.param({"jitter": -0.1}, "jitter", id="jitter-negative"),
        pytest.param({"jitter": 0.51}, "jitter", id="jitter-over-half"),
        pytest.param({"jitter": float("nan")}, "jitter", id="jitter-nan"),
        pytest.param({"jitter": "0.1"}, "jitter", id="jitter-str"),
    ],
)
def test_invalid_field_is_refused_naming_it(kwargs: dict, field: str) -> None:
    """Each out-of-range or wrongly typed field raises InvalidArgument whose message names that field."""
    args = {"max_attempts": 3} | kwargs
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(**args)
    assert field in info.value.message
    assert info.value.grpc_status == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"max_attempts": MAX_ATTEMPTS, "delays_ms": (5,)},
        {"max_attempts": 3, "delays_ms": (0, MAX_DELAY_MS)},
        {"max_attempts": 3, "initial_delay_ms": 0, "max_delay_ms": 0},
        {"max_attempts": 3, "initial_delay_ms": MAX_DELAY_MS, "max_delay_ms": MAX_DELAY_MS},
        {"max_attempts": 3, "multiplier": 1.0},
        {"max_attempts": 3, "multiplier": 100.0},
        {"max_attempts": 3, "multiplier": 3},
        {"max_attempts": 3, "jitter": 0.0},
        {"max_attempts": 3, "jitter": 0.5},
    ],
)
def test_boundary_values_are_accepted(kwargs: dict) -> None:
    """Values at the edges of every allowed range construct a policy holding exactly those values."""
    policy = RetryPolicy(**kwargs)
    for name, value in kwargs.items():
        assert getattr(policy, name) == value


def test_max_delay_below_initial_is_refused_for_backoff() -> None:
    """A backoff whose cap is below its initial delay is refused, naming both fields."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(3, initial_delay_ms=5000, max_delay_ms=1000)
    assert "max_delay_ms" in info.value.message and "initial_delay_ms" in info.value.message


def test_max_delay_below_initial_is_ignored_with_explicit_delays() -> None:
    """With an explicit delay list the (unused) backoff fields need not be consistent."""
    policy = RetryPolicy(3, delays_ms=(10,), initial_delay_ms=5000, max_delay_ms=1000)
    assert policy.delay_before(2) == 10


def test_too_many_explicit_delays_is_refused() -> None:
    """More than MAX_ATTEMPTS explicit delays raise InvalidArgument."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(3, delays_ms=(1,) * (MAX_ATTEMPTS + 1))
    assert str(MAX_ATTEMPTS) in info.value.message


def test_too_many_explicit_delays_message_names_the_field() -> None:
    """The error for more than MAX_ATTEMPTS explicit delays names the field delays_ms."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(3, delays_ms=(1,) * (MAX_ATTEMPTS + 1))
    assert "delays_ms" in info.value.message


def test_explicit_delays_with_too_many_tiers_are_refused() -> None:
    """Eleven distinct waits that are all used make eleven tiers: refused, naming the tiers."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(MAX_TIERS + 2, delays_ms=tuple(range(MAX_TIERS + 1)))
    assert "tiers" in info.value.message and str(MAX_TIERS + 1) in info.value.message


def test_unused_distinct_delays_do_not_count_as_tiers() -> None:
    """Delays beyond max_attempts - 1 are never used, so they make no tier and are not refused."""
    policy = RetryPolicy(MAX_TIERS + 1, delays_ms=tuple(range(MAX_TIERS + 5)))
    assert policy.tier_delays() == tuple(range(MAX_TIERS))


def test_backoff_with_too_many_tiers_is_refused() -> None:
    """A doubling backoff from 1 ms with 12 attempts has 11 distinct waits: refused."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(MAX_TIERS + 2, initial_delay_ms=1, multiplier=2.0, max_delay_ms=MAX_DELAY_MS)
    assert "tiers" in info.value.message


def test_backoff_at_the_tier_limit_is_accepted() -> None:
    """A doubling backoff from 1 ms with 11 attempts has exactly MAX_TIERS waits and is accepted."""
    policy = RetryPolicy(MAX_TIERS + 1, initial_delay_ms=1, multiplier=2.0, max_delay_ms=MAX_DELAY_MS)
    assert len(policy.tier_delays()) == MAX_TIERS


def test_capped_backoff_with_many_attempts_is_accepted() -> None:
    """A backoff capped early may allow MAX_ATTEMPTS deliveries: the cap repeats as one tier."""
    policy = RetryPolicy(MAX_ATTEMPTS, initial_delay_ms=1000, multiplier=2.0, max_delay_ms=60_000)
    assert policy.tier_delays() == (1000, 2000, 4000, 8000, 16000, 32000, 60000)


def test_delays_given_as_a_list_become_a_tuple() -> None:
    """A list of delays is stored as a tuple, so the frozen policy stays hashable."""
    policy = RetryPolicy(3, delays_ms=[100, 200])  # type: ignore[arg-type]
    assert policy.delays_ms == (100, 200)
    assert hash(policy) == hash(RetryPolicy(3, delays_ms=(100, 200)))


def test_policy_is_frozen() -> None:
    """A policy is an immutable value object."""
    policy = RetryPolicy(3)
    with pytest.raises(AttributeError):
        policy.max_attempts = 4  # type: ignore[misc]


# -- delay_before ------------------------------------------------------------------------------------


def test_explicit_delays_apply_in_order_and_the_last_repeats() -> None:
    """delays_ms[i] is the wait before attempt i + 2; attempts past the list reuse its last entry."""
    policy = RetryPolicy(10, delays_ms=(100, 500, 2000))
    assert [policy.delay_before(a) for a in range(2, 11)] == [100, 500, 2000, 2000, 2000, 2000, 2000, 2000, 2000]


def test_explicit_delays_may_decrease() -> None:
    """Explicit delays are used as given, not sorted."""
    policy = RetryPolicy(4, delays_ms=(5000, 10, 300))
    assert [policy.delay_before(a) for a in (2, 3, 4)] == [5000, 10, 300]


def test_backoff_multiplies_and_caps() -> None:
    """The backoff wait before attempt n is initial * multiplier ** (n - 2), capped at max_delay_ms."""
    policy = RetryPolicy(8, initial_delay_ms=1000, multiplier=2.0, max_delay_ms=5000)
    assert [policy.delay_before(a) for a in range(2, 9)] == [1000, 2000, 4000, 5000, 5000, 5000, 5000]


def test_backoff_with_multiplier_one_is_constant() -> None:
    """A multiplier of 1 waits initial_delay_ms before every retry."""
    policy = RetryPolicy(6, initial_delay_ms=750, multiplier=1.0, max_delay_ms=750)
    assert {policy.delay_before(a) for a in range(2, 7)} == {750}


def test_default_policy_waits() -> None:
    """The defaults are a 1 s doubling backoff capped at 60 s."""
    policy = RetryPolicy(9)
    assert [policy.delay_before(a) for a in range(2, 10)] == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]


@pytest.mark.parametrize("attempt", [1, 0, -3])
def test_there_is_no_wait_before_the_first_attempt(attempt: int) -> None:
    """delay_before of an attempt below 2 raises InvalidArgument naming the attempt."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(3).delay_before(attempt)
    assert "attempt" in info.value.message


@given(backoff_policies(), st.integers(2, MAX_ATTEMPTS))
def test_backoff_never_exceeds_the_cap_and_starts_at_initial(policy: RetryPolicy, attempt: int) -> None:
    """Every backoff wait is an int in [initial_delay_ms, max_delay_ms]; the first is initial_delay_ms."""
    wait = policy.delay_before(attempt)
    assert isinstance(wait, int)
    assert policy.initial_delay_ms <= wait <= policy.max_delay_ms
    assert policy.delay_before(2) == policy.initial_delay_ms


@given(backoff_policies(), st.integers(2, MAX_ATTEMPTS - 1))
def test_backoff_never_shrinks(policy: RetryPolicy, attempt: int) -> None:
    """A backoff wait is never shorter than the one before it."""
    assert policy.delay_before(attempt + 1) >= policy.delay_before(attempt)


def test_backoff_for_a_huge_attempt_is_the_cap() -> None:
    """delay_before of any attempt >= 2, however large, is at most max_delay_ms (never an OverflowError)."""
    policy = RetryPolicy(3, initial_delay_ms=1000, multiplier=100.0, max_delay_ms=60_000)
    assert policy.delay_before(200) == 60_000


def test_backoff_rounds_to_the_nearest_millisecond() -> None:
    """A backoff wait whose exact value is a whole number of ms is that number, not one less."""
    policy = RetryPolicy(5, initial_delay_ms=125, multiplier=1.2, max_delay_ms=MAX_DELAY_MS)
    assert policy.delay_before(5) == 216  # 125 * 1.2**3 = 216 exactly


# -- tier_delays ---------------------------------------------------------------------------------------


def test_tier_delays_are_distinct_and_sorted() -> None:
    """Repeated and unordered explicit waits give each distinct wait once, ascending."""
    policy = RetryPolicy(7, delays_ms=(500, 100, 500, 100, 2000))
    assert policy.tier_delays() == (100, 500, 2000)


def test_tier_delays_count_only_attempts_that_happen() -> None:
    """Waits after the last allowed attempt are not tiers."""
    policy = RetryPolicy(3, delays_ms=(1, 2, 3, 4))
    assert policy.tier_delays() == (1, 2)


def test_a_single_attempt_has_no_tiers() -> None:
    """max_attempts=1 never retries, so there are no retry tiers."""
    assert RetryPolicy(1, delays_ms=(5, 6)).tier_delays() == ()
    assert RetryPolicy(1).tier_delays() == ()


@given(policies)
def test_tier_delays_are_exactly_the_waits_used(policy: RetryPolicy) -> None:
    """tier_delays is strictly ascending, at most MAX_TIERS long, and the set of delay_before(2..max)."""
    tiers = policy.tier_delays()
    assert list(tiers) == sorted(set(tiers))
    assert len(tiers) <= MAX_TIERS
    assert set(tiers) == {policy.delay_before(a) for a in range(2, policy.max_attempts + 1)}


# -- due_ms --------------------------------------------------------------------------------------------


def test_due_without_jitter_is_failure_plus_wait_and_draws_nothing() -> None:
    """With jitter 0 a retry is due exactly wait ms after the failure and the rng is not touched."""
    rng = random.Random(1)
    state = rng.getstate()
    policy = RetryPolicy(4, delays_ms=(100, 5000))
    assert policy.due_ms(2, T0, rng) == T0 + 100
    assert policy.due_ms(4, T0, rng) == T0 + 5000
    assert rng.getstate() == state


def test_due_of_a_zero_wait_is_the_failure_time_even_with_jitter() -> None:
    """A zero wait is due at the failure time whatever the jitter."""
    assert RetryPolicy(3, delays_ms=(0,), jitter=0.5).due_ms(2, T0, random.Random(3)) == T0


def test_due_rejects_the_first_attempt() -> None:
    """due_ms of attempt 1 raises InvalidArgument (there is no retry before it)."""
    with pytest.raises(InvalidArgument):
        RetryPolicy(3).due_ms(1, T0)


@given(
    policies.filter(lambda p: p.max_attempts >= 2),
    st.data(),
    st.integers(min_value=0, max_value=4_000_000_000_000),
    st.randoms(use_true_random=False),
)
def test_jittered_due_stays_within_the_tier_wait(policy, data, failed_ms, rng) -> None:
    """A jittered retry is never due later than its tier's wait nor earlier than wait * (1 - jitter), to the ms."""
    attempt = data.draw(st.integers(2, policy.max_attempts))
    wait = policy.delay_before(attempt)
    due = policy.due_ms(attempt, failed_ms, rng)
    assert isinstance(due, int)
    assert due <= failed_ms + wait
    assert due >= failed_ms + math.floor(wait * (1 - policy.jitter))


@given(explicit_policies().filter(lambda p: p.max_attempts >= 2), st.integers(0, 2**32))
def test_due_is_reproducible_with_the_same_seed(policy: RetryPolicy, seed: int) -> None:
    """The same injected seed gives the same due time."""
    assert policy.due_ms(2, T0, random.Random(seed)) == policy.due_ms(2, T0, random.Random(seed))


def test_jitter_spreads_due_times() -> None:
    """With jitter 0.5 over a 10 s wait, 200 draws give many distinct due times, some well before the wait."""
    policy = RetryPolicy(2, delays_ms=(10_000,), jitter=0.5)
    rng = random.Random(42)
    dues = [policy.due_ms(2, T0, rng) - T0 for _ in range(200)]
    assert len(set(dues)) > 100
    assert min(dues) < 6_000 and max(dues) <= 10_000 and min(dues) >= 5_000


def test_extreme_jitter_draws_stay_in_range() -> None:
    """A draw of 0 gives the full wait; a draw just below 1 gives at least the floor of wait * (1 - jitter)."""
    policy = RetryPolicy(2, delays_ms=(1000,), jitter=0.25)
    assert policy.due_ms(2, T0, FixedRandom(0.0)) == T0 + 1000
    assert policy.due_ms(2, T0, FixedRandom(0.9999999)) - T0 >= 750


def test_jittered_due_is_never_before_the_exact_lower_bound() -> None:
    """A jittered due time is never earlier than failed + wait * (1 - jitter), even by a fraction of a ms."""
    policy = RetryPolicy(2, delays_ms=(3,), jitter=0.5)
    assert policy.due_ms(2, T0, FixedRandom(0.99)) - T0 >= 3 * (1 - 0.5)


# -- JSON ----------------------------------------------------------------------------------------------


@given(policies)
def test_json_round_trip(policy: RetryPolicy) -> None:
    """to_json, through real JSON text, and from_json give back an equal policy."""
    text = json.dumps(policy.to_json(), sort_keys=True)
    assert RetryPolicy.from_json(json.loads(text)) == policy


def test_to_json_has_every_field() -> None:
    """to_json writes every field under its own name, delays as a list."""
    policy = RetryPolicy(5, (10, 20), 300, 1.5, 4000, 0.25)
    assert policy.to_json() == {
        "max_attempts": 5,
        "delays_ms": [10, 20],
        "initial_delay_ms": 300,
        "multiplier": 1.5,
        "max_delay_ms": 4000,
        "jitter": 0.25,
    }


def test_from_json_fills_in_defaults() -> None:
    """Only max_attempts is required; missing fields take the constructor's defaults."""
    assert RetryPolicy.from_json({"max_attempts": 4}) == RetryPolicy(4)


def test_from_json_requires_max_attempts() -> None:
    """A JSON policy without max_attempts raises KeyError (the policy store skips such records)."""
    with pytest.raises(KeyError):
        RetryPolicy.from_json({"delays_ms": [1]})


def test_from_json_validates() -> None:
    """A JSON policy with an invalid field is refused like a constructed one, naming the field."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy.from_json({"max_attempts": 3, "delays_ms": [-1]})
    assert "delays_ms[0]" in info.value.message


# -- names -----------------------------------------------------------------------------------------------


def test_tier_dlq_and_redrive_names() -> None:
    """Tiers are <topic>.<group>.retry.<delay>ms, the DLQ <topic>.<group>.dlq, redrive <topic>.<group>.redrive."""
    assert tier_topic("orders", "email", 5000) == "orders.email.retry.5000ms"
    assert dlq_topic("orders", "email") == "orders.email.dlq"
    assert redrive_topic("orders", "email") == "orders.email.redrive"


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCZ0123456789._-", min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and not n.startswith("__")
)


@given(names, names, delays)
def test_parse_tier_topic_inverts_tier_topic(topic: str, group: str, delay: int) -> None:
    """parse_tier_topic gives back the wait of any tier_topic name of the same topic and group."""
    assert parse_tier_topic(tier_topic(topic, group, delay), topic, group) == delay


@pytest.mark.parametrize(
    "name",
    [
        "orders",
        "orders.email.dlq",
        "orders.email.redrive",
        "orders.sms.retry.5000ms",
        "billing.email.retry.5000ms",
        "orders.email.retry.ms",
        "orders.email.retry.5000",
        "orders.email.retry.5s",
        "orders.email.retry.-5ms",
        "orders.email.retry.5.0ms",
        "xorders.email.retry.5000ms",
    ],
)
def test_parse_tier_topic_rejects_other_names(name: str) -> None:
    """Names that are not a tier of (orders, email) parse to None."""
    assert parse_tier_topic(name, "orders", "email") is None


def test_pairs_spelling_the_same_prefix_share_names_which_the_coordinator_must_refuse() -> None:
    """Names are plain concatenations: ('a.b', 'c') and ('a', 'b.c') spell the same retry topics.

    The coordinator refuses the second such policy (tests/server/test_retry.py checks it)."""
    assert tier_topic("a.b", "c", 5) == tier_topic("a", "b.c", 5) == "a.b.c.retry.5ms"
    assert dlq_topic("a.b", "c") == dlq_topic("a", "b.c")
    assert redrive_topic("a.b", "c") == redrive_topic("a", "b.c")


# -- check_names -------------------------------------------------------------------------------------------


def test_check_names_accepts_ordinary_names() -> None:
    """A policy for ordinary topic and group names passes check_names."""
    RetryPolicy(3, delays_ms=(MAX_DELAY_MS,)).check_names("orders", "email")
    assert len(tier_topic("orders", "email", MAX_DELAY_MS)) <= MAX_NAME_LENGTH


def test_check_names_accepts_names_of_exactly_the_limit() -> None:
    """With no tiers (max_attempts 1) a redrive name (the longest) of exactly MAX_NAME_LENGTH is accepted."""
    group = "g" * (MAX_NAME_LENGTH - len("t..redrive"))
    assert len(redrive_topic("t", group)) == MAX_NAME_LENGTH
    assert len(dlq_topic("t", group)) < MAX_NAME_LENGTH
    RetryPolicy(1).check_names("t", group)


def test_check_names_refuses_a_redrive_name_one_over_the_limit() -> None:
    """A redrive topic name one character over MAX_NAME_LENGTH is refused with its length and the limit."""
    group = "g" * (MAX_NAME_LENGTH - len("t..redrive") + 1)
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(1).check_names("t", group)
    assert f"{MAX_NAME_LENGTH + 1} characters" in info.value.message
    assert f"{MAX_NAME_LENGTH}-character limit" in info.value.message


def test_check_names_refuses_a_dlq_name_over_the_limit() -> None:
    """A DLQ name over MAX_NAME_LENGTH is refused."""
    group = "g" * (MAX_NAME_LENGTH - len("t..dlq") + 1)
    assert len(dlq_topic("t", group)) == MAX_NAME_LENGTH + 1
    with pytest.raises(InvalidArgument):
        RetryPolicy(1).check_names("t", group)


def test_check_names_refuses_a_tier_name_over_the_limit_when_the_others_fit() -> None:
    """A long tier name is refused even when the DLQ and redrive names fit."""
    group = "g" * (MAX_NAME_LENGTH - len("t..redrive"))
    policy = RetryPolicy(2, delays_ms=(5,))
    assert len(tier_topic("t", group, 5)) > MAX_NAME_LENGTH
    with pytest.raises(InvalidArgument) as info:
        policy.check_names("t", group)
    assert "retry" in info.value.message


def test_check_names_counts_only_used_tiers() -> None:
    """The longest possible wait matters only if a retry uses it."""
    group = "g" * (MAX_NAME_LENGTH - len("t..retry.5ms"))
    assert len(tier_topic("t", group, 5)) == MAX_NAME_LENGTH
    RetryPolicy(2, delays_ms=(5, MAX_DELAY_MS)).check_names("t", group)
    with pytest.raises(InvalidArgument):
        RetryPolicy(3, delays_ms=(5, MAX_DELAY_MS)).check_names("t", group)


@pytest.mark.parametrize(
    ("topic", "group", "what"),
    [("bad/topic", "g", "topic"), ("__internal", "g", "topic"), ("t", "", "group"), ("t", "gé", "group")],
)
def test_check_names_validates_the_names_themselves(topic: str, group: str, what: str) -> None:
    """check_names refuses an invalid topic or group name with InvalidArgument naming which one."""
    with pytest.raises(InvalidArgument) as info:
        RetryPolicy(3).check_names(topic, group)
    assert what in info.value.message
