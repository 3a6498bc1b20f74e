"""A local HyperLiquid: the official SDK (``Info``, ``Exchange``, its websocket) works against it
unchanged with ``base_url`` pointing here. It replays recorded market data (or generates a
seeded random walk), keeps accounts, matches orders and injects faults on demand.

Run it with ``bistoury-simexchange`` or in-process::

    with SimExchange(SimConfig(port=0, accounts={ADDR: 10_000.0})) as sim:
        info = Info(sim.url, skip_ws=False)

See ``docs/simexchange.md``.
"""

from bistouryd.simexchange.config import SimConfig
from bistouryd.simexchange.datafiles import DataError
from bistouryd.simexchange.server import SimExchange
from bistouryd.simexchange.ws import SentFrame

__all__ = ["DataError", "SentFrame", "SimConfig", "SimExchange"]
