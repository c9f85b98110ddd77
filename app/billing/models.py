"""Billing state kept from Stripe: the customer of each organization, subscriptions, invoices, usage."""

from app.db_types import UTCDateTime
from app.extensions import db
from app.timeutil import utcnow


class BillingAccount(db.Model):
    """An organization's Stripe customer and the plan in force, one row per organization."""

    __tablename__ = "billing_accounts"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    stripe_customer_id = db.Column(db.String(255), unique=True)
    # The plan whose limits apply; updated whenever the current subscription changes.
    plan = db.Column(db.String(16), nullable=False, default="free")
    subscription_id = db.Column(db.Integer, db.ForeignKey("subscriptions.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    subscription = db.relationship("Subscription", foreign_keys=[subscription_id])


class Subscription(db.Model):
    __tablename__ = "subscriptions"
    __table_args__ = (db.Index("ix_subscriptions_org_id", "org_id", "id"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    stripe_id = db.Column(db.String(255), nullable=False, unique=True)
    stripe_customer_id = db.Column(db.String(255), nullable=False)
    # Stripe's status: incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid, paused.
    status = db.Column(db.String(32), nullable=False)
    plan = db.Column(db.String(16), nullable=False)
    price_id = db.Column(db.String(255))
    interval = db.Column(db.String(16))
    current_period_end = db.Column(UTCDateTime)
    cancel_at_period_end = db.Column(db.Boolean, nullable=False, default=False)
    cancel_at = db.Column(UTCDateTime)
    canceled_at = db.Column(UTCDateTime)
    trial_end = db.Column(UTCDateTime)
    # A trial_will_end notice was received for the current trial.
    trial_ending_notified = db.Column(db.Boolean, nullable=False, default=False)
    # `created` (Unix seconds) of the Stripe event whose state this row holds; older events are ignored.
    event_created = db.Column(db.BigInteger, nullable=False, default=0)
    event_type = db.Column(db.String(64), nullable=False, default="")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class Invoice(db.Model):
    """A Stripe invoice as last seen; `paid_at` set once marks one recorded payment."""

    __tablename__ = "invoices"
    __table_args__ = (
        db.Index("ix_invoices_org_id", "org_id", "id"),
        db.Index("ix_invoices_stripe_subscription_id", "stripe_subscription_id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    stripe_id = db.Column(db.String(255), nullable=False, unique=True)
    stripe_customer_id = db.Column(db.String(255), nullable=False)
    stripe_subscription_id = db.Column(db.String(255))
    # Set once the subscription is known here; an invoice can arrive before its subscription.
    subscription_id = db.Column(db.Integer, db.ForeignKey("subscriptions.id", ondelete="SET NULL"))
    number = db.Column(db.String(64))
    status = db.Column(db.String(32), nullable=False)
    currency = db.Column(db.String(8), nullable=False, default="usd")
    amount_due = db.Column(db.BigInteger, nullable=False, default=0)
    amount_paid = db.Column(db.BigInteger, nullable=False, default=0)
    hosted_invoice_url = db.Column(db.String(2048))
    stripe_created = db.Column(UTCDateTime)
    paid_at = db.Column(UTCDateTime)
    payment_failed_at = db.Column(UTCDateTime)
    event_created = db.Column(db.BigInteger, nullable=False, default=0)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class UsageCounter(db.Model):
    """How much of a metered limit an organization used in one calendar month (UTC), like "2026-12"."""

    __tablename__ = "usage_counters"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    metric = db.Column(db.String(32), primary_key=True)
    period = db.Column(db.String(7), primary_key=True)
    count = db.Column(db.BigInteger, nullable=False, default=0)
