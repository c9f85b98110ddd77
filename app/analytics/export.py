"""Exporting events as CSV, JSON or NDJSON, streamed in batches so memory stays flat."""

import csv
import io
import json
import re

from sqlalchemy import select, tuple_

from app.auth.models import User
from app.events.models import Event
from app.extensions import db
from app.timeutil import isoformat

FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json", "ndjson": "application/x-ndjson"}
COLUMNS = ("id", "occurred_at", "type", "path", "tool", "user_email", "session", "source", "event_id", "metadata")
BATCH_ROWS = 2000

# Characters that make a spreadsheet read a cell as a formula (OWASP's list for CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def inert_cell(value):
    """Prefix a text cell that a spreadsheet would run as a formula with `'`; numbers stay numbers."""
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    if NUMBER.fullmatch(value):
        return value
    return "'" + value


def filename(query, export_format):
    return f"floyo-events-{query.start.isoformat()}-to-{query.end.isoformat()}.{export_format}"


def _statement(org_id, query):
    statement = select(
        Event.id,
        Event.occurred_at,
        Event.type,
        Event.path,
        Event.tool,
        Event.user_id,
        Event.session,
        Event.source,
        Event.event_id,
        Event.meta,
    ).where(Event.org_id == org_id, Event.occurred_at >= query.start_utc, Event.occurred_at < query.end_utc)
    if query.tool:
        statement = statement.where(Event.tool == query.tool)
    if query.type:
        statement = statement.where(Event.type == query.type)
    if query.member_id:
        statement = statement.where(Event.user_id == query.member_id)
    if query.path_prefix:
        escaped = query.path_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Event.path.like(f"{escaped}%", escape="\\"))
    return statement.order_by(Event.occurred_at, Event.id)


def iter_records(org_id, query, batch_rows=BATCH_ROWS):
    """Yield the matching events as dicts in time order, reading `batch_rows` at a time by keyset."""
    emails = {}
    position = None
    while True:
        statement = _statement(org_id, query).limit(batch_rows)
        if position is not None:
            statement = statement.where(tuple_(Event.occurred_at, Event.id) > position)
        # Plain rows, not ORM objects, so the session's identity map does not grow with the export.
        events = db.session.execute(statement).all()
        if not events:
            return
        unknown = {event.user_id for event in events if event.user_id and event.user_id not in emails}
        if unknown:
            emails.update(db.session.execute(select(User.id, User.email).where(User.id.in_(unknown))).all())
        for event in events:
            yield {
                "id": event.id,
                "occurred_at": isoformat(event.occurred_at),
                "type": event.type,
                "path": event.path,
                "tool": event.tool,
                "user_email": emails.get(event.user_id),
                "session": event.session,
                "source": event.source,
                "event_id": event.event_id,
                "metadata": event.meta,
            }
        position = (events[-1].occurred_at, events[-1].id)


def stream(records, export_format):
    """Yield the records encoded as `export_format`, in chunks of about one batch."""
    if export_format == "csv":
        yield from _csv_chunks(records)
    elif export_format == "json":
        yield from _json_chunks(records)
    else:
        for record in records:
            yield json.dumps(record, ensure_ascii=False) + "\n"


def _csv_chunks(records):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for count, record in enumerate(records, start=1):
        metadata = json.dumps(record["metadata"], ensure_ascii=False, sort_keys=True)
        row = [record[column] for column in COLUMNS[:-1]] + [metadata]
        writer.writerow(["" if value is None else inert_cell(value) for value in row])
        if count % BATCH_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _json_chunks(records):
    yield "["
    separator = ""
    for record in records:
        yield separator + json.dumps(record, ensure_ascii=False)
        separator = ","
    yield "]\n"
