"""Webhooks in (Stripe and other providers, stored raw and processed in jobs) and out (signed, retried)."""
