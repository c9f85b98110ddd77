"""Caching figures computed from the rollups until the organization's next ingest.

The cache key contains the organization's rollup version: the event count and rebuild time of its
AnalyticsState row, which `record_events` and `rebuild_rollups` change in the same transaction as
the rollups. A commit of new events therefore moves readers to a new key, and stale entries are
never read again and expire after CACHE_SECONDS. The values sit in the app's Redis (fakeredis in
embedded mode, where each process has its own cache).
"""

import hashlib
import json
import logging
import time

from redis.exceptions import RedisError
from sqlalchemy import select

from app.analytics.models import AnalyticsState
from app.extensions import db
from app.queue import get_queues

logger = logging.getLogger(__name__)

CACHE_SECONDS = 24 * 3600
KEY_PREFIX = "floyo:analytics"
# The version of an organization whose rollups have counted no event yet.
EMPTY_VERSION = "empty"
# A sorted set of the time zones the organization's analytics pages were computed in, scored by
# the time of the last cache miss. The rollup job precomputes the preset ranges in the newest.
ZONES_KEY = "floyo:analytics-zones:{org_id}"
ZONES_KEPT = 20


def rollup_version(org_id):
    """Return a string that changes whenever the organization's rollups change."""
    row = db.session.execute(
        select(AnalyticsState.events_recorded, AnalyticsState.rebuilt_at).where(AnalyticsState.org_id == org_id)
    ).first()
    if row is None:
        return format_version(None, None)
    return format_version(row.events_recorded, row.rebuilt_at)


def format_version(events_recorded, rebuilt_at):
    """Return the version string of a state row's values, which are None for an organization without one."""
    if not events_recorded:
        return EMPTY_VERSION
    rebuilt = rebuilt_at.timestamp() if rebuilt_at else 0
    return f"{events_recorded}-{rebuilt:.6f}"


def cache_key(org_id, version, name, parameters):
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}:{org_id}:{version}:{name}:{digest}"


def cached(org_id, version, name, parameters, compute):
    """Return the cached JSON value for the key, or compute, store and return it.

    A Redis error is logged and the value computed without the cache, so the page still works.
    """
    key = cache_key(org_id, version, name, parameters)
    connection = get_queues().connection
    try:
        raw = connection.get(key)
    except RedisError as error:
        logger.warning("analytics cache read failed org_id=%s name=%s error=%s", org_id, name, error)
        return compute()
    if raw is not None:
        return json.loads(raw)

    value = compute()
    try:
        connection.set(key, json.dumps(value), ex=CACHE_SECONDS)
    except RedisError as error:
        logger.warning("analytics cache write failed org_id=%s name=%s error=%s", org_id, name, error)
    return value


def remember_zone(org_id, zone):
    """Record that someone in the organization viewed the page in `zone`, for `recent_zones`."""
    key = ZONES_KEY.format(org_id=org_id)
    connection = get_queues().connection
    try:
        pipeline = connection.pipeline(transaction=False)
        pipeline.zadd(key, {zone: time.time()})
        # Keep the set small: only the most recent zones are ever read.
        pipeline.zremrangebyrank(key, 0, -(ZONES_KEPT + 1))
        pipeline.expire(key, CACHE_SECONDS * 30)
        pipeline.execute()
    except RedisError as error:
        logger.warning("analytics zone record failed org_id=%s zone=%s error=%s", org_id, zone, error)


def recent_zones(org_id, limit):
    """Return up to `limit` time zone names the organization's pages were last computed in, newest first."""
    if limit <= 0:
        return []
    try:
        zones = get_queues().connection.zrevrange(ZONES_KEY.format(org_id=org_id), 0, limit - 1)
    except RedisError as error:
        logger.warning("analytics zone read failed org_id=%s error=%s", org_id, error)
        return []
    return [zone.decode() if isinstance(zone, bytes) else zone for zone in zones]
