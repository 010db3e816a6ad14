"""Standard Webhooks signatures (https://www.standardwebhooks.com/), so receivers can verify a
delivery with any of that specification's libraries instead of code written for this hub."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from storage.webhooks import secret_key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, space-separated: during a rotation's grace period a receiver that
    still holds the old secret and one that already has the new one both find a match."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def headers(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
