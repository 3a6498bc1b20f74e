"""Guards around each language-model provider call: rate limits, retries, a circuit
breaker and a daily cost cap.

All four are pure bookkeeping so the trader agent can test and replay them: nothing here
sleeps, reads a clock, does I/O or draws randomness of its own. Every time-dependent method
takes the time as an argument — ``now_s`` (monotonic seconds) for the limiter and the
breaker, ``wall_s`` (epoch seconds) for the cost cap, whose day boundary is a calendar one.
Retry jitter comes from a seeded ``random.Random`` the caller passes in.

Intended use per call: ``cost_cap.exceeded`` → ``breaker.allow`` (once allowed, the
outcome must be reported) → ``limiter.reserve`` (sleep what it says, ask again) → call →
``limiter.settle`` with the usage reported, ``breaker.record_*``, ``cost_cap.add``. On
failure ``retryable(kind)`` and ``retry.delay_s`` decide whether and when to try again;
each retry is a new call through the same steps.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

WINDOW_S = 60.0
"""Length of the "per minute" in requests_per_min and tokens_per_min."""

DAY_S = 86_400
"""Seconds in a UTC day: POSIX time has no leap seconds, so days start at multiples."""

FailureKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "invalid_answer",
    "auth",
    "bad_request",
]
"""Why a provider call failed; the caller classifies its provider's errors into these."""

FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)
RETRYABLE_KINDS: frozenset[FailureKind] = frozenset(
    ("rate_limited", "server_error", "timeout", "connection")
)

BreakerState = Literal["closed", "open", "half_open"]


def retryable(kind: FailureKind) -> bool:
    """Whether the same request may succeed if sent again.

    Transient provider or network trouble is; a malformed answer (fall back to the next
    model instead), bad credentials and a rejected request are not — repeating them only
    burns budget.
    """
    return kind in RETRYABLE_KINDS


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimits(_Settings):
    """A provider's published per-minute limits; None means that dimension is unlimited."""

    requests_per_min: int | None = Field(default=None, ge=1, le=1_000_000)
    tokens_per_min: int | None = Field(default=None, ge=1, le=1_000_000_000)


class RetrySettings(_Settings):
    """Backoff for retryable failures; ``max_attempts`` counts the first try."""

    initial_s: float = Field(default=1.0, gt=0, le=60, description="cap of the first delay")
    max_s: float = Field(default=30.0, gt=0, le=600, description="cap of any backoff delay")
    max_attempts: int = Field(default=4, ge=1, le=20)
    max_retry_after_s: float = Field(
        default=60.0, ge=0, le=3600, description="give up if the server asks to wait longer"
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be at least initial_s")
        return self


class BreakerSettings(_Settings):
    """When to stop calling a failing provider, and for how long."""

    failure_threshold: int = Field(
        default=5, ge=1, le=100, description="consecutive failures that open the breaker"
    )
    cooldown_s: float = Field(default=30.0, gt=0, le=3600, description="first open period")
    max_cooldown_s: float = Field(default=600.0, gt=0, le=86_400)
    report_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="an allowed call not reported within this is presumed lost; "
        "set it above the provider call timeout",
    )

    @model_validator(mode="after")
    def _ordered(self) -> BreakerSettings:
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be at least cooldown_s")
        return self


class RateLimiter:
    """Client-side pacing for one provider, so its limits are hit here, not as HTTP 429s.

    Requests: a sliding 60 s window. A grant at time t counts until t + 60 s, so no
    half-open 60 s interval ever holds more than ``requests_per_min`` grants, whether the
    provider counts per calendar minute, per sliding minute or with a bucket (a plain
    token bucket would allow up to twice the limit within one minute: a full burst, then
    the refill).

    Tokens: a bucket of ``tokens_per_min`` that refills continuously at
    ``tokens_per_min / 60`` per second. A bucket, not a window, because token counts are
    estimates until the provider reports usage, and ``settle`` can then correct the level
    in one step. It may run negative (debt): a call that used more than estimated delays
    the next ones by exactly the excess.

    A request estimated above the whole per-minute token budget could never fit; it is
    allowed once the bucket is full (no longer: waiting for more would be forever) and
    drives it into debt, which the calls after it pay off.
    """

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._grants_s: deque[float] = deque()
        self._tokens: float = float(limits.tokens_per_min or 0)
        self._last_s: float | None = None

    def reserve(self, now_s: float, tokens_estimate: int) -> float:
        """0.0 and consume one request and the estimate if allowed now, else the seconds to
        wait before asking again (nothing consumed).

        Time that goes backwards is taken as no time passing.
        """
        if tokens_estimate < 0:
            raise ValueError(f"tokens_estimate must be >= 0, got {tokens_estimate}")
        now_s = self._advance(now_s)
        wait_s = max(self._request_wait_s(now_s), self._token_wait_s(tokens_estimate))
        if wait_s > 0:
            return wait_s
        if self.limits.requests_per_min is not None:
            self._grants_s.append(now_s)
        if self.limits.tokens_per_min is not None:
            self._tokens -= tokens_estimate
        return 0.0

    def settle(self, tokens_actual: int, tokens_estimate: int) -> None:
        """Replace a granted call's estimate with the usage the provider reported.

        A call that never reached the provider settles with ``tokens_actual=0``; its
        request slot stays used (harmless, and the provider may have counted it).
        """
        if tokens_actual < 0 or tokens_estimate < 0:
            raise ValueError("token counts must be >= 0")
        cap = self.limits.tokens_per_min
        if cap is not None:
            self._tokens = min(float(cap), self._tokens - (tokens_actual - tokens_estimate))

    def tokens_available(self, now_s: float) -> float | None:
        """The token bucket's level (negative while in debt); None if tokens are unlimited."""
        if self.limits.tokens_per_min is None:
            return None
        self._advance(now_s)
        return self._tokens

    def _advance(self, now_s: float) -> float:
        """Refill the bucket and expire old grants up to ``now_s``; the effective now."""
        if self._last_s is not None and now_s <= self._last_s:
            now_s = self._last_s
        cap = self.limits.tokens_per_min
        if cap is not None and self._last_s is not None:
            refill = (now_s - self._last_s) * cap / WINDOW_S
            self._tokens = min(float(cap), self._tokens + refill)
        self._last_s = now_s
        while self._grants_s and now_s - self._grants_s[0] >= WINDOW_S:
            self._grants_s.popleft()
        return now_s

    def _request_wait_s(self, now_s: float) -> float:
        limit = self.limits.requests_per_min
        if limit is None or len(self._grants_s) < limit:
            return 0.0
        # Grants are only made below the limit, so the window holds exactly `limit`:
        # one slot frees when the oldest expires.
        oldest_s = self._grants_s[0]
        wait_s = oldest_s + WINDOW_S - now_s
        # Round up so that now_s + wait_s really is past the expiry in float arithmetic
        # (a step of one ulp of the sum moves the sum; a few steps always suffice).
        for _ in range(8):
            if (now_s + wait_s) - oldest_s >= WINDOW_S:
                break
            wait_s += math.ulp(now_s + wait_s)
        return wait_s

    def _token_wait_s(self, tokens_estimate: int) -> float:
        cap = self.limits.tokens_per_min
        if cap is None:
            return 0.0
        needed = min(float(tokens_estimate), float(cap))
        missing = needed - self._tokens
        # Tolerance for the float error of refill arithmetic, so that waiting exactly the
        # returned time is enough.
        if missing <= 1e-9 * cap:
            return 0.0
        return missing * WINDOW_S / cap


class RetryPolicy:
    """Exponential backoff with full jitter (a uniform delay in [0, cap], the cap doubling
    per attempt up to ``max_s``), which spreads retries of many callers instead of having
    them return in lockstep.
    """

    def __init__(self, settings: RetrySettings, rng: random.Random) -> None:
        self.settings = settings
        self._rng = rng

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first try), or
        None to give up: attempts are exhausted, or the server's Retry-After asks for
        longer than ``max_retry_after_s``. A Retry-After is a floor: the server knows when
        it will take requests again, so the delay is never shorter (it may exceed max_s).
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        s = self.settings
        if attempt >= s.max_attempts:
            return None
        if retry_after_s is not None and retry_after_s > s.max_retry_after_s:
            return None
        # attempt < max_attempts <= 20, so the power cannot overflow.
        cap_s = min(s.max_s, s.initial_s * 2.0 ** (attempt - 1))
        delay_s = self._rng.uniform(0.0, cap_s)
        if retry_after_s is not None:
            delay_s = max(delay_s, retry_after_s)
        return delay_s


class CircuitBreaker:
    """Stops calling a provider that keeps failing, so the agent falls back at once instead
    of paying a timeout per decision.

    Closed: every call allowed; ``failure_threshold`` consecutive failures (any success
    resets the count) open it. Open for the cooldown: nothing allowed, and outcomes of
    calls started before it opened change nothing. Then half-open: exactly one trial call
    is let through, once every earlier call has reported (outcomes carry no call identity,
    so only then is the next outcome surely the trial's). The trial's success closes the
    breaker and resets the cooldown; its failure re-opens it with the cooldown doubled, up
    to ``max_cooldown_s``.

    Every allowed call must report its outcome within ``report_timeout_s``. Calls that do
    not (a crashed or cancelled caller) are presumed lost once the newest of them is that
    old; a lost trial counts as failed, so the breaker cannot stay half-open forever.
    """

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._state: BreakerState = "closed"
        self._failures = 0
        self._cooldown_s = settings.cooldown_s
        self._opened_until_s: float | None = None
        self._in_flight = 0
        self._last_allowed_s: float | None = None

    @property
    def opened_until_s(self) -> float | None:
        """End of the current or last open period; None while closed."""
        return self._opened_until_s

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def state(self, now_s: float) -> BreakerState:
        """The state at ``now_s``: an open breaker whose cooldown is over is half-open."""
        self._expire_lost(now_s)
        until_s = self._opened_until_s
        if self._state == "open" and until_s is not None and now_s >= until_s:
            return "half_open"
        return self._state

    def allow(self, now_s: float) -> bool:
        """Whether a call may go out now; a True while half-open is the single trial."""
        self._expire_lost(now_s)
        if self._state == "half_open":
            return False  # the trial is out
        if self._state == "open":
            until_s = self._opened_until_s
            if (until_s is not None and now_s < until_s) or self._in_flight > 0:
                return False
            self._state = "half_open"
        self._in_flight += 1
        self._last_allowed_s = now_s
        return True

    def record_success(self, now_s: float) -> None:
        self._reported(now_s)
        if self._state == "open":
            return
        self._state = "closed"
        self._failures = 0
        self._cooldown_s = self.settings.cooldown_s
        self._opened_until_s = None

    def record_failure(self, now_s: float) -> None:
        self._reported(now_s)
        if self._state == "open":
            return
        if self._state == "half_open":
            self._open(now_s, self._doubled_cooldown_s())
            return
        self._failures += 1
        if self._failures >= self.settings.failure_threshold:
            self._open(now_s, self.settings.cooldown_s)

    def _reported(self, now_s: float) -> None:
        self._expire_lost(now_s)
        self._in_flight = max(0, self._in_flight - 1)

    def _doubled_cooldown_s(self) -> float:
        return min(2.0 * self._cooldown_s, self.settings.max_cooldown_s)

    def _open(self, now_s: float, cooldown_s: float) -> None:
        self._state = "open"
        self._cooldown_s = cooldown_s
        self._opened_until_s = now_s + cooldown_s

    def _expire_lost(self, now_s: float) -> None:
        last_s = self._last_allowed_s
        timeout_s = self.settings.report_timeout_s
        if self._in_flight == 0 or last_s is None or now_s - last_s < timeout_s:
            return
        self._in_flight = 0
        if self._state == "half_open":
            # Re-open from when the trial was given up, not from now: for a late observer
            # the cooldown has then already partly (maybe fully) elapsed.
            self._open(last_s + timeout_s, self._doubled_cooldown_s())


class DailyCostCap:
    """Spending on model calls per UTC day, against an optional cap in USD.

    Takes wall-clock epoch seconds (``wall_s``), not monotonic time: the budget resets at
    00:00 UTC, a calendar boundary. A clock stepping back across midnight does not bring
    back the previous day's total; the later day is kept.
    """

    def __init__(self, cap_usd: float | None) -> None:
        if cap_usd is not None and not cap_usd > 0:
            raise ValueError(f"cap_usd must be > 0 or None, got {cap_usd}")
        self.cap_usd = cap_usd
        self._day: int | None = None
        self._spent_usd = 0.0

    def add(self, wall_s: float, cost_usd: float) -> bool:
        """Record a call's cost; True only for the addition that reaches the cap, so the
        caller raises one alert per day rather than one per call.
        """
        if not cost_usd >= 0:
            raise ValueError(f"cost_usd must be >= 0, got {cost_usd}")
        was_exceeded = self.exceeded(wall_s)
        self._roll(wall_s)
        self._spent_usd += cost_usd
        return not was_exceeded and self.exceeded(wall_s)

    def spent_today_usd(self, wall_s: float) -> float:
        day = self._day_of(wall_s)
        if self._day is None or day > self._day:
            return 0.0
        return self._spent_usd

    def exceeded(self, wall_s: float) -> bool:
        """Whether today's spending has reached the cap (reaching it counts: stop calling)."""
        return self.cap_usd is not None and self.spent_today_usd(wall_s) >= self.cap_usd

    def _roll(self, wall_s: float) -> None:
        day = self._day_of(wall_s)
        if self._day is None or day > self._day:
            self._day = day
            self._spent_usd = 0.0

    @staticmethod
    def _day_of(wall_s: float) -> int:
        return math.floor(wall_s / DAY_S)
