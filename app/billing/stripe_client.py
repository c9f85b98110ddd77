"""The Stripe client, built from STRIPE_SECRET_KEY and STRIPE_API_BASE for every call site."""

import stripe
from flask import current_app

from app.errors import ServiceError


class BillingNotConfigured(ServiceError):
    status = 503
    code = "billing_not_configured"


class StripeUnavailable(ServiceError):
    status = 502
    code = "stripe_unavailable"


def is_configured():
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def client():
    """Build a StripeClient for this app; raise BillingNotConfigured without a secret key."""
    key = current_app.config.get("STRIPE_SECRET_KEY")
    if not key:
        raise BillingNotConfigured("Billing is not set up on this server: STRIPE_SECRET_KEY is empty.")
    base = current_app.config.get("STRIPE_API_BASE") or None
    return stripe.StripeClient(key, base_addresses={"api": base} if base else None, max_network_retries=1)


def call(description, function, *args, **kwargs):
    """Run one Stripe call, turning the library's errors into a StripeUnavailable the pages can show."""
    try:
        return function(*args, **kwargs)
    except stripe.StripeError as error:
        current_app.logger.warning("stripe call failed call=%s error=%s", description, error.__class__.__name__)
        raise StripeUnavailable(
            f"Stripe could not {description}: {error.user_message or error.__class__.__name__}. Try again in a minute."
        ) from error
