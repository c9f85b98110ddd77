"""Storing and reading usage events.

Events arrive in bulk (API batches of up to a thousand, git imports of many thousands), so they are
stored with COPY on PostgreSQL and multi-row INSERT statements elsewhere, never one ORM object per row.
"""

import json
import logging

import psycopg
from sqlalchemy.dialects import postgresql, sqlite

from app.analytics.rollups import queue_batch
from app.billing.limits import record_usage
from app.errors import NotFound, ServiceError
from app.events.models import EVENT_TYPES, SOURCES, Event
from app.events.schemas import parse_timestamp
from app.extensions import db
from app.timeutil import isoformat, utcnow

logger = logging.getLogger(__name__)

# Rows per COPY or INSERT statement. 11 columns x 1,000 rows stays below SQLite's limit of 32,766
# bound parameters (SQLite >= 3.32) and PostgreSQL's 65,535.
INSERT_CHUNK_ROWS = 1000
# Event ids per `IN (...)` lookup of duplicates, under the same parameter limits.
LOOKUP_CHUNK_IDS = 5000


class InvalidQuery(ServiceError):
    """A filter or cursor value that cannot be used; the message names the parameter."""

    status = 400
    code = "invalid_filter"


class InvalidCursor(InvalidQuery):
    code = "invalid_cursor"


def insert_events(org_id, user_id, source, events):
    """Store validated events for an organization; return ("accepted", id) or ("duplicate", id) per event.

    `events` are dicts with type, path, tool, occurred_at (an aware datetime), session, event_id and
    metadata, and optionally their own source, which wins over `source`, and metadata_json, the
    metadata already serialized as compact JSON (validation makes it). An event whose event_id
    the organization already has, or that repeats an earlier event_id of the same list, is not
    stored and reports the id of the stored one. Nothing is committed: the caller commits, and the
    analysis requested here is enqueued after that commit.
    """
    if not events:
        return []
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}; expected one of {', '.join(SOURCES)}")
    received_at = utcnow()

    results = [None] * len(events)
    # Index of the first event with each event_id; later ones in the same list repeat it.
    first_with_id = {}
    repeats = []
    rows = []
    for index, event in enumerate(events):
        event_id = event.get("event_id")
        if event_id is not None:
            if event_id in first_with_id:
                repeats.append((index, first_with_id[event_id]))
                continue
            first_with_id[event_id] = index
        rows.append((index, event))

    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        for index, new_id in _insert_chunk(org_id, user_id, source, received_at, chunk):
            results[index] = ("accepted", new_id)

    missing = {event["event_id"]: index for index, event in rows if results[index] is None}
    if missing:
        for event_id, existing_id in _existing_ids(org_id, list(missing)).items():
            results[missing[event_id]] = ("duplicate", existing_id)
    if any(results[index] is None for index, _ in rows):
        # Only possible if a conflicting row was deleted between the INSERT and the lookup.
        raise RuntimeError(f"events of org {org_id} were neither stored nor found as duplicates")
    for index, first in repeats:
        results[index] = ("duplicate", results[first][1])
    # Queued in this transaction, so the rollups count exactly the events stored, once.
    queue_batch(org_id, [results[index][1] for index, _ in rows if results[index][0] == "accepted"])

    accepted = sum(1 for status, _ in results if status == "accepted")
    # Raises LimitExceeded past the plan's monthly events, and the caller's rollback drops the batch.
    record_usage(org_id, "events_per_month", accepted)
    if accepted:
        from app.insights.service import request_analysis
        from app.workflows.triggers import match_new_events

        request_analysis(org_id)
        match_new_events(org_id, [stored_id for status, stored_id in results if status == "accepted"])
    logger.info(
        "events stored org_id=%s user_id=%s source=%s accepted=%s duplicates=%s",
        org_id,
        user_id,
        source,
        accepted,
        len(results) - accepted,
    )
    return results


def _insert_chunk(org_id, user_id, source, received_at, chunk):
    """Insert (index, event) pairs; return (index, id) for the events stored.

    On PostgreSQL the rows go in with one COPY: in 1,000-row batches on PostgreSQL 15, COPY stored
    about 9,000 rows a second where a multi-row INSERT ... ON CONFLICT RETURNING stored about 5,000.
    COPY cannot skip a row whose event_id is already stored, so a chunk with one (a resend) is
    rolled back to its savepoint and goes through INSERT ... ON CONFLICT DO NOTHING instead.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return _insert_on_conflict(sqlite.insert, _rows(org_id, user_id, source, received_at, chunk))
    try:
        with db.session.begin_nested():
            return _copy_postgresql(org_id, user_id, source, received_at, chunk)
    except psycopg.errors.UniqueViolation:
        logger.info("known event_id in COPY, inserting with ON CONFLICT instead org_id=%s rows=%s", org_id, len(chunk))
        return _insert_on_conflict(postgresql.insert, _rows(org_id, user_id, source, received_at, chunk))


_COPY_COLUMNS = "id, org_id, user_id, type, path, tool, occurred_at, session, event_id, metadata, source, received_at"
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _copy_postgresql(org_id, user_id, source, received_at, chunk):
    """COPY the events into the events table with ids taken from its sequence beforehand."""
    cursor = db.session.connection().connection.driver_connection.cursor()
    encode = _COMPACT_JSON.encode
    with cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, %s)", [len(chunk)]
        )
        new_ids = [new_id for (new_id,) in cursor.fetchall()]
        with cursor.copy(f"COPY events ({_COPY_COLUMNS}) FROM STDIN") as copy:
            for new_id, (_, event) in zip(new_ids, chunk, strict=True):
                copy.write_row(
                    (
                        new_id,
                        org_id,
                        user_id,
                        event["type"],
                        event["path"],
                        event.get("tool") or "",
                        event["occurred_at"],
                        event.get("session"),
                        event.get("event_id"),
                        event.get("metadata_json") or encode(event.get("metadata") or {}),
                        event.get("source") or source,
                        received_at,
                    )
                )
    return [(index, new_id) for new_id, (index, _) in zip(new_ids, chunk, strict=True)]


def _rows(org_id, user_id, source, received_at, chunk):
    """Turn (index, event) pairs into (index, row) pairs keyed by the events table's columns."""
    return [
        (
            index,
            {
                "org_id": org_id,
                "user_id": user_id,
                "type": event["type"],
                "path": event["path"],
                "tool": event.get("tool") or "",
                "occurred_at": event["occurred_at"],
                "session": event.get("session"),
                "event_id": event.get("event_id"),
                "metadata": event.get("metadata") or {},
                "source": event.get("source") or source,
                "received_at": received_at,
            },
        )
        for index, event in chunk
    ]


def _insert_on_conflict(insert, chunk):
    """Insert the rows with one INSERT ... ON CONFLICT DO NOTHING RETURNING; return (index, id) of those stored.

    RETURNING gives no order, so stored rows are matched to their input by event_id, and rows
    without one by id: a multi-row VALUES list is inserted in order, and the id sequence increases.
    """
    table = Event.__table__
    statement = (
        insert(table)
        .values([row for _, row in chunk])
        .on_conflict_do_nothing(index_elements=["org_id", "event_id"])
        .returning(table.c.id, table.c.event_id)
    )
    returned = db.session.execute(statement).all()

    index_by_event_id = {row["event_id"]: index for index, row in chunk if row["event_id"] is not None}
    without_id = [index for index, row in chunk if row["event_id"] is None]
    stored = []
    anonymous_ids = []
    for new_id, event_id in returned:
        if event_id is None:
            anonymous_ids.append(new_id)
        else:
            stored.append((index_by_event_id[event_id], new_id))
    anonymous_ids.sort()
    stored.extend(zip(without_id, anonymous_ids, strict=True))
    return stored


# One index lookup per event_id. For a thousand ids, PostgreSQL 15 planned `event_id IN (...)` and
# `= ANY(...)` as a scan of all the organization's events, whose cost grows with the table.
# LIMIT 1 keeps the planner from turning the lateral subquery into a hash join over that scan.
_LOOKUP_POSTGRESQL = """
SELECT wanted.event_id, found.id
FROM unnest(CAST(:event_ids AS text[])) AS wanted(event_id)
CROSS JOIN LATERAL (
    SELECT id FROM events WHERE org_id = :org_id AND event_id = wanted.event_id LIMIT 1
) AS found
"""


def _existing_ids(org_id, event_ids):
    """Return {event_id: id} for the event_ids the organization already has."""
    found = {}
    postgres = db.session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(event_ids), LOOKUP_CHUNK_IDS):
        chunk = event_ids[start : start + LOOKUP_CHUNK_IDS]
        if postgres:
            rows = db.session.execute(db.text(_LOOKUP_POSTGRESQL), {"event_ids": chunk, "org_id": org_id})
        else:
            rows = db.session.execute(
                db.select(Event.event_id, Event.id).where(Event.org_id == org_id, Event.event_id.in_(chunk))
            )
        found.update({event_id: event_pk for event_id, event_pk in rows})
    return found


def get_event(org_id, event_id):
    """Return the organization's event with this id, or raise NotFound (also for other organizations' ids)."""
    event = db.session.scalar(db.select(Event).where(Event.id == event_id, Event.org_id == org_id))
    if event is None:
        raise NotFound(f"Event {event_id} was not found.")
    return event


def parse_filters(args, assume_utc=False):
    """Read the filters type, tool, path_prefix, from and to from a mapping of query parameters.

    Empty values mean no filter. `from` and `to` are inclusive ISO 8601 timestamps; without
    `assume_utc` they must carry an offset. Raises InvalidQuery naming the parameter.
    """
    filters = {}
    event_type = args.get("type") or None
    if event_type is not None and event_type not in EVENT_TYPES:
        raise InvalidQuery(f"type must be one of {', '.join(EVENT_TYPES)}; got {event_type!r}.", {"parameter": "type"})
    filters["type"] = event_type
    filters["tool"] = args.get("tool") or None
    filters["path_prefix"] = args.get("path_prefix") or None
    for name in ("from", "to"):
        raw = args.get(name) or None
        if raw is None:
            filters[name] = None
            continue
        try:
            filters[name] = parse_timestamp(raw, assume_utc=assume_utc)
        except ValueError as error:
            raise InvalidQuery(f"{name} {error}.", {"parameter": name}) from None
    if filters["from"] and filters["to"] and filters["from"] > filters["to"]:
        raise InvalidQuery("from is later than to; swap them or widen the range.", {"parameter": "from"})
    return filters


def list_events(org_id, filters, limit, cursor_values=None):
    """Return up to `limit` of the organization's events, newest first, and the cursor of the next page.

    The order is occurred_at descending, then id descending, so it is stable for events with the
    same time. `cursor_values` are the values a previous call returned as the next cursor (None
    on the last page); a malformed one raises InvalidQuery.
    """
    query = db.select(Event).where(Event.org_id == org_id)
    if filters.get("type"):
        query = query.where(Event.type == filters["type"])
    if filters.get("tool"):
        query = query.where(Event.tool == filters["tool"])
    if filters.get("path_prefix"):
        prefix = filters["path_prefix"]
        # substr instead of LIKE: LIKE treats % and _ as wildcards and ignores case on SQLite.
        query = query.where(db.func.substr(Event.path, 1, len(prefix)) == prefix)
    if filters.get("from"):
        query = query.where(Event.occurred_at >= filters["from"])
    if filters.get("to"):
        query = query.where(Event.occurred_at <= filters["to"])
    if cursor_values is not None:
        occurred_at, last_id = _cursor_position(cursor_values)
        query = query.where(
            db.or_(
                Event.occurred_at < occurred_at,
                db.and_(Event.occurred_at == occurred_at, Event.id < last_id),
            )
        )
    query = query.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(limit + 1)

    events = db.session.scalars(query).all()
    if len(events) <= limit:
        return events, None
    events = events[:limit]
    return events, [isoformat(events[-1].occurred_at), events[-1].id]


def _cursor_position(values):
    try:
        occurred_at = parse_timestamp(values[0])
        last_id = values[1]
    except (ValueError, TypeError, IndexError):
        occurred_at, last_id = None, None
    if occurred_at is None or type(last_id) is not int:
        raise InvalidCursor(
            "The cursor is invalid. Use the next_cursor of a previous page, unchanged.", {"parameter": "cursor"}
        )
    return occurred_at, last_id
