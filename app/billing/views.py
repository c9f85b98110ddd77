"""The billing page: plan, status, usage against the limits, invoices; Checkout and the customer portal."""

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.billing import limits, plans, service
from app.billing.stripe_client import is_configured
from app.errors import ServiceError
from app.extensions import db
from app.htmx import hx_redirect
from app.orgs.access import role_required
from app.orgs.service import current_org

bp = Blueprint("billing", __name__)


@bp.get("/billing")
@login_required
@role_required("viewer")
def index():
    """Show the organization's plan, usage and invoices to its members."""
    org = current_org()
    service.require_member(org.id, current_user.id)

    account = service.get_account(org.id)
    return render_template(
        "billing/index.html",
        org=org,
        configured=is_configured(),
        account=account,
        plan_key=account.plan if account else "free",
        plans=plans.all_plans(),
        plan_order=plans.PLAN_ORDER,
        subscription=account.subscription if account else None,
        usage=limits.usage_of(org.id),
        invoices=service.recent_invoices(org.id),
        is_owner=service.role_in(org.id, current_user.id) == "owner",
        checkout_state=request.args.get("checkout"),
    )


@bp.post("/billing/checkout")
@login_required
@role_required("owner")
def checkout():
    """Send an owner to Stripe Checkout for the chosen plan and interval."""
    org = current_org()
    plan_key = request.form.get("plan", "")
    interval = request.form.get("interval", "monthly")

    try:
        url = service.start_checkout(
            org,
            current_user,
            plan_key,
            interval,
            success_url=url_for("billing.index", checkout="done", _external=True),
            cancel_url=url_for("billing.index", checkout="cancelled", _external=True),
        )
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return hx_redirect(url_for("billing.index"))

    db.session.commit()
    return redirect(url, code=303)


@bp.post("/billing/portal")
@login_required
@role_required("owner")
def portal():
    """Send an owner to the Stripe customer portal (payment methods, invoices, cancellation)."""
    org = current_org()

    try:
        url = service.open_portal(org, current_user, url_for("billing.index", _external=True))
    except ServiceError as error:
        flash(error.message, "error")
        return hx_redirect(url_for("billing.index"))

    return redirect(url, code=303)


@bp.app_context_processor
def billing_banner():
    """Give templates `billing_past_due()`: true for an owner whose organization's payment failed."""

    def billing_past_due():
        org = current_org()
        membership = g.get("membership")
        if org is None or membership is None or membership.role != "owner":
            return False
        # The account came with the memberships (`memberships_of`), so this costs no query.
        return service.account_is_past_due(org.billing_account)

    return {"billing_past_due": billing_past_due}
