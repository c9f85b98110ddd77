"""Keeping the rollups: adding each stored batch of events, and rebuilding them from raw events."""

import hashlib
import logging
import posixpath
from collections import Counter, defaultdict
from datetime import UTC, timedelta

import redis
from flask import current_app
from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from app.analytics.models import (
    NO_USER,
    ActivitySession,
    AnalyticsState,
    DailyCount,
    HourlyCount,
    PathDailyCount,
    PathHourlyCount,
    PendingRollup,
    TypeHourlyCount,
)
from app.events.models import Event
from app.extensions import db
from app.queue import enqueue_once_after_commit, get_queues
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

REBUILD_BATCH_EVENTS = 5000
EXT_MAX_LENGTH = 32
# Session values per lookup: far below the bound-parameter limits of SQLite and PostgreSQL.
SESSION_LOOKUP_CHUNK = 500
# Pending batches one transaction of the rollup job adds: up to about 50,000 events.
PENDING_BATCHES_PER_TRANSACTION = 50
# While this Redis key exists a rollup job for the organization is queued, so ingest adds none.
QUEUED_KEY = "floyo:rollups-queued:{org_id}"
QUEUED_KEY_SECONDS = 600
EVENT_COLUMNS = (Event.id, Event.user_id, Event.type, Event.tool, Event.path, Event.occurred_at, Event.session)


def queue_batch(org_id, event_ids):
    """Queue stored events for the rollups, in the caller's transaction; a job adds them after commit.

    One small row per batch keeps ingest free of the rollup rows' locks. The job is enqueued only
    when none is queued for the organization, so a stream of batches starts one job at a time.
    """
    if not event_ids:
        return
    db.session.add(PendingRollup(org_id=org_id, event_ids=list(event_ids)))

    from app.analytics.jobs import apply_pending_rollups_job

    enqueue_once_after_commit(QUEUED_KEY.format(org_id=org_id), QUEUED_KEY_SECONDS, apply_pending_rollups_job, org_id)


def apply_pending(org_id):
    """Add the organization's pending batches to the rollups, committing every few batches.

    Returns the number of events added. On PostgreSQL the pending rows are locked with SKIP
    LOCKED, so two jobs for one organization never add the same batch.
    """
    try:
        get_queues().connection.delete(QUEUED_KEY.format(org_id=org_id))
    except redis.RedisError:
        logger.exception("rollup job flag could not be cleared org_id=%s", org_id)
    added = 0
    while True:
        pending = db.session.scalars(
            select(PendingRollup)
            .where(PendingRollup.org_id == org_id)
            .order_by(PendingRollup.id)
            .limit(PENDING_BATCHES_PER_TRANSACTION)
            .with_for_update(skip_locked=True)
        ).all()
        if not pending:
            return added
        event_ids = sorted({event_id for batch in pending for event_id in batch.event_ids})
        events = []
        for start in range(0, len(event_ids), REBUILD_BATCH_EVENTS):
            chunk = event_ids[start : start + REBUILD_BATCH_EVENTS]
            statement = select(*EVENT_COLUMNS).where(Event.org_id == org_id, Event.id.in_(chunk))
            events.extend(row._asdict() for row in db.session.execute(statement))
        record_events(org_id, events)
        db.session.execute(delete(PendingRollup).where(PendingRollup.id.in_([batch.id for batch in pending])))
        db.session.commit()
        added += len(events)


def extension_of(path):
    """Return the lower-case extension of the path's last part without the dot, or ""."""
    name = posixpath.basename(path.replace("\\", "/"))
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > EXT_MAX_LENGTH:
        return ""
    return ext.lower()


def path_key(path):
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


def _field(event, name):
    if isinstance(event, dict):
        return event.get(name)
    return getattr(event, name)


def record_events(org_id, events):
    """Add stored events to the organization's rollups, in the caller's transaction.

    `events` are Event rows or dicts with user_id, type, tool, path, occurred_at and session. Call
    it once for each event actually stored (never for a duplicate), before the commit that stores
    them, so the rollups and the events commit or roll back together.
    """
    if not events:
        return

    hourly = Counter()
    path_hourly = Counter()
    paths = {}
    for event in events:
        occurred_at = _field(event, "occurred_at").astimezone(UTC)
        hour_start = occurred_at.replace(minute=0, second=0, microsecond=0)
        user_id = _field(event, "user_id") or NO_USER
        path = _field(event, "path")
        tool = _field(event, "tool") or ""
        ext = extension_of(path)
        key = path_key(path)
        hourly[(hour_start, user_id, _field(event, "type"), tool, ext)] += 1
        path_hourly[(hour_start, key, user_id, _field(event, "type"), tool)] += 1
        paths[key] = (path, ext)

    daily = Counter()
    type_hourly = Counter()
    for (hour_start, user_id, event_type, tool, ext), count in hourly.items():
        daily[(hour_start.replace(hour=0), user_id, event_type, tool, ext)] += count
        type_hourly[(hour_start, event_type)] += count
    path_daily = Counter()
    for (hour_start, key, _, _, _), count in path_hourly.items():
        path_daily[(hour_start.replace(hour=0), key)] += count

    _upsert_counts(
        HourlyCount,
        [
            {"org_id": org_id, "hour_start": h, "user_id": u, "type": t, "tool": tool, "ext": ext, "count": n}
            for (h, u, t, tool, ext), n in sorted(hourly.items())
        ],
    )
    _upsert_counts(
        PathHourlyCount,
        [
            {
                "org_id": org_id,
                "hour_start": h,
                "path_key": key,
                "user_id": u,
                "type": t,
                "tool": tool,
                "ext": paths[key][1],
                "path": paths[key][0],
                "count": n,
            }
            for (h, key, u, t, tool), n in sorted(path_hourly.items())
        ],
    )
    _upsert_counts(
        DailyCount,
        [
            {"org_id": org_id, "day_start": d, "user_id": u, "type": t, "tool": tool, "ext": ext, "count": n}
            for (d, u, t, tool, ext), n in sorted(daily.items())
        ],
    )
    _upsert_counts(
        TypeHourlyCount,
        [{"org_id": org_id, "hour_start": h, "type": t, "count": n} for (h, t), n in sorted(type_hourly.items())],
    )
    _upsert_counts(
        PathDailyCount,
        [
            {"org_id": org_id, "day_start": d, "path_key": key, "path": paths[key][0], "count": n}
            for (d, key), n in sorted(path_daily.items())
        ],
    )
    # The counts above are atomic upserts and need no lock. Session merging reads and rewrites
    # sessions, so it waits for the state row: the lock is taken this late to keep concurrent
    # batches of one organization waiting for each other as briefly as possible.
    _lock_state(org_id, len(events))
    _merge_sessions(org_id, events)


def _insert_for_dialect():
    return postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _lock_state(org_id, count):
    """Add `count` to the organization's state row, which holds its row lock until the commit."""
    insert = _insert_for_dialect()
    db.session.execute(insert(AnalyticsState).values(org_id=org_id, events_recorded=0).on_conflict_do_nothing())
    db.session.execute(
        update(AnalyticsState)
        .where(AnalyticsState.org_id == org_id)
        .values(events_recorded=AnalyticsState.events_recorded + count)
    )


def _upsert_counts(model, rows):
    """Insert count rows, adding to the count of rows that exist. Rows come sorted by key.

    The sorted order means two transactions touching the same keys lock them in the same order.
    The rows go as parameter sets of one statement (executemany), so the statement is compiled
    once and cached; a multi-row VALUES list is compiled anew for each batch, which took longer
    than the database's work for a batch of a thousand events.
    """
    if not rows:
        return
    table = model.__table__
    primary_key = [column.name for column in table.primary_key.columns]
    statement = _insert_for_dialect()(table)
    statement = statement.on_conflict_do_update(
        index_elements=primary_key, set_={"count": table.c.count + statement.excluded.count}
    )
    db.session.execute(statement, rows)


def _merge_sessions(org_id, events):
    """Fold the events into the organization's sessions.

    Events with a `session` value extend their user's session of that value. The others join
    their user's sessions: a new event within the gap of a session extends it, and one that
    closes the gap between two sessions joins them into one.
    """
    gap = timedelta(minutes=current_app.config["ANALYSIS_SESSION_GAP_MINUTES"])
    named = defaultdict(list)
    unnamed = defaultdict(list)
    for event in events:
        occurred_at = _field(event, "occurred_at").astimezone(UTC)
        user_id = _field(event, "user_id") or NO_USER
        if _field(event, "session"):
            named[(user_id, _field(event, "session"))].append(occurred_at)
        else:
            unnamed[user_id].append(occurred_at)

    # One lookup per chunk of session values instead of one per session: a batch of agent or git
    # events names dozens of sessions. The filter on user_id lets the lookup use the index
    # (org_id, user_id, session, started_at).
    keys = sorted(named)
    existing = {}
    for start in range(0, len(keys), SESSION_LOOKUP_CHUNK):
        chunk = keys[start : start + SESSION_LOOKUP_CHUNK]
        rows = db.session.scalars(
            select(ActivitySession).where(
                ActivitySession.org_id == org_id,
                ActivitySession.user_id.in_({user_id for user_id, _ in chunk}),
                ActivitySession.session.in_({value for _, value in chunk}),
            )
        )
        existing.update({(row.user_id, row.session): row for row in rows})
    for key in keys:
        times = named[key]
        row = existing.get(key)
        if row is None:
            db.session.add(
                ActivitySession(
                    org_id=org_id,
                    user_id=key[0],
                    session=key[1],
                    started_at=min(times),
                    ended_at=max(times),
                    event_count=len(times),
                )
            )
        else:
            row.started_at = min(row.started_at, *times)
            row.ended_at = max(row.ended_at, *times)
            row.event_count += len(times)

    for user_id, times in sorted(unnamed.items()):
        times.sort()
        existing = db.session.scalars(
            select(ActivitySession).where(
                ActivitySession.org_id == org_id,
                ActivitySession.user_id == user_id,
                ActivitySession.session == "",
                ActivitySession.started_at <= times[-1] + gap,
                ActivitySession.ended_at >= times[0] - gap,
            )
        ).all()
        spans = [(row.started_at, row.ended_at, row.event_count) for row in existing]
        spans.extend((occurred_at, occurred_at, 1) for occurred_at in times)
        for row in existing:
            db.session.delete(row)
        for started_at, ended_at, count in _join_spans(spans, gap):
            db.session.add(
                ActivitySession(
                    org_id=org_id,
                    user_id=user_id,
                    session="",
                    started_at=started_at,
                    ended_at=ended_at,
                    event_count=count,
                )
            )
    db.session.flush()


def _join_spans(spans, gap):
    """Join (start, end, count) spans that are at most `gap` apart into sessions."""
    joined = []
    for started_at, ended_at, count in sorted(spans):
        if joined and started_at - joined[-1][1] <= gap:
            last_start, last_end, last_count = joined[-1]
            joined[-1] = (last_start, max(last_end, ended_at), last_count + count)
        else:
            joined.append((started_at, ended_at, count))
    return joined


def rebuild_rollups(org_id, batch_size=REBUILD_BATCH_EVENTS):
    """Recompute the organization's rollups and sessions from its raw events; the caller commits.

    For data stored before the rollups existed, or after events were deleted by hand. It reads the
    events in batches in time order, so memory stays bounded by the batch size. The state row is
    locked first, so ingest for the organization waits until the rebuild commits.
    """
    _lock_state(org_id, 0)
    # The rebuild counts every stored event, including those of batches still waiting for the job.
    rollups = (HourlyCount, PathHourlyCount, DailyCount, TypeHourlyCount, PathDailyCount, ActivitySession)
    for model in (*rollups, PendingRollup):
        db.session.execute(delete(model).where(model.org_id == org_id))
    db.session.execute(
        update(AnalyticsState).where(AnalyticsState.org_id == org_id).values(events_recorded=0, rebuilt_at=utcnow())
    )

    position = None
    total = 0
    while True:
        statement = (
            select(*EVENT_COLUMNS).where(Event.org_id == org_id).order_by(Event.occurred_at, Event.id).limit(batch_size)
        )
        if position is not None:
            statement = statement.where(tuple_(Event.occurred_at, Event.id) > position)
        batch = [row._asdict() for row in db.session.execute(statement)]
        if not batch:
            break
        record_events(org_id, batch)
        total += len(batch)
        position = (batch[-1]["occurred_at"], batch[-1]["id"])
    db.session.execute(update(AnalyticsState).where(AnalyticsState.org_id == org_id).values(rebuilt_at=utcnow()))
    logger.info("analytics rollups rebuilt org_id=%s events=%s", org_id, total)
    return total
