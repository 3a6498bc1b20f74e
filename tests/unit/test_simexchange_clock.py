"""The replay clock and speed spellings."""

from __future__ import annotations

import pytest

from bistouryd.simexchange.clock import ReplayClock, format_speed, parse_speed


@pytest.mark.parametrize(
    ("text", "speed"),
    [
        ("1x", 1.0),
        ("10x", 10.0),
        ("60X", 60.0),
        ("0.5x", 0.5),
        ("2", 2.0),
        ("max", None),
        ("paused", 0.0),
        ("0", 0.0),
    ],
)
def test_parse_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


def test_bad_speed() -> None:
    with pytest.raises(ValueError, match="1x, 10x"):
        parse_speed("fast")


def test_format_speed() -> None:
    assert [format_speed(s) for s in (1.0, 60.0, None, 0.0)] == ["1x", "60x", "max", "paused"]


class Wall:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_replay_time_runs_at_speed_and_stops_at_the_end() -> None:
    wall = Wall()
    clock = ReplayClock(1_000_000, 60.0, end_ms=1_600_000, monotonic=wall)
    wall.t += 2.5
    assert clock.now_ms() == 1_150_000  # 2.5 s x 60
    clock.set_speed(1.0)
    wall.t += 1
    assert clock.now_ms() == 1_151_000
    clock.jump_to(1_500_000)
    assert clock.now_ms() == 1_500_000 and not clock.finished
    wall.t += 1000
    assert clock.now_ms() == 1_600_000 and clock.finished


def test_a_paused_clock_moves_only_when_told() -> None:
    wall = Wall()
    clock = ReplayClock(5_000, 0.0, monotonic=wall)
    wall.t += 100
    assert clock.now_ms() == 5_000
    clock.jump_to(9_000)
    assert clock.now_ms() == 9_000
    assert ReplayClock(5_000, None).is_max
