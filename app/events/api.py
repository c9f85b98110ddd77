"""JSON routes for events: record one or a batch, list with filters, read one."""

import json

from flask import current_app, g, request, url_for
from pydantic import ValidationError as PydanticValidationError

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.events import service
from app.events.schemas import (
    CLIENT_SOURCES,
    BatchResponse,
    EventBatchIn,
    EventIn,
    EventOut,
    EventPage,
    describe_errors,
    json_type_name,
    summarize,
)
from app.extensions import db
from app.orgs.access import role_required
from app.timeutil import isoformat

LIST_QUERY = [
    ("type", "string", "Only events of this type."),
    ("tool", "string", "Only events of this tool (exact match)."),
    ("path_prefix", "string", "Only events whose path starts with this text (case-sensitive)."),
    ("from", "string", "Only events that occurred at or after this ISO 8601 time with an offset."),
    ("to", "string", "Only events that occurred at or before this ISO 8601 time with an offset."),
    ("limit", "integer", "Events per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]


@bp.post("/events")
@operation("Record one event", request_model=EventIn, response_model=EventOut, status=201, tag="events")
@api_auth_required
@role_required("member")
def create_event():
    """Store one event: 201 with its Location, or 200 with the stored event when its event_id was seen before."""
    body = _json_object(request.get_data())
    try:
        event = EventIn.model_validate(body, context=_validation_context())
    except PydanticValidationError as error:
        details = describe_errors(error)
        raise ApiError(422, "invalid_event", f"The event is invalid: {summarize(details)}.", details) from None

    [(status, event_pk)] = service.insert_events(g.org_id, g.user.id, "api", [event.values("api")])
    db.session.commit()

    stored = service.get_event(g.org_id, event_pk)
    if status == "duplicate":
        return _json_response(_event_json(stored), 200)
    return _json_response(_event_json(stored), 201, {"Location": url_for("api.get_event", event_pk=event_pk)})


@bp.post("/events/batch")
@operation(
    "Record a batch of events; the answer reports each item as accepted, duplicate or rejected",
    request_model=EventBatchIn,
    response_model=BatchResponse,
    tag="events",
)
@api_auth_required
@role_required("member")
def create_event_batch():
    """Store the valid items of a batch and report on every item: 200 if any was stored or known, else 422."""
    data = _batch_body()
    events, source = _batch_items(_json_object(data))

    context = _validation_context()
    results = [None] * len(events)
    valid = []
    for index, item in enumerate(events):
        try:
            valid.append((index, EventIn.model_validate(item, context=context).values(source)))
        except PydanticValidationError as error:
            results[index] = {"index": index, "status": "rejected", "errors": describe_errors(error)}

    if valid:
        stored = service.insert_events(g.org_id, g.user.id, source, [values for _, values in valid])
        db.session.commit()
        for (index, _), (status, event_pk) in zip(valid, stored, strict=True):
            results[index] = {"index": index, "status": status, "id": event_pk}

    accepted = sum(1 for result in results if result["status"] == "accepted")
    rejected = len(results) - len(valid)
    body = {"accepted": accepted, "duplicates": len(valid) - accepted, "rejected": rejected, "results": results}
    if valid:
        return _json_response(body, 200)
    body["error"] = {
        "code": "invalid_events",
        "message": "Every event in the batch was rejected; each item of results says why.",
        "details": None,
    }
    return _json_response(body, 422)


@bp.get("/events")
@operation("List events, newest first", response_model=EventPage, query=LIST_QUERY, tag="events")
@api_auth_required
@role_required("viewer")
def list_events():
    """List a page of the organization's events with the filters applied, and the cursor of the next page."""
    filters = service.parse_filters(request.args)
    limit = parse_limit()
    cursor = request.args.get("cursor")
    cursor_values = decode_cursor(cursor, 2) if cursor else None

    events, next_values = service.list_events(g.org_id, filters, limit, cursor_values)

    next_cursor = encode_cursor(next_values) if next_values else None
    return _json_response({"data": [_event_json(event) for event in events], "next_cursor": next_cursor}, 200)


@bp.get("/events/<int:event_pk>")
@operation("Read one event", response_model=EventOut, tag="events")
@api_auth_required
@role_required("viewer")
def get_event(event_pk):
    """Return one event of the organization; another organization's event is not found (404)."""
    return _json_response(_event_json(service.get_event(g.org_id, event_pk)), 200)


def _validation_context():
    config = current_app.config
    return {"max_depth": config["EVENT_METADATA_MAX_DEPTH"], "max_bytes": config["EVENT_METADATA_MAX_BYTES"]}


def _batch_body():
    """Read the batch body, rejecting one over EVENTS_BATCH_MAX_BYTES before parsing it."""
    max_bytes = current_app.config["EVENTS_BATCH_MAX_BYTES"]
    too_large = ApiError(
        413,
        "batch_too_large",
        f"The batch is larger than the limit of {max_bytes} bytes (EVENTS_BATCH_MAX_BYTES). "
        "Send fewer events per batch.",
        {"max_bytes": max_bytes},
    )
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    data = request.get_data()
    if len(data) > max_bytes:
        raise too_large
    return data


def _batch_items(body):
    """Check the batch envelope; return its list of raw items and the source for items that name none."""
    unknown = sorted(set(body) - {"events", "source"})
    if unknown:
        raise ApiError(
            422,
            "invalid_batch",
            f"Unknown field {unknown[0]!r} in the batch; a batch has only 'events' and 'source'.",
            [{"field": name, "message": "not a field of a batch"} for name in unknown],
        )

    source = body.get("source", "api")
    if source is None:
        source = "api"
    if source not in CLIENT_SOURCES:
        raise ApiError(
            422,
            "invalid_batch",
            f"source must be one of {', '.join(CLIENT_SOURCES)}; got {source!r}.",
            [{"field": "source", "message": "must be 'api' or 'agent'"}],
        )

    events = body.get("events")
    max_events = current_app.config["EVENTS_BATCH_MAX_EVENTS"]
    if not isinstance(events, list):
        found = "is missing" if events is None else f"is {json_type_name(events)}"
        raise ApiError(
            422,
            "invalid_batch",
            f"events {found}; send a list of 1 to {max_events} events as 'events'.",
            [{"field": "events", "message": "must be a list of events"}],
        )
    if not events:
        raise ApiError(
            422,
            "empty_batch",
            f"The batch has no events; send 1 to {max_events} events as 'events'.",
            [{"field": "events", "message": "must not be empty"}],
        )
    if len(events) > max_events:
        raise ApiError(
            413,
            "batch_too_large",
            f"The batch has {len(events)} events; the limit is {max_events} (EVENTS_BATCH_MAX_EVENTS). "
            "Split it into smaller batches.",
            {"max_events": max_events},
        )
    return events, source


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _json_object(data):
    """Parse a request body that must be a JSON object, or raise a 400 that names the problem."""
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        reason = "it is empty" if not data.strip() else str(error)
        raise ApiError(
            400,
            "invalid_json",
            f"The request body is not valid JSON ({reason}). Send a JSON object with Content-Type: application/json.",
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", f"The request body must be a JSON object, not {json_type_name(body)}.")
    return body


def _event_json(event):
    return {
        "id": event.id,
        "type": event.type,
        "path": event.path,
        "tool": event.tool,
        "occurred_at": isoformat(event.occurred_at),
        "session": event.session,
        "event_id": event.event_id,
        "metadata": event.meta,
        "source": event.source,
        "received_at": isoformat(event.received_at),
        "user_id": event.user_id,
    }


def _json_response(body, status, headers=None):
    # json.dumps rather than jsonify: Flask's provider sorts keys, which is slow for batch responses.
    return current_app.response_class(
        json.dumps(body, separators=(",", ":")), status=status, headers=headers, mimetype="application/json"
    )
