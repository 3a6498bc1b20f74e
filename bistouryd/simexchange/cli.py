"""``bistoury-simexchange``: run the simulated HyperLiquid exchange until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
from pathlib import Path

from bistouryd.simexchange.clock import format_speed, parse_speed
from bistouryd.simexchange.config import (
    DEFAULT_MAKER_FEE,
    DEFAULT_TAKER_FEE,
    UPDATES_PER_COIN_PER_S,
    SimConfig,
    parse_account,
    parse_agent,
    parse_fee,
    parse_time_ms,
)
from bistouryd.simexchange.datafiles import DataError
from bistouryd.simexchange.server import SimServer, iso

EPILOG = f"""\
The official hyperliquid-python-sdk works against it unchanged:
  Info("http://127.0.0.1:3001", skip_ws=False)
  Exchange(Account.from_key(KEY), "http://127.0.0.1:3001")   # with --account ADDRESS=USDC

Market data: by default a replay of the bundled sample of real HyperLiquid data (BTC and ETH
1m candles of 2025-07-21..25, hourly funding, real book snapshots); public trades and books are
generated from the candles. GET /admin/status lists what is recorded and what is synthetic.
Admin endpoint (JSON): POST /admin/clock {{"advance_ms": 60000}} | {{"set_ms": T}} |
{{"speed": "10x"}}, POST /admin/accounts, /admin/agents,
/admin/faults/{{ws-drop,ws-stall,http-error,delay,go-away,clear}}, GET /admin/ws-log?since=SEQ.
Fees default to taker {DEFAULT_TAKER_FEE:.3%} / maker {DEFAULT_MAKER_FEE:.3%}.
See docs/simexchange.md.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bistoury-simexchange",
        description="A local HyperLiquid-compatible exchange (REST /info, /exchange and "
        "websocket /ws) replaying recorded market data, for tests, demos and offline work.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=3001,
        help="port (default %(default)s, the SDK's LOCAL_API_URL; 0 picks a free one)",
    )
    p.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="folder of HyperLiquid JSON files to replay (kinds detected from content; "
        "default: the bundled sample)",
    )
    p.add_argument(
        "--speed",
        default="1x",
        help="replay speed: 1x, 10x, 60x, max, or 0/paused (time then moves only through "
        "POST /admin/clock) (default %(default)s)",
    )
    p.add_argument(
        "--start",
        metavar="TIME",
        help="replay start, epoch ms or ISO-8601 (default: one day into the data, so backfill "
        "has history; with --synthetic: now)",
    )
    p.add_argument(
        "--synthetic",
        metavar="N|COINS",
        help="instead of a replay, a seeded random walk for N coins or for BTC,ETH,...",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of everything generated (default 0)")
    p.add_argument(
        "--rate",
        type=float,
        metavar="PER_S",
        help=f"synthetic market updates per second, all coins together (default "
        f"{UPDATES_PER_COIN_PER_S:g} per coin); each update sends trades, l2Book and candle "
        "messages to their subscribers",
    )
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ADDRESS=USDC",
        help="an account and its starting USDC balance (repeatable)",
    )
    p.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="AGENT=ACCOUNT",
        help="an API wallet allowed to sign for an account (repeatable)",
    )
    p.add_argument(
        "--taker-fee",
        default=str(DEFAULT_TAKER_FEE),
        help="taker fee, fraction or percent (default %(default)s = 0.045%%)",
    )
    p.add_argument(
        "--maker-fee",
        default=str(DEFAULT_MAKER_FEE),
        help="maker fee, fraction or percent (default %(default)s = 0.015%%)",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="write the base URL here once listening (for scripts and tests)",
    )
    p.add_argument(
        "--ws-log",
        type=Path,
        metavar="PATH",
        help="append every websocket frame sent to this NDJSON file",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="DEBUG logs every request (default %(default)s)",
    )
    return p


def fail(cause: str, hint: str) -> int:
    print(f"ERROR: {cause}\n  → {hint}", file=sys.stderr)
    return 2


def config_from(args: argparse.Namespace) -> SimConfig:
    """The settings the command line asks for; ``ValueError`` says what is wrong."""
    accounts: dict[str, float] = {}
    for spec in args.account:
        address, usdc = parse_account(spec)
        accounts[address] = accounts.get(address, 0.0) + usdc
    agents = dict(parse_agent(spec) for spec in args.agent)
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, not {args.port}")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be positive")
    synthetic: tuple[str, ...] | int = ()
    if args.synthetic:
        if args.data is not None:
            raise ValueError("--synthetic and --data are alternatives: give one")
        spec = args.synthetic.strip()
        synthetic = (
            int(spec) if spec.isdigit() else tuple(n.strip() for n in spec.split(",") if n.strip())
        )
        if synthetic in (0, ()):
            raise ValueError("--synthetic needs a coin count or names")
    return SimConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data,
        speed=parse_speed(args.speed),
        start_ms=parse_time_ms(args.start) if args.start else None,
        synthetic=synthetic,
        seed=args.seed,
        rate=args.rate,
        accounts=accounts,
        agents=agents,
        taker_fee=parse_fee(args.taker_fee),
        maker_fee=parse_fee(args.maker_fee),
        ws_log_path=args.ws_log,
    )


async def serve(config: SimConfig, ready_file: Path | None) -> None:
    server = SimServer(config)
    await server.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = server.engine
    what = (
        f"synthetic market of {len(engine.coins)} coins"
        if config.synthetic
        else f"replay of {', '.join(engine.coins)} from {iso(server.start_ms)}"
    )
    print(f"{server.url} ready: {what} at {format_speed(config.speed)}", flush=True)
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(server.url + "\n")
        os.replace(tmp, ready_file)
    try:
        await stop.wait()
    finally:
        logging.getLogger("bistouryd.simexchange").info("shutting down")
        await server.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from(args)
    except ValueError as exc:
        return fail(str(exc), "see bistoury-simexchange --help")
    if args.ready_file is not None and not args.ready_file.parent.is_dir():
        return fail(
            f"--ready-file {args.ready_file}: folder {args.ready_file.parent} does not exist",
            "create the folder or choose another path",
        )
    try:
        asyncio.run(serve(config, args.ready_file))
    except DataError as exc:
        return fail(exc.cause, exc.hint)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return fail(
                f"cannot listen on {config.host}:{config.port}: the address is already in use",
                "stop whatever uses it, or choose another port with --port (0 picks a free one)",
            )
        return fail(
            f"cannot start: {exc.strerror or exc}",
            "check --host/--port, --ready-file and --ws-log paths",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
