"""Commands about configuration and first-time setup: ``config check`` and ``init``.

Both validate offline (they import the daemon's config models, so they are not as quick
to start as ``status``); ``config check`` without a file asks the running daemon to
check the file it would load on a reload.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bistouryctl.client import NotRunning, find_socket
from bistouryctl.commands.common import Failure, call, emit
from bistouryd import paths
from bistouryd.protocol import EXIT_FAILED

if TYPE_CHECKING:
    from bistouryd.config import LoadedConfig


def _validate(config_path: Path, env_flag: str | None) -> tuple[LoadedConfig | None, list[str]]:
    from bistouryd import config as cfg

    try:
        loaded = cfg.load(config_path, paths.env_file(env_flag, config_path))
    except cfg.ConfigError as exc:
        return None, [str(p) for p in exc.problems]
    return loaded, []


def config_check(args: argparse.Namespace) -> int:
    result: dict[str, Any]
    if args.file is None:
        result = call(args, "config-check")
    else:
        loaded, problems = _validate(Path(args.file), args.env_file)
        result = {"path": args.file, "valid": not problems, "problems": problems}
        if loaded is not None:
            result["secrets_set"] = loaded.secrets.present()
    if not result["valid"]:
        if args.json:
            emit(args, result, str)
        else:
            print("\n".join(result["problems"]))
            print(f"{len(result['problems'])} problem(s) in {result['path']}")
        return EXIT_FAILED
    return emit(args, result, lambda: f"OK: {result['path']} is valid")


def init(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    loaded, problems = _validate(config_path, args.env_file)
    if problems:
        raise Failure(EXIT_FAILED, f"{config_path} is invalid; nothing was created", *problems)
    from bistouryd.storage.db import StorageError, open_db, schema_version

    assert loaded is not None
    state = paths.state_dir(args.state_dir)
    try:
        find_socket(args.socket)
        running = True
    except (NotRunning, PermissionError):
        running = False
    if running:
        raise Failure(
            EXIT_FAILED,
            "bistouryd is running; it already owns the database",
            "nothing to do: the daemon creates and migrates it on start",
        )
    state.mkdir(parents=True, exist_ok=True, mode=0o750)
    db_path = loaded.config.storage.db_path(state)
    try:
        con = open_db(db_path)
    except StorageError as exc:
        raise Failure(EXIT_FAILED, exc.message, exc.hint) from None
    try:
        version = schema_version(con)
    finally:
        con.close()
    result = {
        "config": str(config_path),
        "state_dir": str(state),
        "database": str(db_path),
        "schema_version": version,
    }
    return emit(
        args,
        result,
        lambda: (
            f"OK: {config_path} is valid\n"
            f"state directory {state}\n"
            f"database {db_path} (schema version {version})\n"
            f"start the daemon with: bistouryd --config {config_path}"
            + (f" --state-dir {state}" if args.state_dir else "")
        ),
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "config",
        parents=[common],
        help="check a configuration file",
        description="Configuration commands.",
    )
    config_sub = p.add_subparsers(dest="config_command", metavar="check", required=True)
    c = config_sub.add_parser(
        "check",
        parents=[common],
        help="validate a config file offline",
        description="Validate a config file (and its secrets file) without starting "
        "anything. Prints every problem as file:line: field: what is wrong → how to fix "
        "and exits 1 if there is any. Without FILE, the running daemon checks the file it "
        "would load on a reload.",
    )
    c.add_argument("file", nargs="?", metavar="FILE")
    c.add_argument(
        "--env-file",
        metavar="FILE",
        help="secrets file (default: bistoury.env beside the config, if present)",
    )
    c.set_defaults(func=config_check)

    p = sub.add_parser(
        "init",
        parents=[common],
        help="validate config, create state and database",
        description="Validate the configuration, then create the state "
        "directory and the database (schema up to date).",
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--env-file", metavar="FILE")
    p.add_argument(
        "--state-dir", metavar="DIR", help="default: $STATE_DIRECTORY or ~/.local/state/bistoury"
    )
    p.set_defaults(func=init)
