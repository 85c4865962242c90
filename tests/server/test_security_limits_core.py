"""The pure cores of limits and quotas (logstore.server.limits) and the security
file (logstore.server.security, logstore.server.auth), driven by a ManualClock:
nothing here sleeps or starts a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstore.clock import ManualClock
from logstore.errors import InvalidArgument, Unauthenticated
from logstore.server.auth import Authenticator, Principal, hash_token, new_token
from logstore.server.limits import (
    DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_RECORDS_PER_REQUEST,
    DEFAULT_MAX_REQUEST_BYTES,
    ByteRateLimiter,
    Limits,
    ProduceQuotas,
    QuotaRegistry,
)
from logstore.server.security import SecurityConfig, exposure_warning


def test_bucket_lets_a_burst_through_then_charges_the_debt() -> None:
    """Up to the burst passes with no wait; beyond it the wait is the time the rate needs to pay the debt."""
    clock = ManualClock()
    bucket = ByteRateLimiter(1000, 500, clock)  # 1000 B/s, 500 B burst
    assert bucket.charge(500) == 0
    assert bucket.charge(250) == 250  # 250 B of debt at 1000 B/s
    assert bucket.charge(250) == 500  # queued behind the first debt
    clock.advance(500)
    assert bucket.charge(0) == 0  # paid back exactly
    clock.advance(10_000)
    assert bucket.tokens == 500  # never more than the burst


def test_bucket_long_run_rate_is_the_quota() -> None:
    """A sender that always waits as told moves burst + rate * t bytes in t, whatever its request size."""
    clock = ManualClock()
    bucket = ByteRateLimiter(10_000, 1_000, clock)
    start, sent = clock(), 0
    while clock() - start < 60_000:
        wait = bucket.charge(3_333)
        sent += 3_333
        clock.advance(wait)
    elapsed_s = (clock() - start) / 1000
    assert abs(sent - 1_000 - 10_000 * elapsed_s) <= 3_333


def test_bucket_ignores_a_clock_going_backwards() -> None:
    """A clock step backwards neither refills nor breaks the bucket."""
    clock = ManualClock()
    bucket = ByteRateLimiter(1000, 1000, clock)
    bucket.charge(1000)
    clock.now_ms -= 5000
    assert bucket.charge(100) == 100


def test_quotas_default_overrides_and_unlimited() -> None:
    """A principal gets its override, else the default; -1 in the file means unlimited."""
    quotas = ProduceQuotas.from_toml({"produce_bytes_per_second": 1000, "principals": {"bulk": -1, "slow": 10}})
    assert quotas.rate_for("anonymous") == 1000 and quotas.rate_for("bulk") is None and quotas.rate_for("slow") == 10
    registry = QuotaRegistry(quotas, ManualClock())
    assert registry.limiter("bulk") is None
    assert registry.limiter("slow") is registry.limiter("slow")
    assert not ProduceQuotas().any and ProduceQuotas.from_toml({"principals": {"x": 5}}).any


def test_quota_wait_is_capped() -> None:
    """One enormous request waits at most max_throttle_ms (the debt stays for the next ones)."""
    registry = QuotaRegistry(ProduceQuotas(100, max_throttle_ms=2000), ManualClock())
    assert registry.charge("p", 1_000_000) == 2000
    assert registry.charge("p", 1) == 2000


def test_limits_defaults_and_record_count() -> None:
    """The defaults are documented constants; a request over max_records_per_request names the limit."""
    limits = Limits()
    assert (limits.max_request_bytes, limits.max_records_per_request, limits.max_concurrent_streams) == (
        DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RECORDS_PER_REQUEST, DEFAULT_MAX_CONCURRENT_STREAMS)
    small = Limits.from_toml({"max_records_per_request": 3, "max_concurrent_streams": -1})
    assert small.max_concurrent_streams is None
    small.check_record_count(3, "a Produce request")
    with pytest.raises(InvalidArgument, match=r"4 records.*at most 3.*max_records_per_request"):
        small.check_record_count(4, "a Produce request")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[limit]\n", "unknown section"),
        ("[limits]\nmax_request_byte = 5\n", "unknown setting"),
        ("[limits]\nmax_request_bytes = 5\n", "max_request_bytes"),
        ("[limits]\nmax_records_per_request = 0\n", "at least 1"),
        ("[quotas]\nproduce_bytes_per_second = 'fast'\n", "integer"),
        ("[quotas]\nburst_ms = 0\n", "burst_ms"),
        ("[principals.x]\ntopics = {}\n", "needs token_sha256"),
        ("[principals.x]\ntoken_sha256 = 'abc'\n", "64 lowercase hex"),
        ("[principals.'bad name']\ntoken_sha256 = '" + "a" * 64 + "'\n", "principal name"),
        ("[principals.x]\ntoken_sha256 = '" + "a" * 64 + "'\nroles = []\n", "unknown key"),
        ("[principals.x]\ntoken_sha256 = '" + "a" * 64 + "'\n[principals.y]\ntoken_sha256 = '" + "a" * 64 + "'\n",
         "share a token hash"),
        ("not toml at all ===", "not valid TOML"),
    ],
)
def test_security_file_errors_name_the_problem(tmp_path: Path, text: str, error: str) -> None:
    """A broken security file is refused at startup with the file and the offending key named."""
    path = tmp_path / "security.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=error) as caught:
        SecurityConfig.from_file(path)
    assert str(path) in caught.value.message


def test_security_file_sections_and_auth_switch(tmp_path: Path) -> None:
    """No [principals]: no tokens; a [principals] table turns authentication on; an empty file changes nothing."""
    path = tmp_path / "s.toml"
    path.write_text("")
    empty = SecurityConfig.from_file(path)
    assert empty.auth is None and empty.limits == Limits() and not empty.quotas.any
    path.write_text("[limits]\nmax_records_per_request = -1\n")
    assert not SecurityConfig.from_file(path).needs_interceptor
    token = new_token()
    path.write_text(f"[principals.ops]\ntoken_sha256 = ['{hash_token(token)}']\ntopics = {{ '*' = ['admin'] }}\n")
    config = SecurityConfig.from_file(path)
    assert config.auth is not None and config.auth.authenticate([("authorization", f"Bearer {token}")]).name == "ops"


def test_authenticator_answers_missing_malformed_and_unknown_tokens() -> None:
    """Missing, non-Bearer and unknown tokens are Unauthenticated with distinct messages that never echo the token."""
    token = new_token()
    auth = Authenticator([Principal("svc", (hash_token(token),))])
    assert token.startswith("lst_") and len(token) > 40
    assert auth.authenticate([("x", "y"), ("authorization", f"bearer  {token} ")]).name == "svc"
    with pytest.raises(Unauthenticated, match="requires a token"):
        auth.authenticate([])
    with pytest.raises(Unauthenticated, match="must be `Bearer"):
        auth.authenticate([("authorization", f"Basic {token}")])
    with pytest.raises(Unauthenticated, match="not valid") as caught:
        auth.authenticate([("authorization", f"Bearer {token}x")])
    assert token not in caught.value.message


def test_exposure_warning_only_off_loopback_without_tls_and_tokens() -> None:
    """Loopback never warns; elsewhere the warning says what is missing (TLS, tokens or both)."""
    assert exposure_warning("127.0.0.1:1", "127.0.0.1", tls=False, auth=False) is None
    assert exposure_warning("[::1]:1", "::1", tls=False, auth=False) is None
    assert exposure_warning("0.0.0.0:1", "0.0.0.0", tls=True, auth=True) is None
    assert "without TLS or authentication" in exposure_warning("0.0.0.0:1", "0.0.0.0", tls=False, auth=False)
    assert "clear text" in exposure_warning("10.0.0.1:1", "10.0.0.1", tls=False, auth=True)
    assert "client CA" in exposure_warning("10.0.0.1:1", "10.0.0.1", tls=True, mutual_tls=True, auth=False)
