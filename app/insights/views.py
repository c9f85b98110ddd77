"""The dashboard, and pages for patterns and suggestions."""

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("insights", __name__)


@bp.get("/")
@login_required
def dashboard():
    """Activity summary, recent events, the strongest patterns and the top suggestions."""
    return render_template("insights/dashboard.html")
