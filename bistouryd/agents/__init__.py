"""The agent processes. Each module runs as ``python -m bistouryd.agents.<name>``.

``AGENTS`` maps the names users write in ``agents.enabled`` to their modules; it is a
plain table so that validating a config does not import any agent.
"""

AGENTS: dict[str, str] = {
    "recorder": "bistouryd.agents.recorder",
    "collector": "bistouryd.agents.collector",
    "signals": "bistouryd.agents.signals",
    "trader": "bistouryd.agents.trader",
    "positions": "bistouryd.agents.positions",
}

# Stopped last on shutdown so it records everything the others say on the way out.
STOP_LAST = ("recorder",)
