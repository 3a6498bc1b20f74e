"""``bistouryctl`` / ``bistoury``: control a running bistouryd.

Exit status: 0 success, 1 the daemon refused or the command failed, 2 usage error,
3 the daemon is not running. ``status`` imports only argparse, json and pyzmq so it
answers quickly; heavier commands import what they need when they run.
"""

from __future__ import annotations

import argparse
import os
import sys

from bistouryctl.commands import daemon, data, decisions, setup, signals, sim, trading
from bistouryctl.commands.common import run_command
from bistouryd import __version__
from bistouryd.protocol import EXIT_USAGE


def build_parser(prog: str) -> argparse.ArgumentParser:
    # Options accepted both before and after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="control socket (default: $BISTOURY_SOCKET, the runtime dir, "
        "or /run/bistoury/control.sock)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    common.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="wait this long for each attempt (default 2.5, tried twice)",
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[common],
        description="Control the Bistoury trading daemon (bistouryd).",
        epilog="Exit status: 0 ok, 1 refused or failed, 2 usage error, 3 daemon not running.",
    )
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    daemon.register(sub, common)
    setup.register(sub, common)
    data.register(sub, common)
    signals.register(sub, common)
    decisions.register(sub, common)
    trading.register(sub, common)
    sim.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["sim"]:  # argparse would take the simulator's own options (--help...)
        sys.exit(sim.sim(argparse.Namespace(sim_args=words[1:])))
    prog = os.path.basename(sys.argv[0]) if argv is None else "bistouryctl"
    parser = build_parser(prog if prog in ("bistoury", "bistouryctl") else "bistouryctl")
    args = parser.parse_args(argv)
    for name, default in (("socket", None), ("json", False), ("timeout", 2.5)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(run_command(args.func, args))


if __name__ == "__main__":
    main()
