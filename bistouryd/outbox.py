"""System events on their way to the database.

The recorder acknowledges each batch after its commit; until then an event stays here
and is sent again (after ``resend_after_s``, or at once when the recorder comes back
from a restart). The outbox is bounded: if the recorder stays away long enough for it
to fill, the oldest events are dropped and counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from bistouryd.events import SysEvent


class EventOutbox:
    def __init__(self, max_events: int, resend_after_s: float, on_drop: Callable[[], None]):
        self._events: OrderedDict[str, SysEvent] = OrderedDict()
        self._sent_at: dict[str, float] = {}
        self._max = max_events
        self._resend_after_s = resend_after_s
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: SysEvent) -> None:
        self._events[event.id] = event
        while len(self._events) > self._max:
            dropped, _ = self._events.popitem(last=False)
            self._sent_at.pop(dropped, None)
            self._on_drop()

    def due(self, now: float) -> list[SysEvent]:
        """Events never sent, or sent too long ago without an acknowledgement."""
        return [
            event
            for event_id, event in self._events.items()
            if now - self._sent_at.get(event_id, now - self._resend_after_s) >= self._resend_after_s
        ]

    def mark_sent(self, events: Iterable[SysEvent], now: float) -> None:
        for event in events:
            self._sent_at[event.id] = now

    def acknowledge(self, ids: Iterable[str]) -> None:
        for event_id in ids:
            self._events.pop(event_id, None)
            self._sent_at.pop(event_id, None)

    def resend_all(self) -> None:
        """The recorder restarted: whatever it had not acknowledged is due now."""
        self._sent_at.clear()

    def pending(self) -> list[SysEvent]:
        return list(self._events.values())
