"""JSON routes of analytics: the dashboard's numbers, trends and the event export."""

from flask import Response, g, jsonify, request, stream_with_context
from pydantic import BaseModel

from app.analytics import export, service
from app.analytics.query import parse_query
from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.orgs.access import role_required

QUERY_PARAMETERS = [
    ("range", "string", "7, 30 or 90 (the last days up to today), or custom with from and to. Default 30."),
    ("from", "string", "First day of a custom range, YYYY-MM-DD, included."),
    ("to", "string", "Last day of a custom range, YYYY-MM-DD, included."),
    ("tz", "string", "IANA time zone the days are counted in, such as Europe/Berlin. Default UTC."),
    ("granularity", "string", "day or week (weeks start on Monday). Default day."),
    ("tool", "string", "Only events of this tool."),
    ("type", "string", "Only events of this type."),
    ("path", "string", "Only events whose path starts with this prefix."),
    ("member", "integer", "Only events of this member (a user id)."),
]


class TrendFigure(BaseModel):
    name: str
    current: float | None
    previous: float | None
    change: float | None
    change_percent: float | None


class TrendsResponse(BaseModel):
    query: dict
    previous: dict
    figures: list[TrendFigure]


class DashboardResponse(BaseModel):
    query: dict
    summary: dict
    activity: dict
    heatmap: dict
    types: list[dict]
    top_files: list[dict]
    top_file_types: list[dict]
    top_tools: list[dict]
    top_members: list[dict]
    sessions: dict
    workflow_runs: dict
    suggestions: dict


@bp.get("/analytics/dashboard")
@operation(
    "Every figure of the analytics page for a date range and filters",
    response_model=DashboardResponse,
    query=QUERY_PARAMETERS,
    tag="analytics",
)
@api_auth_required
@role_required("viewer")
def analytics_dashboard():
    """The same numbers the analytics page shows."""
    query = parse_query(request.args, g.org_id)
    return jsonify(service.build_dashboard(g.org_id, query))


@bp.get("/analytics/trends")
@operation(
    "Headline figures against the previous period of the same length",
    response_model=TrendsResponse,
    query=QUERY_PARAMETERS,
    tag="analytics",
)
@api_auth_required
@role_required("viewer")
def analytics_trends():
    """Each headline figure now and in the period before, with the change."""
    query = parse_query(request.args, g.org_id)
    return jsonify(service.build_trends(g.org_id, query))


@bp.get("/analytics/export")
@operation(
    "Export the matching events as CSV, JSON or NDJSON (streamed, as an attachment)",
    query=[("format", "string", "csv (default), json or ndjson.")] + QUERY_PARAMETERS,
    tag="analytics",
)
@api_auth_required
@role_required("viewer")
def analytics_export():
    """Stream the events of the range; CSV cells that would run as formulas are made inert."""
    export_format = (request.args.get("format") or "csv").lower()
    if export_format not in export.FORMATS:
        raise ApiError(
            400, "invalid_format", f"format must be csv, json or ndjson, got {request.args.get('format')!r}."
        )
    query = parse_query(request.args, g.org_id)

    chunks = export.stream(export.iter_records(g.org_id, query), export_format)
    response = Response(stream_with_context(chunks), mimetype=export.FORMATS[export_format].split(";")[0])
    if export_format == "csv":
        response.headers["Content-Type"] = export.FORMATS["csv"]
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename(query, export_format)}"'
    response.headers["Cache-Control"] = "no-store"
    return response
