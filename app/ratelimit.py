"""Fixed-window rate limits counted in Redis (the in-process Redis in the embedded mode).

A rate-limited request's response carries the limit it was counted against:
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (the Unix time in seconds
when the window ends, as GitHub's API reports it), and a 429 also `Retry-After` in seconds.
When one request is counted against several limits, the headers describe the one with the
fewest requests left.
"""

import logging
import time
from dataclasses import dataclass

import redis
from flask import g, has_request_context

from app.errors import RateLimited
from app.queue import get_queues

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """The state of one limit after counting a request."""

    limit: int
    remaining: int
    reset_at: int
    retry_after: int
    allowed: bool


def count(name, limit, window_seconds):
    """Count one attempt under `name` and return its Window, or None when Redis failed."""
    connection = get_queues().connection
    now = time.time()
    window = int(now // window_seconds)
    key = f"floyo:ratelimit:{name}:{window}"
    try:
        pipeline = connection.pipeline()
        pipeline.incr(key)
        pipeline.expire(key, window_seconds + 1)
        attempts, _ = pipeline.execute()
    except redis.RedisError:
        # Failing open keeps sign-in and the API working while Redis is down; the outage is logged.
        logger.exception("rate limit check failed name=%s", name)
        return None
    reset_at = (window + 1) * window_seconds
    return Window(
        limit=limit,
        remaining=max(limit - attempts, 0),
        reset_at=reset_at,
        retry_after=max(reset_at - int(now), 1),
        allowed=attempts <= limit,
    )


def uncount(name, window_seconds):
    """Take back one attempt counted under `name` in the current window, such as a correct code."""
    connection = get_queues().connection
    key = f"floyo:ratelimit:{name}:{int(time.time() // window_seconds)}"
    try:
        if connection.decr(key) < 0:
            connection.delete(key)
    except redis.RedisError:
        logger.exception("rate limit uncount failed name=%s", name)


def hit(name, limit, window_seconds):
    """Count one attempt under `name`; return (allowed, seconds until the window resets)."""
    state = count(name, limit, window_seconds)
    if state is None:
        return True, 0
    return state.allowed, state.retry_after


def enforce(name, limit, window_seconds, message):
    """Count one attempt under `name` and raise RateLimited (429) past `limit` in the window.

    The window is also kept for the X-RateLimit-* headers of the response.
    """
    state = count(name, limit, window_seconds)
    if state is None:
        return
    if has_request_context():
        reported = g.get("rate_limit_window")
        if reported is None or state.remaining < reported.remaining or not state.allowed:
            g.rate_limit_window = state
    if not state.allowed:
        raise RateLimited(f"{message} Try again in {state.retry_after} seconds.", state.retry_after)


def init_app(app):
    @app.after_request
    def add_rate_limit_headers(response):
        state = g.get("rate_limit_window")
        if state is not None:
            response.headers["X-RateLimit-Limit"] = str(state.limit)
            response.headers["X-RateLimit-Remaining"] = str(state.remaining)
            response.headers["X-RateLimit-Reset"] = str(state.reset_at)
        return response
