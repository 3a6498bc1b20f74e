"""``bistouryctl risk``: limits shown, changed at run time with validation, kept across a
restart over the config file, and reset."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.integration


def limits(d: Daemon) -> dict[str, Any]:
    done = d.ctl("risk", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_risk_set_validates_applies_persists_and_resets(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon().start()
    before = limits(d)
    assert before["limits"]["risk.max_leverage"] == 3 and before["overrides"] == {}

    done = d.ctl("risk", "set", "risk.max_leverage", "2")
    assert done.returncode == 0, done.stderr
    assert "risk.max_leverage" in done.stdout and "(risk set)" in done.stdout
    assert "changed: risk.max_leverage" in done.stdout
    assert limits(d)["limits"]["risk.max_leverage"] == 2

    out_of_range = d.ctl("risk", "set", "risk.max_leverage", "500")
    assert out_of_range.returncode != 0 and "max_leverage" in out_of_range.stderr
    unknown = d.ctl("risk", "set", "agents.enabled", "1")
    assert unknown.returncode != 0 and "is not a risk limit" in unknown.stderr
    assert "risk.daily_loss_limit_pct" in unknown.stderr  # the hint lists the keys
    not_a_number = d.ctl("risk", "set", "risk.max_leverage", "lots")
    assert not_a_number.returncode == 2 and "is not a number" in not_a_number.stderr
    assert d.ctl("risk", "set", "risk.max_position_usd", "none").returncode == 0

    kinds = [(e["kind"], e["source"]) for e in d.events()]
    assert ("reload", "risk") in kinds

    # A restart keeps it, over the config file.
    assert d.ctl("stop").returncode == 0 and d.wait_exit() == 0
    d.start()
    again = limits(d)
    assert again["limits"]["risk.max_leverage"] == 2
    assert again["overrides"] == {"risk.max_leverage": 2, "risk.max_position_usd": None}

    assert d.ctl("risk", "reset", "risk.max_leverage").returncode == 0
    assert limits(d)["limits"]["risk.max_leverage"] == 3
    assert d.ctl("risk", "reset").returncode == 0
    assert limits(d)["overrides"] == {}
