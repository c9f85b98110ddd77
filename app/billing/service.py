"""Billing: plans in force, Stripe Checkout and the customer portal, and Stripe's events applied.

Stripe events are applied in the webhook job (app.webhooks.service). Every handler is idempotent
and compares the event's `created` with the one stored on the row, so a retried or late event
never overwrites newer state. Handlers use only the event payload and never call Stripe, so a
worker needs no Stripe key.
"""

import logging
from datetime import UTC, datetime

from app.audit.service import record_change, record_system_change
from app.billing import plans
from app.billing.models import BillingAccount, Invoice, Subscription
from app.billing.stripe_client import call, client
from app.errors import NotFound, ServiceError, ValidationError
from app.extensions import db
from app.orgs.models import Membership, Organization
from app.timeutil import isoformat, utcnow
from app.webhooks import outgoing

logger = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
)
STRIPE_INTERVALS = {"month": "monthly", "year": "yearly"}
# Within one second (the resolution of `created`) the later step of a subscription's life wins.
_EVENT_RANK = {"customer.subscription.created": 0, "customer.subscription.deleted": 2}


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class UnknownCustomer(Exception):
    """A Stripe event for a customer this server has not linked to an organization (yet)."""


def role_in(org_id, user_id):
    return db.session.scalar(
        db.select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )


def require_member(org_id, user_id):
    if role_in(org_id, user_id) is None:
        raise Forbidden("Only members of this organization can see its billing.")


def require_owner(org_id, user_id):
    if role_in(org_id, user_id) != "owner":
        raise Forbidden("Only an owner of this organization can change its plan.")


def get_account(org_id, create=False):
    account = db.session.get(BillingAccount, org_id)
    if account is None and create:
        account = BillingAccount(org_id=org_id, plan="free")
        db.session.add(account)
        db.session.flush()
    return account


def current_plan(org_id):
    """Return the key of the plan whose limits apply to the organization ("free" without an account)."""
    plan = db.session.scalar(db.select(BillingAccount.plan).where(BillingAccount.org_id == org_id))
    return plan or "free"


def has_paid_subscription(org_id):
    """Return whether a subscription of the organization is still charged (active, trialing or past due)."""
    from app.billing.plans import ENTITLED_STATUSES

    return bool(
        db.session.scalar(
            db.select(db.func.count())
            .select_from(Subscription)
            .where(Subscription.org_id == org_id, Subscription.status.in_(ENTITLED_STATUSES))
        )
    )


def is_past_due(org_id):
    return account_is_past_due(get_account(org_id))


def account_is_past_due(account):
    return bool(account and account.subscription and account.subscription.status in ("past_due", "unpaid"))


def recent_invoices(org_id, limit=10):
    return db.session.scalars(
        db.select(Invoice).where(Invoice.org_id == org_id).order_by(Invoice.id.desc()).limit(limit)
    ).all()


def ensure_customer(org):
    """Return the organization's Stripe customer id, creating the customer on first use (then kept and reused)."""
    account = get_account(org.id, create=True)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = call(
        "create the customer",
        client().v1.customers.create,
        params={"name": org.name, "metadata": {"org_id": str(org.id)}},
        options={"idempotency_key": f"floyo-customer-org-{org.id}"},
    )
    account.stripe_customer_id = customer.id
    account.updated_at = utcnow()
    logger.info("stripe customer created org=%s customer=%s", org.id, customer.id)
    return customer.id


def start_checkout(org, user, plan_key, interval, success_url, cancel_url):
    """Create a Stripe Checkout session for a paid plan; return its URL. The caller commits."""
    require_owner(org.id, user.id)
    stripe = client()

    if plan_key not in ("pro", "team"):
        raise ValidationError(f"Unknown plan {plan_key!r}; choose pro or team.", {"plan": "use pro or team"})
    if interval not in ("monthly", "yearly"):
        raise ValidationError(f"Unknown interval {interval!r}; choose monthly or yearly.", {"interval": "invalid"})
    price = plans.price_for(plan_key, interval)
    if not price:
        raise ValidationError(
            f"The {plan_key} plan has no {interval} price set up here (STRIPE_PRICE_{plan_key.upper()}_"
            f"{interval.upper()}). Choose another or ask the operator.",
            {"interval": "no price configured"},
        )

    customer_id = ensure_customer(org)
    metadata = {"org_id": str(org.id), "plan": plan_key}
    session = call(
        "start the checkout",
        stripe.v1.checkout.sessions.create,
        params={
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": str(org.id),
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        },
    )
    details = {"plan": plan_key, "interval": interval}
    record_change("billing.checkout_started", org.id, user.id, "organization", org.id, details)
    logger.info("checkout started org=%s user=%s plan=%s session=%s", org.id, user.id, plan_key, session.id)
    return session.url


def open_portal(org, user, return_url):
    """Create a customer portal session (payment methods, invoices, cancellation); return its URL."""
    require_owner(org.id, user.id)
    stripe = client()
    account = get_account(org.id)
    if account is None or not account.stripe_customer_id:
        raise ValidationError("This organization has no Stripe customer yet; choose a paid plan first.")
    session = call(
        "open the customer portal",
        stripe.v1.billing_portal.sessions.create,
        params={"customer": account.stripe_customer_id, "return_url": return_url},
    )
    return session.url


# Stripe events


def _timestamp(value):
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _org_for_customer(customer_id, metadata=None, reference=None):
    """Return the organization of a Stripe customer, linking an unknown one through Floyo's own metadata."""
    if customer_id:
        org_id = db.session.scalar(
            db.select(BillingAccount.org_id).where(BillingAccount.stripe_customer_id == customer_id)
        )
        if org_id is not None:
            return org_id
    claimed = reference or (metadata or {}).get("org_id")
    if claimed and str(claimed).isdigit() and db.session.get(Organization, int(claimed)) is not None:
        account = get_account(int(claimed), create=True)
        if customer_id and not account.stripe_customer_id:
            account.stripe_customer_id = customer_id
        return account.org_id
    raise UnknownCustomer(f"Stripe customer {customer_id} is not linked to an organization here")


def apply_stripe_event(event):
    """Apply one Stripe event; return (handled, org_id). Types not handled return (False, None)."""
    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    created = int(event.get("created") or 0)
    if event_type == "checkout.session.completed":
        return True, _checkout_completed(obj)
    if event_type in SUBSCRIPTION_EVENTS:
        return True, _subscription_changed(obj, event_type, created)
    if event_type in ("invoice.paid", "invoice.payment_failed"):
        return True, _invoice_changed(obj, event_type, created)
    return False, None


def _checkout_completed(session):
    org_id = _org_for_customer(session.get("customer"), session.get("metadata"), session.get("client_reference_id"))
    subscription_id = session.get("subscription")
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id")
    subscription = _find_subscription(subscription_id)
    if subscription is not None:
        _update_account_plan(subscription)
    logger.info("checkout completed org=%s session=%s subscription=%s", org_id, session.get("id"), subscription_id)
    return org_id


def _find_subscription(stripe_id):
    if not stripe_id:
        return None
    return db.session.scalar(db.select(Subscription).where(Subscription.stripe_id == stripe_id))


def _is_stale(row, created, event_type):
    if created != row.event_created:
        return created < row.event_created
    return _EVENT_RANK.get(event_type, 1) < _EVENT_RANK.get(row.event_type, 1)


def _subscription_changed(obj, event_type, created):
    org_id = _org_for_customer(obj.get("customer"), obj.get("metadata"))
    subscription = _find_subscription(obj["id"])
    created_here = subscription is None
    if subscription is None:
        subscription = Subscription(
            org_id=org_id,
            stripe_id=obj["id"],
            stripe_customer_id=obj.get("customer") or "",
            event_created=-1,
            event_type="",
            trial_ending_notified=False,
        )
        db.session.add(subscription)
    elif _is_stale(subscription, created, event_type):
        logger.info(
            "stale subscription event skipped subscription=%s event_created=%s stored=%s",
            subscription.stripe_id,
            created,
            subscription.event_created,
        )
        return subscription.org_id

    items = (obj.get("items") or {}).get("data") or []
    price_id = (items[0].get("price") or {}).get("id") if items else None
    plan_key, interval = plans.plan_for_price(price_id)
    if plan_key is None:
        # A price not configured here: the plan Floyo's checkout recorded in the metadata.
        plan_key = (obj.get("metadata") or {}).get("plan") or "free"
        recurring = ((items[0].get("price") or {}).get("recurring") or {}) if items else {}
        interval = STRIPE_INTERVALS.get(recurring.get("interval"))
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    # Current API versions keep the period on each item; older ones on the subscription itself.
    period_end = max(period_ends) if period_ends else obj.get("current_period_end")

    status = "canceled" if event_type == "customer.subscription.deleted" else obj.get("status", "incomplete")
    trial_end = _timestamp(obj.get("trial_end"))
    if trial_end != subscription.trial_end:
        subscription.trial_ending_notified = False
    subscription.status = status
    subscription.plan = plan_key if plan_key in plans.all_plans() else "free"
    subscription.price_id = price_id
    subscription.interval = interval
    subscription.current_period_end = _timestamp(period_end)
    subscription.cancel_at_period_end = bool(obj.get("cancel_at_period_end"))
    subscription.cancel_at = _timestamp(obj.get("cancel_at"))
    subscription.canceled_at = _timestamp(obj.get("canceled_at"))
    subscription.trial_end = trial_end
    if event_type == "customer.subscription.trial_will_end":
        subscription.trial_ending_notified = True
    subscription.event_created = created
    subscription.event_type = event_type
    subscription.updated_at = utcnow()
    db.session.flush()

    linked = db.session.execute(
        db.update(Invoice)
        .where(Invoice.stripe_subscription_id == subscription.stripe_id, Invoice.subscription_id.is_(None))
        .values(subscription_id=subscription.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    _update_account_plan(subscription)
    _record_subscription_change(org_id, subscription, event_type, created_here)
    outgoing.emit(org_id, "billing.subscription_updated", _subscription_payload(subscription))
    logger.info(
        "subscription applied org=%s subscription=%s status=%s plan=%s invoices_linked=%s",
        org_id,
        subscription.stripe_id,
        status,
        subscription.plan,
        linked,
    )
    return org_id


def _record_subscription_change(org_id, subscription, event_type, created_here):
    """Add the audit entry of a subscription change that Stripe reported; the actor is the system."""
    if event_type == "customer.subscription.deleted":
        action = "billing.subscription_cancelled"
    elif created_here:
        action = "billing.subscription_created"
    else:
        action = "billing.subscription_updated"
    details = {
        "plan": subscription.plan,
        "status": subscription.status,
        "interval": subscription.interval,
        "stripe_event": event_type,
    }
    record_system_change(action, org_id, "subscription", subscription.stripe_id, details)


def _subscription_payload(subscription):
    return {
        "plan": subscription.plan,
        "status": subscription.status,
        "interval": subscription.interval,
        "current_period_end": isoformat(subscription.current_period_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
    }


def _update_account_plan(subscription):
    """Make the subscription the organization's current one if it grants a plan, or fall back to Free."""
    account = get_account(subscription.org_id, create=True)
    if subscription.status in plans.ENTITLED_STATUSES:
        account.subscription_id = subscription.id
        account.plan = subscription.plan
    elif account.subscription_id in (None, subscription.id):
        account.subscription_id = subscription.id
        account.plan = "free"
    account.updated_at = utcnow()


def _invoice_subscription_id(obj):
    """Return the subscription id: `parent.subscription_details` in current API versions, else `subscription`."""
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    value = details.get("subscription") or obj.get("subscription")
    if isinstance(value, dict):
        value = value.get("id")
    return value


def _invoice_changed(obj, event_type, created):
    org_id = _org_for_customer(obj.get("customer"))
    stripe_subscription_id = _invoice_subscription_id(obj)
    subscription = _find_subscription(stripe_subscription_id)
    invoice = db.session.scalar(db.select(Invoice).where(Invoice.stripe_id == obj["id"]))
    if invoice is None:
        invoice = Invoice(
            org_id=org_id, stripe_id=obj["id"], stripe_customer_id=obj.get("customer") or "", event_created=-1
        )
        db.session.add(invoice)
    invoice.stripe_subscription_id = stripe_subscription_id
    if subscription is not None:
        invoice.subscription_id = subscription.id
    if created >= invoice.event_created:
        invoice.status = obj.get("status") or ("paid" if event_type == "invoice.paid" else "open")
        invoice.number = obj.get("number")
        invoice.currency = obj.get("currency") or "usd"
        invoice.amount_due = int(obj.get("amount_due") or 0)
        invoice.amount_paid = int(obj.get("amount_paid") or 0)
        invoice.hosted_invoice_url = obj.get("hosted_invoice_url")
        invoice.stripe_created = _timestamp(obj.get("created"))
        invoice.event_created = created
    if event_type == "invoice.paid":
        if invoice.paid_at is None:
            invoice.paid_at = _timestamp((obj.get("status_transitions") or {}).get("paid_at")) or utcnow()
            logger.info("payment recorded org=%s invoice=%s amount=%s", org_id, invoice.stripe_id, invoice.amount_paid)
    else:
        invoice.payment_failed_at = _timestamp(created) or utcnow()
        if subscription is not None and not _is_stale(subscription, created, event_type):
            # Stripe retries the payment; the plan stays and the owners see a banner until it is paid.
            subscription.status = "past_due"
            subscription.event_created = created
            subscription.event_type = event_type
            subscription.updated_at = utcnow()
            logger.warning("subscription past due org=%s subscription=%s", org_id, subscription.stripe_id)
        outgoing.emit(
            org_id, "billing.payment_failed", {"invoice": invoice.stripe_id, "amount_due": invoice.amount_due}
        )
    db.session.flush()
    return org_id


def get_subscription(org_id, subscription_id):
    subscription = db.session.scalar(
        db.select(Subscription).where(Subscription.org_id == org_id, Subscription.id == subscription_id)
    )
    if subscription is None:
        raise NotFound(f"Subscription {subscription_id} was not found in this organization.")
    return subscription
