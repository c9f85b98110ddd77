"""Pages to browse events and to import a git history."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("events", __name__)


@bp.get("/events")
@login_required
def index():
    """Browse the organization's events."""
    return render_template("events/index.html")


# The import pages register their routes on the same blueprint.
from app.events import import_views  # noqa: E402,F401
