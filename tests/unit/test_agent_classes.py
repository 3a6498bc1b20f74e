"""Every agent module defines one Agent subclass that keeps the base machinery intact."""

from __future__ import annotations

import importlib
import inspect

import pytest

from bistouryd.agents import AGENTS
from bistouryd.agents.base import Agent

BASE_PRIVATE = {
    name for name, _ in inspect.getmembers(Agent, inspect.isfunction) if name.startswith("_")
} - {"__init__"}


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_module_defines_its_agent(name: str) -> None:
    module = importlib.import_module(AGENTS[name])
    agents = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Agent) and obj is not Agent
    ]
    assert [a.name for a in agents] == [name]


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_agent_does_not_shadow_the_base_machinery(name: str) -> None:
    """A subclass method named like a private one of the base (say ``_receive``) would
    silently replace the supervision loop; that happened once."""
    module = importlib.import_module(AGENTS[name])
    cls = next(
        o
        for o in vars(module).values()
        if inspect.isclass(o) and issubclass(o, Agent) and o is not Agent
    )
    assert not BASE_PRIVATE & set(vars(cls)), BASE_PRIVATE & set(vars(cls))


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        # The main process relays data-status answers; DuckDB (~40 MB) stays in the recorder.
        ("bistouryd.orchestrator", {"duckdb", "pyarrow", "hyperliquid", "eth_account"}),
        ("bistouryd.agents.collector", {"duckdb"}),
    ],
)
def test_processes_load_only_what_they_use(module: str, must_not_load: set[str]) -> None:
    import subprocess
    import sys

    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not must_not_load & loaded
