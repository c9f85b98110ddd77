"""JSON route for the organization's audit log: GET /api/v1/audit, for admins and owners."""

from typing import Any

from flask import g, jsonify, request
from pydantic import BaseModel

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.audit import service
from app.errors import ValidationError
from app.orgs.access import role_required

LIST_QUERY = [
    ("action", "string", "Only entries whose action starts with this text, such as 'workflow.'."),
    ("actor", "string", "Only entries made by the user with this email (case-insensitive, exact)."),
    ("from", "string", "Only entries created at or after this date (YYYY-MM-DD, UTC) or ISO 8601 time."),
    ("to", "string", "Only entries created before the end of this date (YYYY-MM-DD, UTC) or this ISO 8601 time."),
    ("limit", "integer", "Entries per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]


class AuditEntryOut(BaseModel):
    id: int
    created_at: str
    action: str
    actor_id: int | None
    actor_email: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    ip_address: str


class AuditPage(BaseModel):
    data: list[AuditEntryOut]
    next_cursor: str | None


@bp.get("/audit")
@operation(
    "List the organization's audit entries, newest first", response_model=AuditPage, query=LIST_QUERY, tag="audit"
)
@api_auth_required
@role_required("admin")
def list_audit_entries():
    """List a page of the organization's audit entries with the filters applied; needs the admin role."""
    try:
        filters = service.parse_filters(request.args)
    except ValidationError as error:
        raise ApiError(422, "invalid_filter", error.message, error.details) from None
    limit = parse_limit()
    cursor = request.args.get("cursor")
    before_id = _cursor_id(cursor) if cursor else None

    entries, more = service.list_entries(g.org_id, filters, limit, before_id)

    next_cursor = encode_cursor([entries[-1].id]) if more and entries else None
    return jsonify({"data": [service.entry_json(entry) for entry in entries], "next_cursor": next_cursor})


def _cursor_id(cursor):
    [value] = decode_cursor(cursor, 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(
            400, "invalid_cursor", "The cursor is invalid. Use the next_cursor of a previous page, unchanged."
        )
    return value
