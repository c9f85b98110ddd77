"""The dashboard, and pages for patterns and suggestions."""

from flask import Blueprint, abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.api.pagination import decode_cursor, encode_cursor
from app.auth.views import safe_next
from app.errors import ServiceError
from app.events import service as events_service
from app.extensions import db
from app.htmx import hx_trigger, is_htmx
from app.insights import service
from app.insights.dashboard import KIND_TITLES, activity_summary
from app.insights.models import PATTERN_KINDS
from app.orgs.access import role_required
from app.orgs.service import current_org

bp = Blueprint("insights", __name__)

PAGE_SIZE = 25
DASHBOARD_SECTIONS = ("activity", "recent-events", "patterns", "suggestions")


@bp.app_context_processor
def pattern_kind_titles():
    """Give every page the same heading for each pattern kind."""
    return {"kind_titles": KIND_TITLES}


def _org_id():
    org = current_org()
    if org is None:
        abort(403)
    return org.id


@bp.get("/")
@login_required
@role_required("viewer")
def dashboard():
    """Activity summary, recent events, the strongest patterns and the top suggestions."""
    org_id = _org_id()
    context = {section.replace("-", "_"): _section_context(section, org_id) for section in DASHBOARD_SECTIONS}
    return render_template("insights/dashboard.html", **_merge(context))


@bp.get("/dashboard/<section>")
@login_required
@role_required("viewer")
def dashboard_section(section):
    """Render one dashboard section as a fragment, for HTMX to refresh in place."""
    if section not in DASHBOARD_SECTIONS:
        abort(404)
    context = _section_context(section, _org_id())

    response = make_response(render_template(f"insights/_{section.replace('-', '_')}.html", **context))
    # Only a pending analysis makes the activity section poll. A response without one means the
    # analysis has just ended, so the other sections reload on this event.
    if section == "activity" and not context["summary"]["analysis_pending"]:
        hx_trigger(response, "analysis-finished")
    return response


def _section_context(section, org_id):
    if section == "activity":
        return {"summary": activity_summary(org_id)}
    if section == "recent-events":
        return {"recent_events": events_service.list_events(org_id, {}, 8)[0]}
    if section == "patterns":
        strongest = service.strongest_patterns(org_id, per_kind=3)
        ordered = {kind: strongest[kind] for kind in KIND_TITLES if strongest.get(kind)}
        return {"strongest": ordered}
    return {"suggestions": service.top_suggestions(org_id, limit=5), "next": url_for("insights.dashboard")}


def _merge(context):
    merged = {}
    for values in context.values():
        merged.update(values)
    return merged


@bp.get("/patterns")
@login_required
@role_required("viewer")
def patterns():
    """Patterns of one kind or all, strongest first, a page at a time."""
    org_id = _org_id()
    error, found, next_values, kind = None, [], None, None
    try:
        kind = service.parse_kind(request.args.get("kind"))
        cursor = request.args.get("cursor")
        cursor_values = decode_cursor(cursor, 2) if cursor else None
        found, next_values = service.list_patterns(org_id, kind=kind, limit=PAGE_SIZE, cursor_values=cursor_values)
    except ServiceError as problem:
        error = problem.message

    older_url = url_for("insights.patterns", kind=kind, cursor=encode_cursor(next_values)) if next_values else None
    context = {
        "patterns": found,
        "kind": kind,
        "kinds": PATTERN_KINDS,
        "counts": service.pattern_counts(org_id),
        "error": error,
        "next_url": older_url,
        "first_url": url_for("insights.patterns", kind=kind) if request.args.get("cursor") else None,
    }
    if is_htmx() and not request.headers.get("HX-History-Restore-Request"):
        return render_template("insights/_pattern_list.html", **context)
    return render_template("insights/patterns.html", **context), 400 if error else 200


@bp.get("/patterns/<int:pattern_id>")
@login_required
@role_required("viewer")
def pattern(pattern_id):
    """Show one pattern with all its numbers, and its suggestion if it has one."""
    org_id = _org_id()
    found = service.get_pattern(org_id, pattern_id)
    suggestion = service.suggestion_for_pattern(org_id, pattern_id)
    return render_template("insights/pattern.html", pattern=found, suggestion=suggestion)


@bp.get("/suggestions")
@login_required
@role_required("viewer")
def suggestions():
    """Suggestions ranked by their evidence and by what the organization accepted and dismissed."""
    org_id = _org_id()
    error, found, next_values, status = None, [], None, "open"
    try:
        status = service.parse_status(request.args.get("status"))
        cursor = request.args.get("cursor")
        cursor_values = decode_cursor(cursor, 2) if cursor else None
        found, next_values = service.list_suggestions(org_id, status, limit=PAGE_SIZE, cursor_values=cursor_values)
    except ServiceError as problem:
        error = problem.message

    context = {
        "suggestions": found,
        "status": status,
        "counts": service.suggestion_counts(org_id),
        "error": error,
        "next": request.full_path.rstrip("?"),
        "next_url": url_for("insights.suggestions", status=status, cursor=encode_cursor(next_values))
        if next_values
        else None,
        "first_url": url_for("insights.suggestions", status=status) if request.args.get("cursor") else None,
    }
    if is_htmx() and not request.headers.get("HX-History-Restore-Request"):
        return render_template("insights/_suggestion_list.html", **context)
    return render_template("insights/suggestions.html", **context), 400 if error else 200


@bp.get("/suggestions/<int:suggestion_id>")
@login_required
@role_required("viewer")
def suggestion(suggestion_id):
    """Show a suggestion with its evidence, sample code and workflow draft."""
    org_id = _org_id()
    found = service.get_suggestion(org_id, suggestion_id)
    return render_template("insights/suggestion.html", suggestion=found)


@bp.post("/suggestions/<int:suggestion_id>/accept")
@login_required
@role_required("member")
def accept(suggestion_id):
    """Accept a suggestion: the card is swapped in place for HTMX, the page reloads otherwise."""
    return _decide(suggestion_id, service.accept_suggestion, "Suggestion accepted.")


@bp.post("/suggestions/<int:suggestion_id>/dismiss")
@login_required
@role_required("member")
def dismiss(suggestion_id):
    """Dismiss a suggestion; suggestions of this kind rank lower from now on."""
    return _decide(suggestion_id, service.dismiss_suggestion, "Suggestion dismissed.")


def _decide(suggestion_id, decide, message):
    org_id = _org_id()

    decided = decide(org_id, suggestion_id, current_user.id)
    db.session.commit()

    if is_htmx():
        return render_template("insights/_suggestion_card.html", suggestion=decided, next=request.form.get("next"))
    flash(message, "success")
    return redirect(safe_next(request.form.get("next")) or url_for("insights.suggestion", suggestion_id=suggestion_id))
