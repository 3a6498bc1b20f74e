"""An asyncio server run in a background thread, for tests and tools that drive it from
synchronous code (the simulated exchange, the fake LLM provider).

A subclass says how to build its server (``_make``: anything with ``async open()`` and
``async close()`` and a ``url``); ``start`` waits until it listens and re-raises what
stopped it from starting; ``stop`` closes it and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar


class Server(Protocol):
    url: str

    async def open(self) -> str: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Server)
B = TypeVar("B", bound="BackgroundServer[Server]")


class BackgroundServer(ABC, Generic[S]):
    what = "the server"  # for messages: "the simulated exchange", ...
    stop_timeout_s = 10.0

    def __init__(self) -> None:
        self._server: S | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()

    @abstractmethod
    def _make(self) -> S:
        """The server to run (built in the background thread, on its loop)."""

    @property
    def server(self) -> S:
        if self._server is None:
            raise RuntimeError(f"{self.what} is not running: call start()")
        return self._server

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, timeout: float = 60.0) -> str:
        """Build, listen, and return the base URL (raises what prevented it)."""
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self.what} did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=self.stop_timeout_s)
        self._loop = None

    def __enter__(self: B) -> B:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._server = self._make()
            await self._server.open()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._server.close()
