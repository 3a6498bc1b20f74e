"""HyperLiquid market data through the official SDK, keeping every message as received.

The SDK's ``Info`` parses what it receives; the raw store needs the bytes. REST bodies
are taken with a ``requests`` response hook on the SDK's own session, websocket frames
by a ``WebsocketManager`` whose ``on_message`` hands the text over before anything
parses it. The SDK's manager runs ``run_forever`` once and never reconnects; a
``MarketFeed`` is therefore one connection, and the collector makes a new one after a
drop or a stall.

Callbacks run on the SDK's threads: they must only hand the data over (e.g. with
``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from hyperliquid.info import Info
from hyperliquid.websocket_manager import WebsocketManager

log = logging.getLogger(__name__)

CONNECTED_TEXT = "Websocket connection established."

# (received_ts_ms, text) for a websocket frame.
OnFrame = Callable[[int, str], None]
# (received_ts_ms, request body as sent, response text) for a REST call.
OnRest = Callable[[int, dict[str, Any], str], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _RecordingManager(WebsocketManager):  # type: ignore[misc]
    """The SDK's websocket thread, handing every frame's text to ``on_frame``."""

    def __init__(self, base_url: str, on_frame: OnFrame, on_closed: Callable[[], None]):
        super().__init__(base_url)
        self._on_frame = on_frame
        self._on_closed = on_closed
        self.ws.on_close = lambda _ws, *_: self._closed()
        self.ws.on_error = lambda _ws, err: log.debug("websocket error: %s", err)
        self.daemon = True
        self.ping_sender.daemon = True

    def on_message(self, _ws: Any, message: str) -> None:
        self._on_frame(now_ms(), message)

    def run(self) -> None:
        """The SDK's ``run``, but without websocket-client's pure-Python UTF-8 check of
        every frame (half the collector's CPU); the text is still decoded as UTF-8, and
        an invalid frame still fails, in C."""
        try:
            self.ping_sender.start()
            self.ws.run_forever(skip_utf8_validation=True)
        finally:
            self._closed()

    def _closed(self) -> None:
        if not self.stop_event.is_set():
            self.stop_event.set()  # ends the SDK's ping thread too
            self._on_closed()


class MarketFeed:
    """One websocket connection plus REST access, both recorded."""

    def __init__(
        self,
        base_url: str,
        on_frame: OnFrame,
        on_rest: OnRest,
        on_closed: Callable[[], None],
        timeout_s: float = 10.0,
    ):
        self.base_url = base_url
        self._on_rest = on_rest
        self._closed_once = threading.Event()
        self.info = Info(base_url, skip_ws=True, timeout=timeout_s)
        self.info.session.hooks["response"].append(self._record_response)
        self.manager = _RecordingManager(base_url, on_frame, self._closed(on_closed))
        self.info.ws_manager = self.manager

    def _closed(self, on_closed: Callable[[], None]) -> Callable[[], None]:
        def once() -> None:
            if not self._closed_once.is_set():
                self._closed_once.set()
                on_closed()

        return once

    def _record_response(self, response: requests.Response, *_: Any, **__: Any) -> None:
        body = response.request.body
        try:
            request = json.loads(body) if isinstance(body, (bytes, str)) and body else {}
        except ValueError:
            request = {}
        if response.status_code < 400 and isinstance(request, dict):
            self._on_rest(now_ms(), request, response.text)

    def start(self) -> None:
        self.manager.start()

    @property
    def connected(self) -> bool:
        return bool(self.manager.ws_ready) and not self._closed_once.is_set()

    def subscribe(self, subscription: dict[str, Any]) -> None:
        """Subscribe (queued by the SDK until the socket is open)."""
        self.info.subscribe(subscription, _ignore)

    def unsubscribe(self, subscription: dict[str, Any]) -> None:
        ids = self.manager.active_subscriptions.get(_identifier(subscription), [])
        for active in list(ids):
            self.info.unsubscribe(subscription, active.subscription_id)

    def candles(self, coin: str, interval: str, start_ms: int, end_ms: int) -> Any:
        return self.info.candles_snapshot(coin, interval, start_ms, end_ms)

    def funding(self, coin: str, start_ms: int, end_ms: int | None = None) -> Any:
        return self.info.funding_history(coin, start_ms, end_ms)

    def close(self) -> None:
        self._closed_once.set()
        try:
            self.manager.stop()
        except Exception as exc:  # the socket may already be gone; closing must not fail
            log.debug("closing the websocket: %s", exc)
        self.info.session.close()


def _ignore(_msg: Any) -> None:
    """Frames are taken raw in ``on_message``; the SDK's per-subscription callback is unused."""


def _identifier(subscription: dict[str, Any]) -> str:
    from hyperliquid.websocket_manager import subscription_to_identifier

    identifier: str = subscription_to_identifier(subscription)
    return identifier
