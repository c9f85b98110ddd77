"""Reading an organization's audit entries, and recording the changes made in it.

Entries are written by `app.admin.service.record` and never changed: the model raises on an
update or a delete, and nothing here or in the routes offers either.
"""

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from flask import has_request_context, request

from app.admin import service as admin_service
from app.admin.models import AuditEntry
from app.auth.models import User
from app.errors import ValidationError
from app.extensions import db
from app.timeutil import isoformat

PAGE_SIZE = 50
EXPORT_BATCH_SIZE = 500
EXPORT_FIELDS = (
    "id",
    "created_at",
    "action",
    "actor_id",
    "actor_email",
    "target_type",
    "target_id",
    "details",
    "ip_address",
)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Spreadsheet programs run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class AuditFilters:
    """The filters of a listing; empty strings and None mean no filter."""

    action: str = ""
    actor: str = ""
    start: datetime | None = None
    end: datetime | None = None
    # The from and to values as given, to refill the form and build export links.
    raw_start: str = ""
    raw_end: str = ""

    def params(self):
        """Return the filters as query parameters, as the page and the API read them."""
        values = {"action": self.action, "actor": self.actor, "from": self.raw_start, "to": self.raw_end}
        return {name: value for name, value in values.items() if value}


def record_change(action, org_id, user_id, target_type, target_id, details):
    """Add an audit entry for a change a user made in an organization; the caller commits.

    The address is the request's client address when there is a request (a page or the API) and
    empty in jobs and CLI commands.
    """
    actor = db.session.get(User, user_id) if user_id is not None else None
    ip_address = (request.remote_addr or "") if has_request_context() else ""
    return admin_service.record(
        action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        org_id=org_id,
        details=details,
        ip_address=ip_address,
    )


def record_system_change(action, org_id, target_type, target_id, details):
    """Add an audit entry for a change made without a user (Stripe, a job); the caller commits."""
    return admin_service.record(action, target_type=target_type, target_id=target_id, org_id=org_id, details=details)


def parse_filters(args):
    """Read action, actor, from and to from a mapping of query parameters; raise ValidationError if invalid.

    `from` and `to` are dates (YYYY-MM-DD, in UTC, `to` includes the whole day) or ISO 8601 times
    with an offset.
    """
    errors = {}
    action = (args.get("action") or "").strip()
    if len(action) > 64:
        errors["action"] = f"Use at most 64 characters for the action, got {len(action)}."
    actor = (args.get("actor") or "").strip().lower()
    if len(actor) > 254:
        errors["actor"] = f"Use at most 254 characters for the actor email, got {len(actor)}."

    raw_start = (args.get("from") or "").strip()
    raw_end = (args.get("to") or "").strip()
    start = _parse_time("from", raw_start, errors, end_of_day=False)
    end = _parse_time("to", raw_end, errors, end_of_day=True)
    if start is not None and end is not None and start >= end:
        errors["to"] = f"'to' ({raw_end}) must be later than 'from' ({raw_start})."

    if errors:
        summary = " ".join(errors.values())
        raise ValidationError(f"The audit log filters are invalid: {summary}", errors)
    return AuditFilters(action=action, actor=actor, start=start, end=end, raw_start=raw_start, raw_end=raw_end)


def _parse_time(name, raw, errors, end_of_day):
    """Return the UTC time a filter names; a date alone means its start, or with end_of_day the next day's start."""
    if not raw:
        return None
    if _DATE_ONLY.match(raw):
        try:
            day = datetime.strptime(raw, "%Y-%m-%d").date()
        except ValueError:
            errors[name] = f"'{name}' is not a valid date: {raw!r}. Use YYYY-MM-DD."
            return None
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        return moment + timedelta(days=1) if end_of_day else moment
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        errors[name] = f"'{name}' is not a date or time: {raw!r}. Use YYYY-MM-DD or ISO 8601 with an offset."
        return None
    if moment.tzinfo is None:
        errors[name] = f"'{name}' has no UTC offset: {raw!r}. Add one, such as 2025-02-13T09:00:00+00:00."
        return None
    return moment.astimezone(UTC)


def _select(org_id, filters):
    query = db.select(AuditEntry).where(AuditEntry.org_id == org_id)
    if filters.action:
        # A prefix such as "workflow." lists every action on workflows.
        query = query.where(AuditEntry.action.startswith(filters.action, autoescape=True))
    if filters.actor:
        query = query.where(AuditEntry.actor_email == filters.actor)
    if filters.start is not None:
        query = query.where(AuditEntry.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(AuditEntry.created_at < filters.end)
    return query


def list_entries(org_id, filters, limit=PAGE_SIZE, before_id=None):
    """Return up to `limit` of the organization's entries, newest first, and whether older ones exist.

    `before_id` continues a listing after the last entry of the previous page (keyset pagination).
    Ids grow with time, so ordering by id is ordering by creation.
    """
    query = _select(org_id, filters)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    entries = db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
    return entries[:limit], len(entries) > limit


def iter_entries(org_id, filters):
    """Yield every entry that matches, newest first, reading EXPORT_BATCH_SIZE rows at a time."""
    before_id = None
    while True:
        entries, more = list_entries(org_id, filters, EXPORT_BATCH_SIZE, before_id)
        yield from entries
        if not more:
            return
        before_id = entries[-1].id


def entry_json(entry):
    return {
        "id": entry.id,
        "created_at": isoformat(entry.created_at),
        "action": entry.action,
        "actor_id": entry.actor_id,
        "actor_email": entry.actor_email,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "details": entry.details or {},
        "ip_address": entry.ip_address,
    }


def export_csv(org_id, filters):
    """Yield the matching entries as CSV text, a header line first; details are a JSON cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for entry in iter_entries(org_id, filters):
        row = entry_json(entry)
        row["details"] = json.dumps(row["details"], sort_keys=True, ensure_ascii=False)
        writer.writerow([_csv_cell(row[field]) for field in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _csv_cell(value):
    """Quote a text cell that a spreadsheet would run as a formula by starting it with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_json(org_id, filters):
    """Yield the matching entries as one JSON array, an entry at a time."""
    yield "["
    separator = ""
    for entry in iter_entries(org_id, filters):
        yield separator + json.dumps(entry_json(entry), ensure_ascii=False)
        separator = ","
    yield "]\n"
