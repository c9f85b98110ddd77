"""Signature checks of incoming webhooks. Each raises InvalidSignature before anything is stored.

Stripe's check is the `stripe` library's own (HMAC-SHA256 over "<t>.<raw body>", with
stripe.Webhook.DEFAULT_TOLERANCE, 300 seconds in stripe 16.1.0). GitHub's `X-Hub-Signature-256`
is "sha256=" and the hex HMAC-SHA256 of the raw body. The generic scheme ("hmac") is the one
Floyo signs its own outgoing deliveries with: a header "t=<Unix seconds>,v1=<hex HMAC-SHA256 of
'<t>.<raw body>'>", rejected when t is further than the tolerance from now.
"""

import hashlib
import hmac
import time

import stripe

from app.errors import ServiceError


class InvalidSignature(ServiceError):
    status = 400
    code = "invalid_signature"


def verify_stripe(payload, header, secret):
    """Check a Stripe-Signature header against the raw body bytes."""
    if not header:
        raise InvalidSignature("The Stripe-Signature header is missing; only Stripe can send to this URL.")
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE)
    except stripe.SignatureVerificationError as error:
        raise InvalidSignature(f"The Stripe signature is invalid: {error.user_message or error}") from error
    except UnicodeDecodeError as error:
        raise InvalidSignature("The body is not UTF-8, so it cannot carry a valid Stripe signature.") from error


def hmac_hex(secret, message):
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify_github(payload, header, secret):
    """Check GitHub's X-Hub-Signature-256 header ("sha256=<hex>") against the raw body."""
    if not header:
        raise InvalidSignature("The X-Hub-Signature-256 header is missing.")
    scheme, _, signature = header.partition("=")
    if scheme != "sha256" or not signature:
        raise InvalidSignature("The X-Hub-Signature-256 header must look like 'sha256=<hex digest>'.")
    if not hmac.compare_digest(hmac_hex(secret, payload), signature.strip().lower()):
        raise InvalidSignature("The X-Hub-Signature-256 signature does not match the body.")


def sign_timestamped(secret, payload, timestamp=None):
    """Build the generic header value "t=<timestamp>,v1=<signature>" for a raw body."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={timestamp},v1={hmac_hex(secret, str(timestamp).encode() + b'.' + payload)}"


def verify_timestamped(payload, header, secret, tolerance):
    """Check a generic "t=...,v1=..." header: a matching signature and a timestamp within `tolerance` seconds."""
    if not header:
        raise InvalidSignature("The Webhook-Signature header is missing.")
    parts = {}
    signatures = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "v1":
            signatures.append(value)
        else:
            parts[name] = value
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError) as error:
        raise InvalidSignature("The Webhook-Signature header must look like 't=<Unix seconds>,v1=<hex>'.") from error
    expected = hmac_hex(secret, str(timestamp).encode() + b"." + payload)
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        raise InvalidSignature("The Webhook-Signature signature does not match the body.")
    if abs(time.time() - timestamp) > tolerance:
        raise InvalidSignature(
            f"The Webhook-Signature timestamp is more than {tolerance} seconds from now; send a fresh signature."
        )
