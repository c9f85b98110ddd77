"""JSON route for the organization's plan, subscription status and usage against the limits."""

from flask import g, jsonify
from pydantic import BaseModel, Field

from app.api import bp
from app.api.auth import api_auth_required
from app.api.openapi import operation
from app.billing import limits, plans, service
from app.billing.stripe_client import is_configured
from app.orgs.access import role_required
from app.timeutil import isoformat


class UsageOut(BaseModel):
    metric: str = Field(
        description="events_per_month, workflows, runs_per_month, members, storage_bytes or api_calls_per_month."
    )
    used: int
    limit: int | None = Field(description="None means unlimited.")
    warning: bool = Field(description="True from 80 % of the limit.")


class BillingOut(BaseModel):
    plan: str = Field(description="free, pro or team.")
    billing_enabled: bool = Field(description="False where Stripe is not configured; limits are then not enforced.")
    status: str | None = Field(description="The Stripe subscription status, such as active or past_due.")
    interval: str | None
    current_period_end: str | None
    cancel_at_period_end: bool
    upgrade_url: str
    usage: list[UsageOut]


@bp.get("/billing")
@operation("Show the organization's plan, subscription and usage this month", response_model=BillingOut, tag="Billing")
@api_auth_required
@role_required("viewer")
def get_billing():
    account = service.get_account(g.org_id)
    subscription = account.subscription if account else None
    plan_key = account.plan if account else "free"
    usage = [
        UsageOut(metric=row["metric"], used=row["used"], limit=row["limit"], warning=row["warning"])
        for row in limits.usage_of(g.org_id)
    ]
    body = BillingOut(
        plan=plan_key if plan_key in plans.all_plans() else "free",
        billing_enabled=is_configured(),
        status=subscription.status if subscription else None,
        interval=subscription.interval if subscription else None,
        current_period_end=isoformat(subscription.current_period_end) if subscription else None,
        cancel_at_period_end=bool(subscription and subscription.cancel_at_period_end),
        upgrade_url=limits.upgrade_url(),
        usage=usage,
    )
    return jsonify(body.model_dump())
