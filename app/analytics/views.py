"""The analytics page: charts for a date range and filters, kept in the URL and updated by HTMX."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.analytics import export, service
from app.analytics.jobs import EXPORT_STATUS_SECONDS, export_job_id, export_job_status, export_to_files_job
from app.analytics.query import RANGE_PRESETS, parse_query
from app.errors import ValidationError
from app.events.models import EVENT_TYPES
from app.extensions import db
from app.htmx import is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org
from app.queue import enqueue_after_commit
from app.security import allow_inline_styles

bp = Blueprint("analytics", __name__)


@bp.get("/analytics")
@login_required
@role_required("viewer")
@allow_inline_styles
def index():
    """Charts of the organization's activity; HTMX requests get the charts fragment only."""
    org = current_org()
    query = parse_query(request.args, org.id)

    page = service.build_page(org.id, query)
    dashboard = page["dashboard"]
    context = {
        "query": query,
        "dashboard": dashboard,
        "has_events": page["has_events"],
        "trends": service.compare(dashboard["summary"], page["previous"]),
        "figures": page["charts"],
        "members": service.members(org.id),
        "event_types": EVENT_TYPES,
        "presets": RANGE_PRESETS,
    }
    if is_htmx():
        return render_template("analytics/_charts.html", **context)
    return render_template("analytics/index.html", **context)


@bp.post("/analytics/export")
@login_required
@role_required("member")
def export_to_files():
    """Start an export job that leaves its file in the file manager's Exports folder."""
    org = current_org()
    export_format = request.form.get("format", "csv")
    if export_format not in export.FORMATS:
        raise ValidationError(f"format must be csv, json or ndjson, got {export_format!r}.", {"format": "unknown"})
    query = parse_query(request.form, org.id)

    # The job gets the resolved days, so a "last 7 days" export means the same days when it runs.
    args = query.params(range="custom", **{"from": query.start.isoformat(), "to": query.end.isoformat()})
    job_id = export_job_id(org.id)
    enqueue_after_commit(
        export_to_files_job,
        org.id,
        current_user.id,
        args,
        export_format,
        job_id=job_id,
        result_ttl=EXPORT_STATUS_SECONDS,
    )
    db.session.commit()
    flash("The export is being prepared. It will appear in Files, in the Exports folder.", "success")
    return redirect(url_for("analytics.export_status", job_id=job_id))


@bp.get("/analytics/exports/<job_id>")
@login_required
@role_required("viewer")
def export_status(job_id):
    """The state of an export job; the fragment polls itself until the job has finished or failed."""
    status = export_job_status(current_org().id, job_id)

    if is_htmx():
        return render_template("analytics/_export_status.html", export=status)
    return render_template("analytics/export_status.html", export=status)
