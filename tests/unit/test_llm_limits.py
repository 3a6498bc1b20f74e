"""Guards around provider calls: hand-computed rate, retry, breaker and cost cases, plus
properties of each under random call times."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bistouryd.llm.limits import (
    FAILURE_KINDS,
    BreakerSettings,
    CircuitBreaker,
    DailyCostCap,
    RateLimiter,
    RateLimits,
    RetryPolicy,
    RetrySettings,
    retryable,
)

MIDNIGHT_S = 20_000 * 86_400  # 2024-10-04 00:00:00 UTC


def limiter(rpm: int | None = None, tpm: int | None = None) -> RateLimiter:
    return RateLimiter(RateLimits(requests_per_min=rpm, tokens_per_min=tpm))


# --- RateLimiter ---------------------------------------------------------------------


def test_unlimited_limiter_always_allows() -> None:
    lim = limiter()
    assert all(lim.reserve(0.0, 10**9) == 0.0 for _ in range(1000))
    assert lim.tokens_available(0.0) is None


def test_requests_sliding_window_waits_for_the_oldest_grant() -> None:
    lim = limiter(rpm=2)
    assert lim.reserve(0.0, 0) == 0.0
    assert lim.reserve(1.0, 0) == 0.0
    assert lim.reserve(10.0, 0) == 50.0  # the grant at 0 frees its slot at 60
    assert lim.reserve(60.0, 0) == 0.0
    assert lim.reserve(60.5, 0) == 0.5  # the grant at 1 frees at 61


def test_token_bucket_refills_continuously() -> None:
    lim = limiter(tpm=600)  # 10 tokens per second
    assert lim.reserve(0.0, 400) == 0.0
    assert lim.tokens_available(0.0) == 200
    assert lim.reserve(0.0, 300) == 10.0  # 100 missing at 10/s
    assert lim.tokens_available(5.0) == 250  # refusal consumed nothing
    assert lim.reserve(10.0, 300) == 0.0
    assert lim.tokens_available(10.0) == 0
    assert lim.tokens_available(15.0) == 50
    assert lim.tokens_available(1000.0) == 600  # never above one minute's budget


def test_refused_reservation_consumes_no_request_either() -> None:
    lim = limiter(rpm=10, tpm=600)
    assert lim.reserve(0.0, 600) == 0.0
    assert lim.reserve(0.0, 300) == 30.0  # tokens bind, requests do not
    assert lim.reserve(30.0, 300) == 0.0
    for _ in range(8):  # 2 used, 8 left: the refused call took no request slot
        assert lim.reserve(30.0, 0) == 0.0
    assert lim.reserve(30.0, 0) == 30.0


def test_wait_is_the_longest_of_both_limits() -> None:
    lim = limiter(rpm=1, tpm=600)
    assert lim.reserve(0.0, 100) == 0.0
    assert lim.reserve(10.0, 600) == 50.0  # requests: 50 s; tokens: 200 missing = 20 s
    assert lim.reserve(50.0, 600) == 10.0
    assert lim.reserve(60.0, 600) == 0.0


def test_settle_corrects_the_estimate() -> None:
    lim = limiter(tpm=600)
    assert lim.reserve(0.0, 400) == 0.0
    lim.settle(tokens_actual=500, tokens_estimate=400)  # used 100 more
    assert lim.tokens_available(0.0) == 100
    lim.settle(tokens_actual=100, tokens_estimate=400)  # used 300 fewer
    assert lim.tokens_available(0.0) == 400
    lim.settle(tokens_actual=0, tokens_estimate=10_000)  # refunds stop at the capacity
    assert lim.tokens_available(0.0) == 600


def test_underestimate_leaves_debt_that_delays_later_calls() -> None:
    lim = limiter(tpm=600)
    assert lim.reserve(0.0, 500) == 0.0
    lim.settle(tokens_actual=1000, tokens_estimate=500)
    assert lim.tokens_available(0.0) == -400
    assert lim.reserve(0.0, 0) == 40.0  # even a zero-token call waits out the debt
    assert lim.reserve(40.0, 0) == 0.0


def test_request_above_the_whole_budget_goes_when_the_bucket_is_full() -> None:
    lim = limiter(tpm=600)
    assert lim.reserve(0.0, 100) == 0.0
    assert lim.reserve(0.0, 1000) == 10.0  # waits for a full bucket, not for 1000 tokens
    assert lim.reserve(10.0, 1000) == 0.0
    assert lim.tokens_available(10.0) == -400
    assert lim.reserve(10.0, 1000) == 100.0  # the next oversized one waits debt + refill
    assert lim.reserve(30.0, 100) == 30.0  # smaller calls pay only the debt plus themselves


def test_time_going_backwards_is_no_time_passing() -> None:
    lim = limiter(rpm=1, tpm=600)
    assert lim.reserve(100.0, 600) == 0.0
    assert lim.tokens_available(50.0) == 0
    assert lim.reserve(50.0, 0) == 60.0  # measured from the effective now, 100
    assert lim.reserve(160.0, 600) == 0.0


def test_waiting_the_returned_time_is_enough_despite_float_rounding() -> None:
    lim = limiter(rpm=3)
    for t in (0.1, 0.2, 0.3):
        assert lim.reserve(t, 0) == 0.0
    now = 0.7
    for _ in range(50):
        wait = lim.reserve(now, 0)
        assert wait > 0
        now += wait
        assert lim.reserve(now, 0) == 0.0


@pytest.mark.parametrize("base_s", [0.1, 1e6 + 0.1, 3.7e9 + 0.3])
def test_tiny_waits_near_large_times_still_suffice(base_s: float) -> None:
    lim = limiter(rpm=1)
    assert lim.reserve(base_s, 0) == 0.0
    now = base_s + 60.0
    for _ in range(3):  # land just before the expiry
        now = math.nextafter(now, -math.inf)
    wait = lim.reserve(now, 0)
    assert 0 < wait < 1e-3
    assert lim.reserve(now + wait, 0) == 0.0


def test_limiter_rejects_negative_tokens_and_bad_limits() -> None:
    lim = limiter(tpm=600)
    with pytest.raises(ValueError):
        lim.reserve(0.0, -1)
    with pytest.raises(ValueError):
        lim.settle(-1, 0)
    with pytest.raises(ValidationError):
        RateLimits(requests_per_min=0)
    with pytest.raises(ValidationError):
        RateLimits(tokens_per_min=-5)
    with pytest.raises(ValidationError):
        RateLimits.model_validate({"rpm": 5})


@settings(max_examples=100, deadline=None)
@given(
    rpm=st.integers(1, 10),
    steps=st.lists(
        st.tuples(st.floats(0, 40, allow_nan=False), st.booleans()), min_size=1, max_size=200
    ),
)
def test_never_more_than_rpm_in_any_60s_window(rpm: int, steps: list[tuple[float, bool]]) -> None:
    lim = limiter(rpm=rpm)
    grants: list[float] = []
    now, wait = 0.0, 0.0
    for dt, retry_at_wait in steps:
        waited = retry_at_wait and wait > 0
        now += wait if waited else dt
        wait = lim.reserve(now, 0)
        assert wait >= 0
        if waited:
            assert wait == 0.0  # a caller that sleeps exactly the wait gets through
        if wait == 0.0:
            grants.append(now)
    for i, start in enumerate(grants):
        assert sum(1 for g in grants[i:] if g - start < 60.0) <= rpm


@settings(max_examples=100, deadline=None)
@given(
    tpm=st.integers(1, 10_000),
    calls=st.lists(
        st.tuples(st.floats(0, 30, allow_nan=False), st.floats(0, 1)), min_size=1, max_size=100
    ),
)
def test_tokens_granted_stay_within_the_bucket_bound(
    tpm: int, calls: list[tuple[float, float]]
) -> None:
    """Without settling, tokens in [a, b] never exceed one budget plus the refill since a."""
    lim = limiter(tpm=tpm)
    grants: list[tuple[float, int]] = []
    now = 0.0
    for dt, share in calls:
        now += dt
        tokens = int(share * tpm)
        if lim.reserve(now, tokens) == 0.0:
            grants.append((now, tokens))
    for i, (start, _) in enumerate(grants):
        used = 0
        for end, tokens in grants[i:]:
            used += tokens
            assert used <= tpm + (end - start) * tpm / 60 + 1e-6 * tpm


# --- RetryPolicy ---------------------------------------------------------------------


def test_failure_kinds_retryable() -> None:
    assert {k for k in FAILURE_KINDS if retryable(k)} == {
        "rate_limited",
        "server_error",
        "timeout",
        "connection",
    }
    assert not retryable("invalid_answer")
    assert not retryable("auth")
    assert not retryable("bad_request")


def test_backoff_caps_double_up_to_max_s() -> None:
    s = RetrySettings(initial_s=1.0, max_s=8.0, max_attempts=10, max_retry_after_s=60)
    policy = RetryPolicy(s, random.Random(1))
    caps = {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0, 5: 8.0, 9: 8.0}
    for attempt, cap in caps.items():
        delays = [policy.delay_s(attempt, None) for _ in range(300)]
        assert all(d is not None and 0.0 <= d <= cap for d in delays)
        assert max(d for d in delays if d is not None) > cap * 0.9  # full jitter spans it
    assert policy.delay_s(10, None) is None  # ten attempts made: give up


def test_backoff_jitter_comes_from_the_given_rng() -> None:
    s = RetrySettings(initial_s=0.5, max_s=30.0, max_attempts=5)
    delay = RetryPolicy(s, random.Random(7)).delay_s(3, None)
    assert delay == random.Random(7).uniform(0.0, 2.0)


def test_retry_after_is_a_floor_and_has_a_limit() -> None:
    s = RetrySettings(initial_s=1.0, max_s=8.0, max_attempts=5, max_retry_after_s=30)
    policy = RetryPolicy(s, random.Random(3))
    assert policy.delay_s(1, 20.0) == 20.0  # longer than max_s: the server knows best
    assert policy.delay_s(1, 30.0) == 30.0  # exactly the limit is still honoured
    assert policy.delay_s(1, 30.5) is None
    for _ in range(100):
        delay = policy.delay_s(4, 0.5)
        assert delay is not None and 0.5 <= delay <= 8.0
    assert policy.delay_s(5, 1.0) is None  # attempts run out first


def test_single_attempt_never_retries_and_attempts_count_from_one() -> None:
    policy = RetryPolicy(RetrySettings(max_attempts=1), random.Random(0))
    assert policy.delay_s(1, None) is None
    with pytest.raises(ValueError):
        policy.delay_s(0, None)


def test_retry_settings_bounds() -> None:
    with pytest.raises(ValidationError):
        RetrySettings(initial_s=10.0, max_s=5.0)
    with pytest.raises(ValidationError):
        RetrySettings(initial_s=0.0)
    with pytest.raises(ValidationError):
        RetrySettings(max_attempts=0)
    with pytest.raises(ValidationError):
        RetrySettings(max_retry_after_s=-1)
    s = RetrySettings()
    with pytest.raises(ValidationError):
        s.max_s = 1.0


@settings(max_examples=100, deadline=None)
@given(
    initial_s=st.floats(0.01, 60),
    extra_s=st.floats(0, 540),
    max_attempts=st.integers(1, 20),
    max_retry_after_s=st.floats(0, 3600),
    attempt=st.integers(1, 25),
    retry_after_s=st.none() | st.floats(0, 7200),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_in_bounds(
    initial_s: float,
    extra_s: float,
    max_attempts: int,
    max_retry_after_s: float,
    attempt: int,
    retry_after_s: float | None,
    seed: int,
) -> None:
    s = RetrySettings(
        initial_s=initial_s,
        max_s=min(600.0, initial_s + extra_s),
        max_attempts=max_attempts,
        max_retry_after_s=max_retry_after_s,
    )
    delay = RetryPolicy(s, random.Random(seed)).delay_s(attempt, retry_after_s)
    gives_up = attempt >= max_attempts or (
        retry_after_s is not None and retry_after_s > max_retry_after_s
    )
    assert (delay is None) == gives_up
    if delay is None:
        return
    if retry_after_s is None:
        assert 0.0 <= delay <= s.max_s
    else:
        assert retry_after_s <= delay <= max(s.max_s, retry_after_s)


# --- CircuitBreaker ------------------------------------------------------------------


def breaker(**kw: float) -> CircuitBreaker:
    base: dict[str, float] = {
        "failure_threshold": 3,
        "cooldown_s": 10.0,
        "max_cooldown_s": 35.0,
        "report_timeout_s": 100.0,
    }
    return CircuitBreaker(BreakerSettings.model_validate(base | kw))


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = breaker()
    b.record_failure(0.0)
    b.record_failure(1.0)
    b.record_success(2.0)  # resets the count
    b.record_failure(3.0)
    b.record_failure(4.0)
    assert b.state(4.0) == "closed" and b.allow(4.0)
    assert b.consecutive_failures == 2
    b.record_failure(5.0)
    assert b.state(5.0) == "open"
    assert b.opened_until_s == 15.0
    assert not b.allow(14.9)


def test_half_open_lets_exactly_one_trial_and_success_closes() -> None:
    b = breaker(failure_threshold=1)
    b.record_failure(0.0)
    assert b.state(10.0) == "half_open"
    assert b.allow(10.0)
    assert b.state(10.0) == "half_open"
    assert not b.allow(10.0)
    assert not b.allow(50.0)  # still waiting for the trial's outcome
    b.record_success(51.0)
    assert b.state(51.0) == "closed"
    assert b.opened_until_s is None
    assert b.allow(51.0) and b.allow(51.0)


def test_failed_trials_double_the_cooldown_up_to_the_max() -> None:
    b = breaker(failure_threshold=1)
    b.record_failure(0.0)  # open 10 s
    now = 0.0
    for cooldown in (20.0, 35.0, 35.0):  # 10 → 20 → 40 capped at 35
        now = b.opened_until_s or 0.0
        assert b.allow(now)
        b.record_failure(now + 1)
        assert b.opened_until_s == now + 1 + cooldown
    now = (b.opened_until_s or 0.0) + 1
    assert b.allow(now)
    b.record_success(now)
    b.record_failure(now)  # a fresh trip uses the base cooldown again
    assert b.opened_until_s == now + 10.0


def test_unreported_trial_times_out_as_a_failure() -> None:
    b = breaker(failure_threshold=1, report_timeout_s=50.0)
    b.record_failure(0.0)
    assert b.allow(10.0)
    assert not b.allow(59.0)
    assert b.state(60.0) == "open"  # timed out at 60: re-opened with the cooldown doubled
    assert b.opened_until_s == 80.0
    assert not b.allow(79.0)
    assert b.allow(80.0)


def test_outcomes_of_calls_started_before_the_trip_are_ignored() -> None:
    b = breaker(failure_threshold=1)
    assert b.allow(0.0) and b.allow(0.0) and b.allow(0.0)
    b.record_failure(0.0)
    b.record_success(1.0)  # a straggler started before the trip
    assert b.state(1.0) == "open"
    assert b.opened_until_s == 10.0
    assert not b.allow(10.0)  # one straggler still out: its outcome could pass for the trial's
    b.record_failure(11.0)
    assert b.opened_until_s == 10.0  # neither extended nor taken for a trial
    assert b.state(11.0) == "half_open"
    assert b.allow(11.0)
    b.record_success(12.0)
    assert b.state(12.0) == "closed"


def test_lost_calls_stop_blocking_the_trial_after_the_report_timeout() -> None:
    b = breaker(failure_threshold=1, report_timeout_s=50.0)
    assert b.allow(0.0) and b.allow(5.0)
    b.record_failure(6.0)  # the other call never reports
    assert not b.allow(54.9)
    assert b.allow(55.0)  # 50 s after the newest allowed call: presumed lost


def test_breaker_settings_bounds() -> None:
    with pytest.raises(ValidationError):
        BreakerSettings(cooldown_s=60.0, max_cooldown_s=30.0)
    with pytest.raises(ValidationError):
        BreakerSettings(failure_threshold=0)
    with pytest.raises(ValidationError):
        BreakerSettings(cooldown_s=0.0)


@settings(max_examples=100, deadline=None)
@given(
    threshold=st.integers(1, 4),
    cooldown_s=st.floats(1, 50),
    report_timeout_s=st.floats(1, 200),
    ops=st.lists(
        st.tuples(
            st.floats(0, 30, allow_nan=False),
            st.sampled_from(["call", "call", "ok", "fail", "fail"]),
            st.integers(0, 10),
        ),
        max_size=150,
    ),
)
def test_breaker_never_has_two_live_trials(
    threshold: int,
    cooldown_s: float,
    report_timeout_s: float,
    ops: list[tuple[float, str, int]],
) -> None:
    """Callers report in any order within the report timeout, or never (lost)."""
    b = CircuitBreaker(
        BreakerSettings(
            failure_threshold=threshold,
            cooldown_s=cooldown_s,
            max_cooldown_s=cooldown_s * 8,
            report_timeout_s=report_timeout_s,
        )
    )
    in_flight: list[float] = []  # when each unreported call was allowed
    now = 0.0
    for dt, op, pick in ops:
        now += dt
        in_flight = [t for t in in_flight if now - t < report_timeout_s]  # the rest are lost
        if op == "call":
            before = b.state(now)
            allowed = b.allow(now)
            if before == "open":
                assert not allowed
            elif before == "closed":
                assert allowed
            elif allowed:  # a trial: nothing else may be out, least of all another trial
                assert not in_flight
                assert b.state(now) == "half_open"
                assert not b.allow(now)
            if allowed:
                in_flight.append(now)
        elif in_flight:
            in_flight.pop(pick % len(in_flight))
            (b.record_success if op == "ok" else b.record_failure)(now)


# --- DailyCostCap --------------------------------------------------------------------


def test_midnight_constant_is_utc_midnight() -> None:
    assert datetime.fromtimestamp(MIDNIGHT_S, timezone.utc).strftime("%H:%M:%S") == "00:00:00"


def test_cost_cap_crossing_is_reported_once() -> None:
    cap = DailyCostCap(cap_usd=10.0)
    assert cap.add(MIDNIGHT_S - 100, 6.0) is False
    assert not cap.exceeded(MIDNIGHT_S - 100)
    assert cap.add(MIDNIGHT_S - 50, 5.0) is True  # this addition crossed
    assert cap.exceeded(MIDNIGHT_S - 50)
    assert cap.add(MIDNIGHT_S - 1, 1.0) is False  # already over: no second alert
    assert cap.spent_today_usd(MIDNIGHT_S - 1) == 12.0


def test_cost_cap_resets_at_utc_midnight() -> None:
    cap = DailyCostCap(cap_usd=10.0)
    cap.add(MIDNIGHT_S - 1, 11.0)
    assert cap.exceeded(MIDNIGHT_S - 0.001)
    assert cap.spent_today_usd(MIDNIGHT_S) == 0.0
    assert not cap.exceeded(MIDNIGHT_S)
    assert cap.add(MIDNIGHT_S, 9.5) is False
    assert cap.add(MIDNIGHT_S + 86_399, 0.5) is True  # reaching the cap exactly counts
    assert cap.spent_today_usd(MIDNIGHT_S + 86_400) == 0.0


def test_cost_cap_clock_stepping_back_keeps_the_later_day() -> None:
    cap = DailyCostCap(cap_usd=10.0)
    cap.add(MIDNIGHT_S - 10, 9.0)
    cap.add(MIDNIGHT_S + 10, 2.0)
    assert cap.add(MIDNIGHT_S - 5, 1.0) is False  # counted into the new day
    assert cap.spent_today_usd(MIDNIGHT_S + 20) == 3.0
    assert cap.spent_today_usd(MIDNIGHT_S - 5) == 3.0


def test_cost_cap_unlimited_still_tracks_spending() -> None:
    cap = DailyCostCap(cap_usd=None)
    assert cap.add(MIDNIGHT_S, 1e9) is False
    assert not cap.exceeded(MIDNIGHT_S)
    assert cap.spent_today_usd(MIDNIGHT_S) == 1e9


def test_cost_cap_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        DailyCostCap(cap_usd=0.0)
    with pytest.raises(ValueError):
        DailyCostCap(cap_usd=float("nan"))
    with pytest.raises(ValueError):
        DailyCostCap(cap_usd=1.0).add(MIDNIGHT_S, -0.01)
