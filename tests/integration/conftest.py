"""Fixtures shared by the integration tests that run the daemon against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bistouryd.simexchange import SimConfig, SimExchange


@pytest.fixture
def replay_sim() -> Iterator[SimExchange]:
    """The simulated exchange replaying the bundled real data at 10x."""
    with SimExchange(SimConfig(port=0, speed=10.0, seed=0)) as exchange:
        yield exchange
