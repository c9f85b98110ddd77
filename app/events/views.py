"""Pages to browse events and to import a git history."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("events", __name__)


@bp.get("/events")
@login_required
def index():
    """Browse the organization's events."""
    return render_template("events/index.html")
