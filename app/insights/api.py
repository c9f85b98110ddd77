"""JSON routes for patterns, suggestions and the analysis."""

from flask import g, jsonify, request

from app.api import bp
from app.api.auth import api_auth_required
from app.api.openapi import operation
from app.api.pagination import decode_cursor, encode_cursor, parse_limit
from app.extensions import db
from app.insights import service
from app.insights.models import PATTERN_KINDS
from app.insights.schemas import (
    AnalysisRunOut,
    AnalysisStatusOut,
    PatternOut,
    PatternPage,
    SuggestionOut,
    SuggestionPage,
)
from app.insights.suggestions import SUGGESTED_KINDS, pattern_summary
from app.orgs.access import role_required
from app.timeutil import isoformat

PATTERN_QUERY = [
    ("kind", "string", f"Only patterns of this kind: {', '.join(PATTERN_KINDS)}."),
    ("include_stale", "boolean", "Also patterns the last analysis no longer found (true or false; false by default)."),
    ("limit", "integer", "Patterns per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]
SUGGESTION_QUERY = [
    ("status", "string", f"One of {', '.join(service.LIST_STATUSES)}; open by default."),
    ("kind", "string", f"Only suggestions of this kind: {', '.join(SUGGESTED_KINDS)}."),
    ("limit", "integer", "Suggestions per page, 1 to 500; 50 by default."),
    ("cursor", "string", "The next_cursor of the previous page."),
]


@bp.get("/patterns")
@operation("List patterns, strongest first", response_model=PatternPage, query=PATTERN_QUERY, tag="insights")
@api_auth_required
@role_required("viewer")
def list_patterns():
    """List the organization's patterns by score descending, then id, one page at a time."""
    kind = service.parse_kind(request.args.get("kind"))
    include_stale = _parse_flag("include_stale")
    limit = parse_limit()
    cursor = request.args.get("cursor")
    cursor_values = decode_cursor(cursor, 2) if cursor else None

    patterns, next_values = service.list_patterns(g.org_id, kind, limit, cursor_values, include_stale)

    next_cursor = encode_cursor(next_values) if next_values else None
    return jsonify({"data": [pattern_json(pattern) for pattern in patterns], "next_cursor": next_cursor})


@bp.get("/patterns/<int:pattern_id>")
@operation("Read one pattern", response_model=PatternOut, tag="insights")
@api_auth_required
@role_required("viewer")
def get_pattern(pattern_id):
    """Return one pattern of the organization; another organization's pattern is not found."""
    return jsonify(pattern_json(service.get_pattern(g.org_id, pattern_id)))


@bp.get("/suggestions")
@operation("List suggestions, best ranked first", response_model=SuggestionPage, query=SUGGESTION_QUERY, tag="insights")
@api_auth_required
@role_required("viewer")
def list_suggestions():
    """List the organization's suggestions with a status (open by default), best ranked first."""
    status = service.parse_status(request.args.get("status"))
    kind = service.parse_kind(request.args.get("kind"), SUGGESTED_KINDS)
    limit = parse_limit()
    cursor = request.args.get("cursor")
    cursor_values = decode_cursor(cursor, 2) if cursor else None

    suggestions, next_values = service.list_suggestions(g.org_id, status, kind, limit, cursor_values)

    next_cursor = encode_cursor(next_values) if next_values else None
    return jsonify({"data": [suggestion_json(suggestion) for suggestion in suggestions], "next_cursor": next_cursor})


@bp.get("/suggestions/<int:suggestion_id>")
@operation("Read one suggestion", response_model=SuggestionOut, tag="insights")
@api_auth_required
@role_required("viewer")
def get_suggestion(suggestion_id):
    """Return one suggestion of the organization; another organization's suggestion is not found."""
    return jsonify(suggestion_json(service.get_suggestion(g.org_id, suggestion_id)))


@bp.post("/suggestions/<int:suggestion_id>/accept")
@operation("Accept a suggestion", response_model=SuggestionOut, tag="insights")
@api_auth_required
@role_required("member")
def accept_suggestion(suggestion_id):
    """Mark the suggestion accepted; kinds that are accepted rank higher from now on."""
    suggestion = service.accept_suggestion(g.org_id, suggestion_id, g.user.id)
    db.session.commit()
    return jsonify(suggestion_json(suggestion))


@bp.post("/suggestions/<int:suggestion_id>/dismiss")
@operation("Dismiss a suggestion", response_model=SuggestionOut, tag="insights")
@api_auth_required
@role_required("member")
def dismiss_suggestion(suggestion_id):
    """Mark the suggestion dismissed; kinds that are dismissed rank lower from now on."""
    suggestion = service.dismiss_suggestion(g.org_id, suggestion_id, g.user.id)
    db.session.commit()
    return jsonify(suggestion_json(suggestion))


@bp.post("/analysis/run")
@operation("Queue an analysis of the organization's events", response_model=AnalysisRunOut, status=202, tag="insights")
@api_auth_required
@role_required("member")
def run_analysis():
    """Queue a full analysis; a run already queued is not queued twice."""
    enqueued = service.request_analysis(g.org_id)
    db.session.commit()
    return jsonify({"enqueued": enqueued, "status": status_json(g.org_id)}), 202


@bp.get("/analysis/status")
@operation("How the last analysis went", response_model=AnalysisStatusOut, tag="insights")
@api_auth_required
@role_required("viewer")
def analysis_status():
    """Return the organization's analysis state and its pattern and suggestion counts."""
    return jsonify(status_json(g.org_id))


def _parse_flag(name):
    raw = request.args.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise service.InvalidQuery(f"{name} must be true or false; got {raw!r}.", {"parameter": name})


def pattern_json(pattern):
    body = {
        "id": pattern.id,
        "kind": pattern.kind,
        "key": pattern.key,
        "score": pattern.score,
        "current": pattern.current,
        "summary": pattern_summary(pattern.kind, pattern.data),
        "data": pattern.data,
        "first_found_at": isoformat(pattern.first_found_at),
        "updated_at": isoformat(pattern.updated_at),
    }
    if pattern.kind == "co_used":
        body["files"] = pattern.data["files"]
        body["shared_sessions"] = pattern.data["shared_sessions"]
        body["degree"] = pattern.data["degree"]
    return body


def suggestion_json(suggestion):
    return {
        "id": suggestion.id,
        "pattern_id": suggestion.pattern_id,
        "kind": suggestion.kind,
        "title": suggestion.title,
        "status": suggestion.status,
        "evidence": suggestion.evidence,
        "minutes_saved_per_month": suggestion.minutes_saved_per_month,
        "score": suggestion.score,
        "ranked_score": suggestion.ranked_score,
        "sample_code": suggestion.sample_code,
        "workflow_draft": suggestion.workflow_draft,
        "pattern_current": suggestion.pattern.current,
        "decided_at": isoformat(suggestion.decided_at),
        "decided_by_id": suggestion.decided_by_id,
        "created_at": isoformat(suggestion.created_at),
        "updated_at": isoformat(suggestion.updated_at),
    }


def status_json(org_id):
    state = service.analysis_state(org_id)
    return {
        "status": state.status,
        "queued": state.queued,
        "requested_at": isoformat(state.requested_at),
        "started_at": isoformat(state.started_at),
        "finished_at": isoformat(state.finished_at),
        "events_analyzed": state.events_analyzed,
        "sessions_analyzed": state.sessions_analyzed,
        "error": state.error,
        "patterns": service.pattern_counts(org_id),
        "suggestions": service.suggestion_counts(org_id),
    }
