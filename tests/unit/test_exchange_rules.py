"""HyperLiquid's price/size rules, checked on hand-computed cases and against the SDK."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from hyperliquid.utils.signing import float_to_wire

from bistouryd.exchange.rules import (
    MIN_ORDER_USD,
    AssetRules,
    price_to_wire,
    round_px,
    round_sz,
    rules_from_meta,
    size_to_wire,
    tick_size,
    valid_px,
    valid_sz,
)
from bistouryd.simexchange.datafiles import bundled_data_dir

BTC, ETH, SOL, DYDX, KPEPE = 5, 4, 2, 1, 0  # szDecimals in the real meta


def test_min_order_value_is_ten_dollars() -> None:
    assert MIN_ORDER_USD == 10


@pytest.mark.parametrize(
    ("px", "sz_decimals", "tick"),
    [
        (60000.5, BTC, "1"),  # 5 significant figures of a 5-digit integer part: whole dollars
        (123456, BTC, "1"),  # above 5 digits integers are still allowed: never coarser than 1
        (3831.5, ETH, "0.1"),
        (1.2345, ETH, "0.01"),  # 5 sig figs would allow 0.0001, but 6 - 4 = 2 decimals
        (26.516, SOL, "0.001"),
        (2.1105, DYDX, "0.0001"),
        (0.001601, KPEPE, "0.000001"),  # the 5th sig fig (1e-7) is finer than 6 decimals
        (0.5, 6, "1"),  # szDecimals 6 leaves no decimals at all
    ],
)
def test_tick_size(px: float, sz_decimals: int, tick: str) -> None:
    assert tick_size(px, sz_decimals) == Decimal(tick)


@pytest.mark.parametrize(
    ("px", "sz_decimals", "ok"),
    [
        (60000.5, BTC, False),
        (60000, BTC, True),
        (60001.0, BTC, True),
        (123456, BTC, True),  # integer: valid with 6 significant figures
        (12345.6, BTC, False),
        (3831.5, ETH, True),
        (3831.55, ETH, False),  # 6 significant figures
        (1.23, ETH, True),
        (1.234, ETH, False),  # 3 decimals > 6 - 4
        (26.516, SOL, True),
        (2.1105, DYDX, True),
        (2.11055, DYDX, False),
        (0.001601, KPEPE, True),
        (0.0016015, KPEPE, False),  # 7 decimals > 6
        (0, BTC, False),
        (-1, BTC, False),
        ("60000", BTC, True),  # wire strings are accepted
        ("60000.0", BTC, True),
        ("abc", BTC, False),
    ],
)
def test_valid_px(px: float | str, sz_decimals: int, ok: bool) -> None:
    assert valid_px(px, sz_decimals) is ok


def test_round_px_nearest_and_passive() -> None:
    assert round_px(60000.5, BTC) == 60000  # half to even
    assert round_px(60001.5, BTC) == 60002
    assert round_px(60000.5, BTC, is_buy=True) == 60000  # a buy never pays more
    assert round_px(60000.5, BTC, is_buy=False) == 60001  # a sell never asks less
    assert round_px(3831.57, ETH) == 3831.6
    assert round_px(1.23456, ETH) == 1.23
    assert round_px(1.23456, ETH, is_buy=False) == 1.24
    assert round_px(0.00160149, KPEPE) == 0.001601
    assert round_px(99999.7, BTC) == 100000  # across a power of ten


def test_round_px_is_the_nearest_valid_price_like_the_sdk_rounding() -> None:
    """The SDK's market orders round with round(float(f"{px:.5g}"), 6 - szDecimals). That
    rounds twice, so once in a while it lands a tick further away; ours is never further
    from the price than the SDK's, and at most a tick apart."""
    rng = random.Random(7)
    for _ in range(2000):
        sz_decimals = rng.randint(0, 5)
        px = 10 ** rng.uniform(sz_decimals - 5, 4.99)  # at least ten ticks
        ours = round_px(px, sz_decimals)
        assert valid_px(ours, sz_decimals), (px, sz_decimals, ours)
        sdk = round(float(f"{px:.5g}"), 6 - sz_decimals)
        tick = float(tick_size(px, sz_decimals))
        assert abs(ours - px) <= abs(sdk - px) + 1e-12, (px, sz_decimals)
        assert abs(ours - sdk) <= tick * 1.000001, (px, sz_decimals)


def test_sizes() -> None:
    assert valid_sz(0.001, BTC)
    assert valid_sz("0.00001", BTC)
    assert not valid_sz(0.000001, BTC)
    assert not valid_sz(0.12345, ETH)
    assert not valid_sz(1.5, KPEPE)
    assert valid_sz(3, KPEPE)
    assert not valid_sz(0, BTC)
    assert round_sz(0.123456, BTC) == 0.12346
    assert round_sz(1.5, KPEPE) == 2


@pytest.mark.parametrize("x", [60000.0, 0.001, 0.0010, 1.5, 123.456, 1e-8, 0.1 + 0.2, 25.585])
def test_wire_strings_match_the_sdk(x: float) -> None:
    assert price_to_wire(x) == float_to_wire(x)
    assert size_to_wire(x) == float_to_wire(x)


def test_wire_strings() -> None:
    assert price_to_wire(60000.0) == "60000"
    assert size_to_wire(0.0010) == "0.001"
    with pytest.raises(ValueError, match="more than 8 decimals"):
        price_to_wire(0.123456789)


def test_rules_from_the_real_meta() -> None:
    meta = json.loads((bundled_data_dir() / "meta_2023-07-17.json").read_text())
    rules = {r.name: r for r in rules_from_meta(meta)}
    assert rules["BTC"] == AssetRules("BTC", 0, 5, 50)
    assert rules["ETH"].asset == 1 and rules["ETH"].px_decimals == 2
    assert rules["kPEPE"].sz_decimals == 0 and rules["kPEPE"].lot_sz == 1.0
    with pytest.raises(ValueError, match="entry 0"):
        rules_from_meta({"universe": [{"name": "X", "szDecimals": 2}]})
