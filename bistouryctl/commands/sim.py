"""``bistoury sim ...``: the simulated HyperLiquid exchange, same as ``bistoury-simexchange``."""

from __future__ import annotations

import argparse


def sim(args: argparse.Namespace) -> int:
    from bistouryd.simexchange.cli import main

    return main(args.sim_args)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "sim",
        add_help=False,
        help="run the simulated HyperLiquid exchange",
        description="Run the simulated HyperLiquid exchange (see bistoury sim --help).",
    )
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=sim)
