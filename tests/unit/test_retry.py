"""Retry rules and the client's settings, without any I/O."""

from __future__ import annotations

import email.utils
import time

import backoff
import httpx
import pytest

from otel_dist import ConfigError, ServiceClient, load_settings
from otel_dist._resilience._breaker import Breaker
from otel_dist._resilience._budget import RetryBudget
from otel_dist._resilience._options import resolve_options
from otel_dist._resilience._retry import (
    AttemptFailed,
    CallState,
    error_retry_reason,
    is_replayable,
    parse_retry_after,
    should_give_up,
    wait_times,
)

# --- what may be resent ---


@pytest.mark.parametrize(
    ("method", "headers", "replayable"),
    [
        ("GET", {}, True),
        ("HEAD", {}, True),
        ("OPTIONS", {}, True),
        ("PUT", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("PATCH", {}, False),
        ("POST", {"Idempotency-Key": "k1"}, True),
        ("PATCH", {"idempotency-key": "k1"}, True),
    ],
)
def test_only_idempotent_or_keyed_requests_are_replayable(method, headers, replayable):
    assert is_replayable(httpx.Request(method, "http://x/", headers=headers)) is replayable


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ConnectError("refused"), "connect_error"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (TimeoutError(), "timeout"),
        (httpx.ReadError("reset"), "network_error"),
        (httpx.RemoteProtocolError("garbled"), "network_error"),
        (httpx.UnsupportedProtocol("ftp"), None),
        (httpx.StreamConsumed(), None),
    ],
)
def test_transport_errors_map_to_a_bounded_retry_reason(error, reason):
    assert error_retry_reason(error) == reason


# --- Retry-After ---


def test_retry_after_delay_seconds():
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("2.5") == 2.5


@pytest.mark.parametrize("bad", [None, "", "-1", "soon", "nan", "inf"])
def test_retry_after_invalid_is_ignored(bad):
    assert parse_retry_after(bad) is None


def test_retry_after_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


# --- waits and give-ups ---


def call_state(
    method: str = "GET", remaining: float = 100.0, breaker: Breaker | None = None, budget: RetryBudget | None = None
) -> CallState:
    breaker = breaker or Breaker("orders", failure_threshold=1, success_threshold=1, reset_timeout=60)
    budget = budget or RetryBudget("orders", ratio=0.0, min_per_second=1000.0, window=10.0)
    return CallState(httpx.Request(method, "http://x/"), time.monotonic() + remaining, breaker, budget)


def test_waits_are_full_jitter_over_capped_exponential():
    call = call_state()
    first_waits = []
    for _ in range(200):
        gen = wait_times(base=2.0, max_value=3.0)
        next(gen)
        waits = [gen.send(AttemptFailed(call, reason="timeout")) for _ in range(5)]
        assert all(0.0 <= w <= cap for w, cap in zip(waits, [1.0, 2.0, 3.0, 3.0, 3.0], strict=True))
        first_waits.append(waits[0])
    assert min(first_waits) < 0.2 and max(first_waits) > 0.8  # jittered across [0, 1]


def test_retry_after_is_used_as_is_without_jitter():
    call = call_state()
    gen = wait_times(base=2.0, max_value=0.01)
    next(gen)
    assert gen.send(AttemptFailed(call, reason="status_429", retry_after=7.0)) == 7.0


def test_a_wait_that_reaches_the_deadline_ends_the_loop():
    call = call_state(remaining=5.0)
    gen = wait_times(base=2.0, max_value=1.0)
    next(gen)
    with pytest.raises(StopIteration):
        gen.send(AttemptFailed(call, reason="status_503", retry_after=6.0))
    assert call.give_up_reason == "deadline"


def test_give_up_reasons():
    call = call_state()
    assert should_give_up(AttemptFailed(call, reason="timeout")) is False
    assert should_give_up(AttemptFailed(call, reason="timeout", give_up="non_retryable")) is True
    assert call.give_up_reason == "non_retryable"
    late = call_state(remaining=-0.1)
    assert should_give_up(AttemptFailed(late, reason="timeout")) is True
    assert late.give_up_reason == "deadline"
    breaker = Breaker("orders", failure_threshold=1, success_threshold=1, reset_timeout=60)
    ticket, _ = breaker.admit()
    breaker.record(ticket, "failure")
    tripped = call_state(breaker=breaker)
    assert should_give_up(AttemptFailed(tripped, reason="status_503")) is True
    assert tripped.give_up_reason == "circuit_open"


async def test_backoff_drives_the_rules_to_max_tries():
    call = call_state()
    tries = []

    @backoff.on_exception(
        wait_times, AttemptFailed, max_tries=3, jitter=None, giveup=should_give_up, logger=None, base=2, max_value=0
    )
    async def attempt() -> None:
        tries.append(1)
        raise AttemptFailed(call, reason="status_503")

    with pytest.raises(AttemptFailed):
        await attempt()
    assert len(tries) == 3 and call.give_up_reason is None  # None = max_tries


# --- settings ---


def test_overrides_win_and_the_environment_is_read():
    settings = load_settings(
        {
            "SERVICE_CLIENT_MAX_RETRIES": "5",
            "CIRCUIT_BREAKER_TIMEOUT": "0.2",
            "SERVICE_CLIENT_TIMEOUT": "9",
            "ENVIRONMENT": "test",
        }
    )
    opts = resolve_options(settings, {"max_retries": 1, "timeout": None})
    assert (opts.max_retries, opts.timeout, opts.breaker_timeout) == (1, 9.0, 0.2)
    assert (opts.retry_backoff, opts.failure_threshold, opts.success_threshold) == (2.0, 5, 2)


@pytest.mark.parametrize(
    ("keyword", "value", "env"),
    [
        ("max_retries", -1, "SERVICE_CLIENT_MAX_RETRIES"),
        ("max_retries", 1.5, "SERVICE_CLIENT_MAX_RETRIES"),
        ("max_retries", True, "SERVICE_CLIENT_MAX_RETRIES"),
        ("retry_backoff", 0.5, "SERVICE_CLIENT_RETRY_BACKOFF"),
        ("timeout", 0, "SERVICE_CLIENT_TIMEOUT"),
        ("failure_threshold", 0, "CIRCUIT_BREAKER_FAILURE_THRESHOLD"),
        ("breaker_timeout", "soon", "CIRCUIT_BREAKER_TIMEOUT"),
    ],
)
def test_bad_overrides_are_clear_errors(keyword, value, env):
    with pytest.raises(ConfigError) as caught:
        resolve_options(load_settings({"ENVIRONMENT": "test"}), {keyword: value})
    assert keyword in str(caught.value) and env in str(caught.value) and "accepted" in str(caught.value)


def test_bad_environment_is_a_clear_error():
    with pytest.raises(ConfigError, match="SERVICE_CLIENT_MAX_RETRIES"):
        load_settings({"SERVICE_CLIENT_MAX_RETRIES": "lots"})


def test_client_constructor_validates(telemetry):
    with pytest.raises(ConfigError, match="max_retries"):
        ServiceClient("orders", "http://x", max_retries=-2)
    with pytest.raises(ValueError, match="target"):
        ServiceClient("  ", "http://x")


# --- retry budget ---


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_ratio_of_calls_plus_floor():
    clock = Clock()
    budget = RetryBudget("orders", ratio=0.2, min_per_second=0.5, window=10.0, clock=clock)
    for _ in range(100):
        budget.deposit()
    # 0.2 x 100 calls + 0.5/s x 10 s = 25 retries, not one more
    assert [budget.try_withdraw() for _ in range(26)].count(True) == 25
    assert budget.remaining() == 0.0
    assert budget.try_withdraw() is False


def test_budget_slides_calls_and_retries_out_of_the_window():
    clock = Clock()
    budget = RetryBudget("orders", ratio=1.0, min_per_second=0.0, window=10.0, clock=clock)
    budget.deposit()
    assert budget.try_withdraw() is True
    assert budget.try_withdraw() is False
    clock.now += 5.0  # half a window later: the call and its retry still count
    budget.deposit()
    assert budget.remaining() == 1.0
    clock.now += 6.0  # the first call and retry left the window; the second call is still in it
    assert budget.remaining() == 1.0
    clock.now += 100.0  # everything left
    assert budget.remaining() == 0.0
    assert budget.try_withdraw() is False


def test_wait_generator_gives_up_with_budget_exhausted():
    budget = RetryBudget("orders", ratio=0.0, min_per_second=0.1, window=10.0)  # one retry in all
    call = call_state(budget=budget)
    gen = wait_times(base=2.0, max_value=0.01)
    next(gen)
    assert gen.send(AttemptFailed(call, reason="timeout")) <= 0.01
    with pytest.raises(StopIteration):
        gen.send(AttemptFailed(call, reason="timeout"))
    assert call.give_up_reason == "budget_exhausted"


def test_budget_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"SERVICE_CLIENT_RETRY_BUDGET: invalid value '-0\.1'"):
        load_settings({"SERVICE_CLIENT_RETRY_BUDGET": "-0.1"})
    with pytest.raises(ConfigError, match="SERVICE_CLIENT_RETRY_BUDGET_WINDOW"):
        load_settings({"SERVICE_CLIENT_RETRY_BUDGET_WINDOW": "0"})
    s = load_settings({})
    assert (s.client_retry_budget, s.client_retry_budget_min, s.client_retry_budget_window) == (0.2, 3.0, 10.0)
