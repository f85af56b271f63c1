"""Webhook signatures: `X-DFP-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

Each owner signs with a secret of its own, derived from the server's DFP_WEBHOOK_SECRET, so a
receiver that learns its secret cannot forge events for anyone else. The timestamp is part of
what is signed: a receiver refuses events older than a few minutes, so a captured request
cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from dfp.settings import Settings

SIGNATURE_HEADER = "X-DFP-Signature"
EVENT_ID_HEADER = "X-DFP-Event-Id"
EVENT_TYPE_HEADER = "X-DFP-Event-Type"
SIGNATURE_SCHEME = "t=<unix time>,v1=<hex HMAC-SHA256 of '<t>.<body>' keyed by the secret>"
# How old a signed timestamp a receiver should accept, in seconds.
TOLERANCE_SECONDS = 300


def owner_secret(settings: Settings, owner: str) -> str | None:
    """The secret that signs `owner`'s webhooks; None when the server sends no webhooks."""
    if settings.webhook_secret is None:
        return None
    master = settings.webhook_secret.get_secret_value().encode()
    derived = hmac.new(master, b"dfp-webhook-secret:" + owner.encode(), hashlib.sha256)
    return "whsec_" + derived.hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` keyed by `secret`."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The X-DFP-Signature value for `body` signed now (or at `timestamp`)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether `header` is a valid, fresh signature of `body` (what a receiver checks)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
