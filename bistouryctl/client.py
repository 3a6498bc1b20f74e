"""Control-socket client: plain pyzmq and json, so ``bistouryctl status`` starts fast.

A request that times out is retried with the same id on a fresh socket (a REQ socket
that missed its reply is stuck); the daemon answers a repeated id from its reply cache
instead of running the command twice.
"""

from __future__ import annotations

import errno
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import zmq

from bistouryd.paths import control_socket_candidates
from bistouryd.protocol import MAX_REQUEST_BYTES, PROTOCOL_VERSION


class NotRunning(Exception):
    """No daemon listens at any of the places a control socket could be."""

    def __init__(self, tried: list[Path]):
        super().__init__(", ".join(str(p) for p in tried))
        self.tried = tried


class NoReply(Exception):
    """The daemon's socket exists but nothing answered in time."""


class Refused(Exception):
    """The daemon answered ``ok: false``."""

    def __init__(self, message: str, hints: list[str]):
        super().__init__(message)
        self.message = message
        self.hints = hints


def listening(path: Path) -> bool:
    """Is a process accepting connections on this Unix socket (not a stale file)?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError(
                f"no permission to use {path}; join the daemon's group "
                "(e.g. sudo usermod -aG bistoury $USER) and log in again"
            ) from None
        return False
    finally:
        probe.close()


def find_socket(flag: str | None = None) -> Path:
    """The first candidate socket a daemon listens on; raises ``NotRunning``."""
    candidates = control_socket_candidates(flag)
    for path in candidates:
        try:
            exists = path.exists()
        except PermissionError:
            raise PermissionError(
                f"no permission to open {path.parent}; join the daemon's group "
                "(e.g. sudo usermod -aG bistoury $USER) and log in again"
            ) from None
        if exists and listening(path):
            return path
    raise NotRunning(candidates)


class Client:
    def __init__(self, path: Path, timeout_s: float = 2.5, attempts: int = 2):
        self.path = path
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its ``result``; raises Refused / NoReply."""
        request = {"v": PROTOCOL_VERSION, "id": uuid.uuid4().hex, "cmd": cmd, **args}
        reply = self.raw(json.dumps(request).encode())
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise Refused(str(error.get("message", "refused")), list(error.get("hints", [])))
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def raw(self, payload: bytes) -> dict[str, Any]:
        """Send bytes as they are (tests use this for malformed requests)."""
        if len(payload) > MAX_REQUEST_BYTES * 16:
            raise ValueError("payload too large to send")
        for _ in range(self.attempts):
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10)
            sock.setsockopt(zmq.RCVHWM, 10)
            try:
                sock.connect(f"ipc://{self.path}")
                sock.send(payload)
                if sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                    data = sock.recv()
                    try:
                        parsed = json.loads(data)
                    except ValueError:
                        raise NoReply(
                            f"the daemon sent a reply that is not JSON: {data[:80]!r}"
                        ) from None
                    return parsed if isinstance(parsed, dict) else {}
            finally:
                sock.close(linger=0)
        raise NoReply(f"no reply from {self.path} within {self.timeout_s * self.attempts:.1f} s")
