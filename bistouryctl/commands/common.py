"""What every command shares: the connection, output, and the PRD-style failures."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bistouryctl.client import Client, NoReply, NotRunning, Refused, find_socket
from bistouryd.messages import report
from bistouryd.protocol import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


class Failure(Exception):
    """Ends the command: print the message and hints, exit with ``code``."""

    def __init__(self, code: int, message: str, *hints: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hints = list(hints)


def not_running(tried: list[str]) -> Failure:
    return Failure(
        EXIT_NOT_RUNNING,
        f"bistouryd is not running (no control socket answered at {', '.join(tried)})",
        "start it in this terminal: bistouryd --config etc/config.yaml (or: make demo)",
        "under systemd: sudo systemctl start bistouryd",
        "if it runs with another runtime dir, pass --socket PATH or set BISTOURY_SOCKET",
    )


def connect(args: argparse.Namespace, timeout_s: float | None = None) -> Client:
    try:
        path = find_socket(args.socket)
    except NotRunning as exc:
        raise not_running([str(p) for p in exc.tried]) from None
    except PermissionError as exc:
        raise Failure(EXIT_FAILED, str(exc)) from None
    return Client(path, timeout_s=timeout_s or args.timeout)


def call(
    args: argparse.Namespace, cmd: str, timeout_s: float | None = None, **params: Any
) -> dict[str, Any]:
    return request(connect(args, timeout_s), cmd, **params)


def request(client: Client, cmd: str, **params: Any) -> dict[str, Any]:
    """One command on an open client, its failures turned into ``Failure``."""
    try:
        return client.call(cmd, **params)
    except Refused as exc:
        raise Failure(EXIT_FAILED, exc.message, *exc.hints) from None
    except NoReply as exc:
        raise Failure(
            EXIT_NOT_RUNNING,
            f"bistouryd did not answer: {exc}",
            "it may be overloaded or hung; see its log (journalctl -u bistouryd)",
        ) from None


def emit(args: argparse.Namespace, result: dict[str, Any], human: Callable[[], str]) -> int:
    """Print the result as JSON (``--json``) or as text for people."""
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(human())
    return EXIT_OK


def run_command(command: Command, args: argparse.Namespace) -> int:
    try:
        return command(args)
    except Failure as exc:
        if getattr(args, "json", False):
            json.dump(
                {"ok": False, "error": {"message": exc.message, "hints": exc.hints}},
                sys.stdout,
                indent=2,
            )
            sys.stdout.write("\n")
        report(exc.message, exc.hints)
        return exc.code


def read_db(path: str, query: Callable[..., T], **params: Any) -> T:
    """``query(con, **params)`` on the database file itself (``--db``): only possible while
    the daemon, the file's only writer, is stopped. Imports DuckDB only when used."""
    from bistouryd.storage.db import StorageError, open_db

    try:
        con = open_db(Path(path), read_only=True)
    except StorageError as exc:
        raise Failure(EXIT_FAILED, exc.message, exc.hint) from None
    try:
        return query(con, **params)
    finally:
        con.close()
