"""Fixtures shared by the integration tests that run the daemon against the simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bistouryd.simexchange import SimConfig, SimExchange


@pytest.fixture
def replay_sim() -> Iterator[SimExchange]:
    """The simulated exchange replaying the bundled real data at 10x."""
    with SimExchange(SimConfig(port=0, speed=10.0, seed=0)) as exchange:
        yield exchange


def funded_account(sim: SimExchange, usdc: float) -> tuple[LocalAccount, LocalAccount]:
    """A new account holding ``usdc`` on ``sim``, and an API wallet approved to trade it."""
    owner: LocalAccount = Account.create()
    sim.add_account(owner.address, usdc)
    agent: LocalAccount = Account.create()
    sim.add_agent(agent.address, owner.address)
    return owner, agent
