"""Signer recovery from SDK-signed actions, and the nonce rules."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from hyperliquid.utils.signing import sign_l1_action

from bistouryd.simexchange.signing import NONCES_KEPT, NonceBook, SignatureError, recover_signer

WALLET = Account.from_key("0x" + "42" * 32)
NOW = 1_790_000_000_000
ORDER = {
    "type": "order",
    "orders": [
        {
            "a": 0,
            "b": True,
            "p": "60000",
            "s": "0.001",
            "r": False,
            "t": {"limit": {"tif": "Gtc"}},
            "c": "0x00000000000000000000000000000001",
        }
    ],
    "grouping": "na",
}


def through_json(x: object) -> dict:  # type: ignore[type-arg]
    return json.loads(json.dumps(x))  # type: ignore[no-any-return]


@pytest.mark.parametrize("vault", [None, "0x" + "ab" * 20])
@pytest.mark.parametrize("expires", [None, NOW + 60_000])
def test_the_sdk_signer_is_recovered(vault: str | None, expires: int | None) -> None:
    signature = sign_l1_action(WALLET, ORDER, vault, NOW, expires, False)  # a local URL: "b"
    action = through_json(ORDER)
    assert recover_signer(action, through_json(signature), vault, NOW, expires) == (
        WALLET.address.lower()
    )


def test_a_mainnet_signature_or_another_nonce_gives_another_signer() -> None:
    mainnet = sign_l1_action(WALLET, ORDER, None, NOW, None, True)
    assert recover_signer(ORDER, mainnet, None, NOW, None) != WALLET.address.lower()
    local = sign_l1_action(WALLET, ORDER, None, NOW, None, False)
    assert recover_signer(ORDER, local, None, NOW + 1, None) != WALLET.address.lower()


def test_the_key_order_of_the_action_matters() -> None:
    signature = sign_l1_action(WALLET, ORDER, None, NOW, None, False)
    reordered = {"grouping": "na", "orders": ORDER["orders"], "type": "order"}
    assert recover_signer(reordered, signature, None, NOW, None) != WALLET.address.lower()


def test_a_garbled_signature() -> None:
    with pytest.raises(SignatureError):
        recover_signer(ORDER, {"r": "0x00", "s": "0x00", "v": 99}, None, NOW, None)


def test_nonces() -> None:
    book = NonceBook()
    assert book.use("0xa", NOW, NOW) == ""
    assert book.use("0xa", NOW, NOW) == f"Invalid nonce: duplicate nonce {NOW}"
    assert book.use("0xb", NOW, NOW) == ""  # per signer
    assert book.use("0xa", NOW - 3 * 86_400_000, NOW).startswith("Invalid nonce: nonce too low")
    assert book.use("0xa", NOW + 2 * 86_400_000, NOW).startswith("Invalid nonce: nonce too high")
    for i in range(1, NONCES_KEPT + 1):
        assert book.use("0xa", NOW + i, NOW) == ""
    # Now the 100 highest are NOW+1..NOW+100: anything not above the smallest is refused.
    assert book.use("0xa", NOW + 1, NOW) == "Invalid nonce: duplicate nonce " + str(NOW + 1)
    assert book.use("0xa", NOW - 5, NOW) == f"Invalid nonce: nonce too low {NOW - 5} < {NOW + 1}"
    assert book.use("0xa", NOW + 500, NOW) == ""
