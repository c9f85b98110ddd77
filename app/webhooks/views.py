"""Webhook pages: incoming deliveries (history, raw payload, replay) and outgoing endpoints."""

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_login import current_user, login_required

from app.extensions import db
from app.htmx import hx_redirect, is_htmx
from app.orgs.service import current_org
from app.webhooks import service

bp = Blueprint("webhooks", __name__)


def _scope():
    """The organization whose deliveries the user may see, or None for a site admin viewing all."""
    org = current_org()
    if current_user.is_admin and request.values.get("all") == "1":
        return None
    if not (current_user.is_admin or service.is_org_admin(current_user, org.id)):
        abort(403, "Only owners and admins of the organization can see its webhook deliveries.")
    return org.id


@bp.get("/webhooks")
@login_required
def deliveries():
    """List incoming deliveries, newest first, 50 a page."""
    org_id = _scope()
    before = request.args.get("before", type=int)

    rows = service.list_deliveries(org_id, request.args.get("provider") or None, None, before, 50)

    context = {"deliveries": rows[:50], "next_before": rows[49].id if len(rows) > 50 else None, "all": org_id is None}
    if is_htmx():
        return render_template("webhooks/_deliveries.html", **context)
    return render_template("webhooks/deliveries.html", **context)


@bp.get("/webhooks/<int:delivery_id>")
@login_required
def delivery(delivery_id):
    """One delivery with its raw payload."""
    org_id = None if current_user.is_admin else _scope()
    found = service.get_delivery(delivery_id, org_id)
    return render_template("webhooks/delivery.html", delivery=found, body=found.body.decode("utf-8", "replace"))


@bp.post("/webhooks/<int:delivery_id>/replay")
@login_required
def replay(delivery_id):
    org_id = None if current_user.is_admin else _scope()

    service.replay(delivery_id, org_id)

    db.session.commit()
    flash(f"Delivery {delivery_id} is queued to be processed again.", "success")
    return hx_redirect(url_for("webhooks.delivery", delivery_id=delivery_id))
