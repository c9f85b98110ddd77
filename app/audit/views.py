"""The organization's audit log page and its CSV and JSON exports, for admins and owners."""

from flask import Blueprint, Response, flash, render_template, request, stream_with_context, url_for
from flask_login import current_user, login_required

from app.audit import service
from app.audit.service import AuditFilters
from app.errors import ValidationError
from app.orgs.access import current_membership, role_allows, role_required
from app.orgs.service import current_org

bp = Blueprint("org_audit", __name__, url_prefix="/org/audit")

EXPORTS = {
    "csv": (service.export_csv, "text/csv"),
    "json": (service.export_json, "application/json"),
}


@bp.app_context_processor
def audit_link():
    """Let the navigation show the audit log link to admins and owners only."""

    def can_view_org_audit():
        if not current_user.is_authenticated:
            return False
        membership = current_membership()
        return membership is not None and role_allows(membership.role, "admin")

    return {"can_view_org_audit": can_view_org_audit}


@bp.get("")
@login_required
@role_required("admin")
def index():
    """List the current organization's audit entries, newest first, with filters and older pages."""
    org = current_org()
    try:
        filters = service.parse_filters(request.args)
        before_id = _before_id(request.args.get("before"))
    except ValidationError as error:
        flash(error.message, "error")
        return render_template("audit/index.html", org=org, entries=[], filters=_raw_filters(), older_url=None), 422

    entries, more = service.list_entries(org.id, filters, before_id=before_id)

    older_url = url_for("org_audit.index", before=entries[-1].id, **filters.params()) if more else None
    return render_template("audit/index.html", org=org, entries=entries, filters=filters, older_url=older_url)


@bp.get("/export.<fmt>")
@login_required
@role_required("admin")
def export(fmt):
    """Stream every entry that matches the filters as a CSV or JSON download."""
    if fmt not in EXPORTS:
        raise ValidationError(f"Unknown export format {fmt!r}; use csv or json.", {"format": "use csv or json"})
    org = current_org()
    filters = service.parse_filters(request.args)

    write, mimetype = EXPORTS[fmt]
    response = Response(stream_with_context(write(org.id, filters)), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="floyo-audit-org-{org.id}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _before_id(raw):
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise ValidationError(f"'before' must be an entry id (a whole number), got {raw!r}.", {"before": "invalid"})
    return int(raw)


def _raw_filters():
    """Return the filters as typed, so the form shows them again next to the error."""
    args = request.args
    return AuditFilters(
        action=args.get("action", ""),
        actor=args.get("actor", ""),
        raw_start=args.get("from", ""),
        raw_end=args.get("to", ""),
    )
