"""Bearer keys `dfp_<id>_<secret>`: the id finds the row, the SHA-256 of the whole key proves it.

Keys are random 256-bit secrets, so a fast hash is enough (no password stretching needed);
comparison is constant-time so response timing reveals nothing about a stored hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from dfp.errors import InvalidRequestError, NotFoundError
from dfp.keys import repository
from dfp.storage.models import ApiKey
from dfp.storage.types import utcnow

OWNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
KEY_PATTERN = re.compile(r"^dfp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class CreatedKey:
    id: str
    owner: str
    key: str  # shown once; only its hash is stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, owner: str) -> CreatedKey:
    """A new key for `owner`; the plaintext is returned once and never stored."""
    if not OWNER_PATTERN.match(owner):
        raise InvalidRequestError(
            f"owner '{owner}' must be 1-100 characters of letters, digits and . _ @ -"
        )
    key_id = secrets.token_hex(6)
    key = f"dfp_{key_id}_{secrets.token_urlsafe(32)}"
    repository.add(session, ApiKey(id=key_id, owner=owner, secret_hash=hash_key(key)))
    return CreatedKey(id=key_id, owner=owner, key=key)


def key_id_of(key_or_id: str) -> str:
    """The id of a key given in full, as `dfp_<id>`, or as its id."""
    match = KEY_PATTERN.match(key_or_id)
    return match.group(1) if match else key_or_id.removeprefix("dfp_")


def revoke_key(session: Session, key_or_id: str) -> ApiKey:
    """Revoke a key (given in full or by id); it stops working at once."""
    key = repository.get(session, key_id_of(key_or_id))
    if key is None:
        raise NotFoundError(f"no API key with id '{key_id_of(key_or_id)}'")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def authenticate(session: Session, presented: str) -> str | None:
    """The owner of a valid, unrevoked key, or None."""
    match = KEY_PATTERN.match(presented)
    if match is None:
        return None
    row = repository.credentials(session, match.group(1))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, hash_key(presented)):
        return None
    return row.owner
