"""``bistouryd``: command line, directories, single-instance lock, logging, detaching.

Under systemd it stays in the foreground (``Type=notify``) and logs to the journal;
elsewhere it runs in the terminal or, with ``--daemon``, detaches with python-daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import IO

from bistouryd import __version__, logs, paths
from bistouryd import config as cfg
from bistouryd.messages import report
from bistouryd.notify import Notifier, under_systemd
from bistouryd.protocol import DAEMON_EXIT_CONFIG, DAEMON_EXIT_FAILURE

USAGE_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bistouryd",
        description="Bistoury trading daemon for HyperLiquid perpetuals. Runs in the "
        "foreground (as systemd expects); control it with bistouryctl.",
        epilog="Directories default to systemd's $RUNTIME_DIRECTORY, $STATE_DIRECTORY, "
        "$CONFIGURATION_DIRECTORY and $LOGS_DIRECTORY, else to the XDG per-user ones. "
        "Exit status: 0 stopped, 1 failed, 2 usage, 78 invalid configuration, "
        "79 emergency stop.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (default: $CONFIGURATION_DIRECTORY/config.yaml "
        "or ~/.config/bistoury/config.yaml)",
    )
    p.add_argument(
        "--env-file",
        metavar="FILE",
        help="secrets file (default: bistoury.env beside the config, if present)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="database and state (default: $STATE_DIRECTORY or ~/.local/state/bistoury)",
    )
    p.add_argument(
        "--runtime-dir",
        metavar="DIR",
        help="sockets and lock (default: $RUNTIME_DIRECTORY or $XDG_RUNTIME_DIR/bistoury)",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=["DEBUG", "PERF", "INFO", "SIGNAL", "LLM", "TRADE", "WARNING", "ERROR", "CRITICAL"],
        help="overrides logging.level from the config",
    )
    p.add_argument(
        "--daemon",
        action="store_true",
        help="detach into the background (hosts without systemd only)",
    )
    p.add_argument(
        "--pidfile",
        metavar="FILE",
        help="with --daemon: where to write the pid (default: runtime dir)",
    )
    p.add_argument("--version", action="version", version=f"bistouryd {__version__}")
    return p


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    if path.stat().st_uid == os.getuid():
        path.chmod(mode)


def _lock(path: Path) -> IO[str] | None:
    """Hold an exclusive flock on the lock file; None when another daemon holds it.

    A lock dies with its process, so a file left by a killed daemon does not block.
    """
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    _write_pid(fh)
    return fh


def _write_pid(fh: IO[str]) -> None:
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()


def _holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def _log_file(loaded: cfg.LoadedConfig, state: Path) -> Path:
    configured = loaded.config.logging.file
    return Path(configured).expanduser() if configured else paths.logs_dir(state) / "bistoury.log"


def run(args: argparse.Namespace) -> int:
    if args.daemon and under_systemd():
        report(
            "--daemon cannot be used under systemd",
            [
                "systemd already runs bistouryd in the background (Type=notify);",
                "remove --daemon from ExecStart",
            ],
        )
        return USAGE_EXIT
    if args.pidfile and not args.daemon:
        report("--pidfile only goes with --daemon", ["add --daemon, or drop --pidfile"])
        return USAGE_EXIT

    config_path = paths.config_file(args.config)
    env_path = paths.env_file(args.env_file, config_path)
    try:
        loaded = cfg.load(config_path, env_path)
    except cfg.ConfigError as exc:
        report(
            "Configuration is invalid; bistouryd did not start",
            [str(p) for p in exc.problems]
            + [f"check it with: bistouryctl config check {config_path}"],
        )
        return DAEMON_EXIT_CONFIG

    runtime = paths.runtime_dir(args.runtime_dir)
    state = paths.state_dir(args.state_dir)
    rp = paths.RuntimePaths(runtime)
    if rp.too_long():
        report(
            f"runtime directory path is too long for a Unix socket: {runtime}",
            [f"socket paths must fit in {paths.MAX_IPC_PATH} bytes; pass a shorter --runtime-dir"],
        )
        return USAGE_EXIT
    try:
        _make_dir(runtime, 0o750)
        _make_dir(state, 0o750)
    except OSError as exc:
        report(
            f"cannot create {exc.filename}: {exc.strerror}",
            [
                "check the directory's owner and permissions, or pass another "
                "--runtime-dir / --state-dir"
            ],
        )
        return DAEMON_EXIT_FAILURE
    lock = _lock(rp.lock)
    if lock is None:
        report(
            f"bistouryd is already running (pid {_holder(rp.lock)}) with runtime dir {runtime}",
            ["check it with: bistouryctl status", "stop it with: bistouryctl stop"],
        )
        return DAEMON_EXIT_FAILURE

    log_file = _log_file(loaded, state)
    pidfile = Path(args.pidfile) if args.pidfile else runtime / "bistouryd.pid"
    if args.daemon:
        print(f"bistouryd: detaching; pidfile {pidfile}, log {log_file}", file=sys.stderr)
        _detach(lock)
        _write_pid(lock)

    def configure_logging(new: cfg.LoadedConfig) -> None:
        logcfg = new.config.logging
        logs.setup(
            args.log_level or logcfg.level,
            file=_log_file(new, state),
            max_bytes=logcfg.max_bytes,
            backup_count=logcfg.backup_count,
            to_stderr=not args.daemon,
            known_secrets=[v for v in new.secrets.reveal().values() if v],
        )

    configure_logging(loaded)
    if args.daemon:
        pidfile.write_text(f"{os.getpid()}\n", encoding="utf-8")
    from bistouryd.orchestrator import Orchestrator

    orchestrator = Orchestrator(loaded, rp, state, Notifier(), configure_logging)
    try:
        return asyncio.run(orchestrator.run())
    finally:
        if args.daemon:
            pidfile.unlink(missing_ok=True)
        lock.close()


def _detach(lock: IO[str]) -> None:
    """Become a background daemon with python-daemon, keeping the lock's descriptor.

    Options are explicit: its defaults would skip detaching under some parents, leave
    the umask at 0 and exit 1 on SIGTERM (the orchestrator handles SIGTERM itself).
    """
    import daemon

    context = daemon.DaemonContext(
        detach_process=True,
        umask=0o027,
        working_directory="/",
        files_preserve=[lock.fileno()],
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
        prevent_core=True,
    )
    context.open()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
