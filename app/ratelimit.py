"""Fixed-window rate limits counted in Redis (the in-process Redis in the embedded mode)."""

import logging
import time

import redis

from app.errors import RateLimited
from app.queue import get_queues

logger = logging.getLogger(__name__)


def hit(name, limit, window_seconds):
    """Count one attempt under `name`; return (allowed, seconds until the window resets)."""
    connection = get_queues().connection
    window = int(time.time() // window_seconds)
    key = f"floyo:ratelimit:{name}:{window}"
    try:
        pipeline = connection.pipeline()
        pipeline.incr(key)
        pipeline.expire(key, window_seconds + 1)
        count, _ = pipeline.execute()
    except redis.RedisError:
        # Failing open keeps sign-in working while Redis is down; the outage is logged.
        logger.exception("rate limit check failed name=%s", name)
        return True, 0
    retry_after = window_seconds - int(time.time() % window_seconds)
    return count <= limit, max(retry_after, 1)


def enforce(name, limit, window_seconds, message):
    allowed, retry_after = hit(name, limit, window_seconds)
    if not allowed:
        raise RateLimited(f"{message} Try again in {retry_after} seconds.", retry_after)
