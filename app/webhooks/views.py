"""Webhook pages: incoming deliveries (history, raw payload, replay) and outgoing endpoints."""

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_login import current_user, login_required

from app.errors import ServiceError
from app.extensions import db
from app.htmx import hx_redirect, is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org
from app.webhooks import outgoing, service

bp = Blueprint("webhooks", __name__)


def _scope():
    """Return the id of the organization whose deliveries the user may see, or None for a site admin viewing all."""
    org = current_org()
    if current_user.is_admin and request.values.get("all") == "1":
        return None
    if not (current_user.is_admin or service.is_org_admin(current_user, org.id)):
        abort(403, "Only owners and admins of the organization can see its webhook deliveries.")
    return org.id


@bp.get("/webhooks")
@login_required
@role_required("admin")
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
@role_required("admin")
def delivery(delivery_id):
    """Show one delivery with its raw payload."""
    org_id = None if current_user.is_admin else _scope()
    found = service.get_delivery(delivery_id, org_id)
    return render_template("webhooks/delivery.html", delivery=found, body=found.body.decode("utf-8", "replace"))


@bp.post("/webhooks/<int:delivery_id>/replay")
@login_required
@role_required("admin")
def replay(delivery_id):
    org_id = None if current_user.is_admin else _scope()

    service.replay(delivery_id, org_id)

    db.session.commit()
    flash(f"Delivery {delivery_id} is queued to be processed again.", "success")
    return hx_redirect(url_for("webhooks.delivery", delivery_id=delivery_id))


def _org_admin():
    org = current_org()
    if not (current_user.is_admin or service.is_org_admin(current_user, org.id)):
        abort(403, "Only owners and admins of the organization can manage its webhooks.")
    return org


@bp.get("/webhooks/endpoints")
@login_required
@role_required("admin")
def endpoints():
    """List the organization's outgoing endpoints, each with its latest deliveries."""
    org = _org_admin()
    rows = outgoing.list_endpoints(org.id)
    deliveries = {endpoint.id: outgoing.list_deliveries(org.id, endpoint.id, limit=10) for endpoint in rows}
    return render_template(
        "webhooks/endpoints.html", endpoints=rows, deliveries=deliveries, event_types=outgoing.EVENT_TYPES
    )


@bp.post("/webhooks/endpoints")
@login_required
@role_required("admin")
def create_endpoint():
    """Register an endpoint and show its secret, this once."""
    org = _org_admin()

    try:
        endpoint, secret = outgoing.create_endpoint(org.id, request.form.get("url", ""), request.form.getlist("events"))
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return hx_redirect(url_for("webhooks.endpoints"))

    db.session.commit()
    return render_template("webhooks/endpoint_created.html", endpoint=endpoint, secret=secret), 201


@bp.post("/webhooks/endpoints/<int:endpoint_id>/delete")
@login_required
@role_required("admin")
def delete_endpoint(endpoint_id):
    org = _org_admin()
    outgoing.delete_endpoint(org.id, endpoint_id)
    db.session.commit()
    flash("The endpoint was deleted.", "success")
    return hx_redirect(url_for("webhooks.endpoints"))


@bp.post("/webhooks/endpoints/<int:endpoint_id>/enable")
@login_required
@role_required("admin")
def enable_endpoint(endpoint_id):
    org = _org_admin()
    outgoing.enable_endpoint(org.id, endpoint_id)
    db.session.commit()
    flash("The endpoint is enabled again.", "success")
    return hx_redirect(url_for("webhooks.endpoints"))


@bp.post("/webhooks/outgoing/<int:delivery_id>/resend")
@login_required
@role_required("admin")
def resend(delivery_id):
    org = _org_admin()
    outgoing.resend(org.id, delivery_id)
    db.session.commit()
    flash(f"Delivery {delivery_id} is queued to be sent again.", "success")
    return hx_redirect(url_for("webhooks.endpoints"))
