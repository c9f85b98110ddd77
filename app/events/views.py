"""Pages to browse events and to import a git history."""

from flask import Blueprint, abort, render_template, request, url_for
from flask_login import login_required

from app.api.pagination import decode_cursor, encode_cursor
from app.errors import ServiceError
from app.events import service
from app.events.models import EVENT_TYPES
from app.htmx import is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org

bp = Blueprint("events", __name__)

PAGE_SIZE = 50
FILTER_NAMES = ("type", "tool", "path_prefix", "from", "to")


@bp.get("/events")
@login_required
@role_required("viewer")
def index():
    """Browse the organization's events, newest first, with filters and pages of PAGE_SIZE."""
    org = current_org()
    if org is None:
        abort(403)
    filter_args = {name: request.args[name] for name in FILTER_NAMES if request.args.get(name)}
    cursor = request.args.get("cursor") or None

    events, next_values, error = [], None, None
    try:
        # The page's date inputs carry no zone; like every time on the page, they are UTC.
        filters = service.parse_filters(filter_args, assume_utc=True)
        cursor_values = decode_cursor(cursor, 2) if cursor else None
        events, next_values = service.list_events(org.id, filters, PAGE_SIZE, cursor_values)
    except ServiceError as problem:
        filters, error = {}, problem.message

    context = {
        "events": events,
        "error": error,
        "filtered": bool(filter_args),
        "event_types": EVENT_TYPES,
        "form": _form_values(filter_args, filters),
        "newest_url": url_for("events.index", **filter_args) if cursor else None,
        "older_url": url_for("events.index", **filter_args, cursor=encode_cursor(next_values)) if next_values else None,
    }
    # htmx does not swap 4xx responses, so a fragment with the message goes out as 200.
    # A history restore (the Back button after hx-push-url) needs the whole page.
    if is_htmx() and not request.headers.get("HX-History-Restore-Request"):
        return render_template("events/_table.html", **context)
    return render_template("events/index.html", **context), 400 if error else 200


def _form_values(filter_args, filters):
    """Return the filter form's values; parsed times are shown as UTC in the format of datetime-local inputs."""
    values = dict(filter_args)
    for name in ("from", "to"):
        if filters.get(name):
            values[name] = filters[name].strftime("%Y-%m-%dT%H:%M:%S")
    return values


# The import pages register their routes on the same blueprint.
from app.events import import_views  # noqa: E402,F401
