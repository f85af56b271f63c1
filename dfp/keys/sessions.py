"""Browser sessions: a signed token naming an API key, valid while that key is.

The token is `<key id>.<expires>.<nonce>.<signature>`; the signature is an HMAC-SHA256 keyed by
the key's stored hash, which never leaves the server. So a session needs no table of its own,
works across API processes, expires, and ends the moment its key is revoked (the key's row is
read on every request). The CSRF token of a session is derived from its nonce the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from dfp.keys import repository
from dfp.keys.service import KEY_PATTERN, authenticate

TOKEN_PATTERN = re.compile(r"^([0-9a-f]{12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([0-9a-f]{64})$")


@dataclass(frozen=True)
class SessionToken:
    """A presented session token, parsed (not yet verified)."""

    key_id: str
    expires: int
    nonce: str
    signature: str

    @classmethod
    def parse(cls, value: str) -> SessionToken | None:
        match = TOKEN_PATTERN.match(value)
        if match is None:
            return None
        key_id, expires, nonce, signature = match.groups()
        return cls(key_id, int(expires), nonce, signature)

    def __str__(self) -> str:
        return f"{self.key_id}.{self.expires}.{self.nonce}.{self.signature}"


@dataclass(frozen=True)
class VerifiedSession:
    owner: str
    csrf_token: str

    def accepts(self, presented: str | None) -> bool:
        """Whether `presented` is this session's CSRF token."""
        return presented is not None and hmac.compare_digest(presented, self.csrf_token)


def _mac(secret_hash: str, *parts: str) -> str:
    return hmac.new(secret_hash.encode(), ".".join(parts).encode(), hashlib.sha256).hexdigest()


def open_session(session: Session, api_key: str, lifetime: float) -> SessionToken | None:
    """A session for a valid, unrevoked key, lasting `lifetime` seconds; None for a bad key."""
    match = KEY_PATTERN.match(api_key)
    if match is None or authenticate(session, api_key) is None:
        return None
    row = repository.credentials(session, match.group(1))
    assert row is not None  # authenticate just read it
    expires = int(time.time() + lifetime)
    nonce = secrets.token_urlsafe(16)
    key_id = match.group(1)
    signature = _mac(row.secret_hash, "session", key_id, str(expires), nonce)
    return SessionToken(key_id, expires, nonce, signature)


def verify_session(session: Session, token: SessionToken) -> VerifiedSession | None:
    """The owner and CSRF token of an unexpired session whose key is still valid, else None."""
    if token.expires <= time.time():
        return None
    row = repository.credentials(session, token.key_id)
    if row is None or row.revoked_at is not None:
        return None
    expected = _mac(row.secret_hash, "session", token.key_id, str(token.expires), token.nonce)
    if not hmac.compare_digest(expected, token.signature):
        return None
    return VerifiedSession(row.owner, _mac(row.secret_hash, "csrf", token.nonce))
