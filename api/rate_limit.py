"""Per-key rate limiting: a token bucket (GCRA) shared by every API process through Redis.

Each key may send `rate_limit_burst` requests at once and then `rate_limit_per_minute` per
minute. With a Redis broker the bucket lives in Redis, so several API processes (or hosts)
enforce one limit together; in the embedded mode (one process) it lives in memory. If Redis
cannot be reached the process falls back to its own buckets for a few seconds rather than
refusing or failing requests: limiting is protection, not a reason to be down.

Buckets are keyed by a hash of the presented credential, so a caller can only use up the
budget of a key it actually holds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Protocol

from redis import asyncio as redis_asyncio
from redis.exceptions import RedisError

from dfp.settings import Settings

log = logging.getLogger(__name__)

REDIS_PREFIX = "dfp:rate:"
# After a Redis error, buckets are kept in process for this long before Redis is tried again.
REDIS_RETRY_SECONDS = 5.0
# Buckets kept in memory before idle (full) ones are dropped.
LOCAL_BUCKETS = 10_000

# GCRA in microseconds on Redis's clock, so API hosts need not agree on the time.
# KEYS[1]: bucket; ARGV[1]: emission interval; ARGV[2]: burst tolerance.
# Returns 0 when allowed, else the microseconds until the next request would be.
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - tolerance
if allowed_at > now then return allowed_at - now end
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', ttl_ms)
return 0
"""


def bucket_of(credential: str) -> str:
    """The bucket of a presented key: never the key itself, which must not reach Redis."""
    return hashlib.sha256(credential.encode()).hexdigest()[:32]


class RateLimiter(Protocol):
    async def acquire(self, bucket: str) -> float | None:
        """None if the request may proceed, else the seconds to wait before the next one."""
        ...

    async def close(self) -> None: ...


class Unlimited:
    """No limit (DFP_RATE_LIMIT_PER_MINUTE=0)."""

    async def acquire(self, bucket: str) -> float | None:
        return None

    async def close(self) -> None:
        return None


class LocalRateLimiter:
    """The same bucket in this process's memory (the embedded mode, or Redis unreachable)."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.interval = 60.0 / per_minute
        self.tolerance = self.interval * burst
        self._tat: dict[str, float] = {}

    async def acquire(self, bucket: str) -> float | None:
        return self.acquire_now(bucket, time.monotonic())

    def acquire_now(self, bucket: str, now: float) -> float | None:
        tat = max(self._tat.get(bucket, now), now)
        allowed_at = tat + self.interval - self.tolerance
        if allowed_at > now:
            return allowed_at - now
        if len(self._tat) >= LOCAL_BUCKETS and bucket not in self._tat:
            # A bucket whose time is past is full again: forgetting it changes nothing.
            self._tat = {b: t for b, t in self._tat.items() if t > now}
        self._tat[bucket] = tat + self.interval
        return None

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    """Buckets in Redis, shared by every API process that uses the same Redis."""

    def __init__(self, url: str, per_minute: int, burst: int, timeout: float) -> None:
        self.client = redis_asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        self.script = self.client.register_script(GCRA_SCRIPT)
        self.interval_us = math.ceil(60e6 / per_minute)
        self.tolerance_us = self.interval_us * burst
        self.fallback = LocalRateLimiter(per_minute, burst)
        self._redis_down_until = 0.0

    async def acquire(self, bucket: str) -> float | None:
        now = time.monotonic()
        if now < self._redis_down_until:
            return self.fallback.acquire_now(bucket, now)
        try:
            wait_us = await self.script(
                keys=[REDIS_PREFIX + bucket], args=[self.interval_us, self.tolerance_us]
            )
        except (RedisError, OSError) as exc:
            log.warning(
                "rate limiter: Redis unavailable (%s); limiting in process for %.0f s",
                exc,
                REDIS_RETRY_SECONDS,
            )
            self._redis_down_until = now + REDIS_RETRY_SECONDS
            return self.fallback.acquire_now(bucket, now)
        return int(wait_us) / 1e6 if int(wait_us) > 0 else None

    async def close(self) -> None:
        await self.client.aclose()


def create_rate_limiter(settings: Settings) -> RateLimiter:
    """Redis-backed when the service uses Redis, in process otherwise; off at 0 per minute."""
    per_minute, burst = settings.rate_limit_per_minute, settings.rate_limit_burst
    if per_minute == 0:
        return Unlimited()
    url = settings.resolved_broker_url()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisRateLimiter(url, per_minute, burst, settings.broker_connect_timeout)
    return LocalRateLimiter(per_minute, burst)
