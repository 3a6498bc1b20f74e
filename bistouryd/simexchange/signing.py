"""Who signed an ``/exchange`` request, and whether its nonce may be used.

The signer is recovered from the EIP-712 "phantom agent" signature exactly as the official SDK
builds it (``hyperliquid.utils.signing.recover_agent_or_user_from_l1_action``): the action is
msgpack-encoded in the client's key order (JSON objects keep their order when parsed), and the
source is ``"b"`` because the SDK signs as mainnet only for ``https://api.hyperliquid.xyz``.

Nonces (docs "Nonces and API wallets", as summarised in HYPERLIQUID.md §a; not verified
against the live exchange): unique per signer, within (now - 2 days, now + 1 day) of the wall
clock, and larger than the smallest of the signer's 100 highest nonces. Error texts are the
real ones quoted in public client code: ``Invalid nonce: duplicate nonce N`` and
``Invalid nonce: nonce too low N < M``; the "too high" text is assumed.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

from hyperliquid.utils.signing import recover_agent_or_user_from_l1_action

NONCES_KEPT = 100
NONCE_PAST_MS = 2 * 86_400_000
NONCE_FUTURE_MS = 86_400_000


class SignatureError(ValueError):
    """The signature cannot be read: the real exchange answers "Unable to recover signer."."""


def recover_signer(
    action: Mapping[str, Any],
    signature: Mapping[str, Any],
    vault: str | None,
    nonce: int,
    expires_after: int | None,
) -> str:
    """The lowercase address that signed ``action`` (for a non-mainnet URL)."""
    try:
        address = recover_agent_or_user_from_l1_action(
            action, signature, vault, nonce, expires_after, False
        )
    except Exception as exc:  # eth_account raises many kinds on a garbled signature
        raise SignatureError(str(exc)) from None
    return str(address).lower()


class NonceBook:
    """The highest nonces seen per signer."""

    def __init__(self) -> None:
        self._seen: dict[str, list[int]] = {}  # min-heap of the highest NONCES_KEPT
        self._members: dict[str, set[int]] = {}

    def use(self, signer: str, nonce: int, now_ms: int) -> str:
        """Record ``nonce`` for ``signer``; returns the rejection text, or ``""`` if accepted."""
        heap = self._seen.setdefault(signer, [])
        members = self._members.setdefault(signer, set())
        if nonce in members:
            return f"Invalid nonce: duplicate nonce {nonce}"
        if len(heap) >= NONCES_KEPT and nonce <= heap[0]:
            return f"Invalid nonce: nonce too low {nonce} < {heap[0]}"
        if nonce <= now_ms - NONCE_PAST_MS:
            return f"Invalid nonce: nonce too low {nonce} < {now_ms - NONCE_PAST_MS}"
        if nonce >= now_ms + NONCE_FUTURE_MS:
            return f"Invalid nonce: nonce too high {nonce} > {now_ms + NONCE_FUTURE_MS}"
        heapq.heappush(heap, nonce)
        members.add(nonce)
        if len(heap) > NONCES_KEPT:
            members.discard(heapq.heappop(heap))
        return ""
