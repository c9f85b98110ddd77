"""The plans (Free, Pro, Team) from the BILLING_PLANS setting, and lookups by Stripe price id."""

from flask import current_app

PLAN_ORDER = ("free", "pro", "team")
LIMIT_LABELS = {
    "events_per_month": "events this month",
    "workflows": "workflows",
    "runs_per_month": "workflow runs this month",
    "members": "members",
    "storage_bytes": "file storage",
    "api_calls_per_month": "API calls this month",
}
# Subscription statuses in which the subscribed plan's limits apply. A past-due subscription keeps
# its plan while Stripe retries the payment; the owners see a banner.
ENTITLED_STATUSES = ("active", "trialing", "past_due")


def all_plans():
    return current_app.config["BILLING_PLANS"]


def get_plan(key):
    plans = all_plans()
    return plans.get(key) or plans["free"]


def limits_of(key):
    return get_plan(key)["limits"]


def plan_for_price(price_id):
    """Return (plan key, "monthly" or "yearly") for a configured Stripe price id, or (None, None)."""
    if not price_id:
        return None, None
    for key, plan in all_plans().items():
        for interval, configured in plan["prices"].items():
            if configured and configured == price_id:
                return key, interval
    return None, None


def price_for(key, interval):
    """Return the Stripe price id of a paid plan and interval, or "" when it is not configured."""
    return get_plan(key)["prices"].get(interval, "") if key in all_plans() else ""
