"""Incoming webhook deliveries, and the endpoints and deliveries of outgoing webhooks."""

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow

# received: stored, job not finished; processed: applied; ignored: authentic, of a type not handled;
# failed: the handler raised, `error` contains the reason, and a redelivery or a replay applies it again.
DELIVERY_STATUSES = ("received", "processed", "ignored", "failed")


class WebhookDelivery(db.Model):
    """One authentic incoming delivery with its raw body, exactly as the provider sent it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # Two deliveries of one provider event (a retry racing the first) store one row.
        db.UniqueConstraint("provider", "event_id", name="uq_webhook_deliveries_provider_event"),
        db.Index("ix_webhook_deliveries_org_id", "org_id", "id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    provider = db.Column(db.String(64), nullable=False)
    event_id = db.Column(db.String(255), nullable=False)
    event_type = db.Column(db.String(128), nullable=False, default="")
    # The organization the delivery concerns, once known (Stripe deliveries learn it when processed).
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="SET NULL"))
    body = db.Column(db.LargeBinary, nullable=False)
    headers = db.Column(JSONDocument, nullable=False, default=dict)
    status = db.Column(db.String(16), nullable=False, default="received")
    attempts = db.Column(db.Integer, nullable=False, default=0)
    error = db.Column(db.Text)
    received_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    last_received_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    processed_at = db.Column(UTCDateTime)


class WebhookEndpoint(db.Model):
    """A URL an organization registered to receive Floyo's own events."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (db.Index("ix_webhook_endpoints_org_id", "org_id", "id"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    url = db.Column(db.String(2048), nullable=False)
    # Event types to send, such as "workflow_run.succeeded"; "*" sends all of them.
    events = db.Column(JSONDocument, nullable=False, default=list)
    # Encrypted with the integration secret keys; shown to the user once, at creation.
    secret_encrypted = db.Column(db.Text, nullable=False)
    enabled = db.Column(db.Boolean, nullable=False, default=True)
    disabled_reason = db.Column(db.String(500))
    consecutive_failures = db.Column(db.Integer, nullable=False, default=0)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class OutgoingDelivery(db.Model):
    __tablename__ = "outgoing_deliveries"
    __table_args__ = (
        db.Index("ix_outgoing_deliveries_endpoint_id", "endpoint_id", "id"),
        # The due sweep: pending deliveries by their next attempt time.
        db.Index("ix_outgoing_deliveries_status_next", "status", "next_attempt_at"),
    )

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    endpoint_id = db.Column(db.Integer, db.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    event_type = db.Column(db.String(128), nullable=False)
    payload = db.Column(JSONDocument, nullable=False)
    # queued (a job will make the next attempt), sending (the request is in flight), pending (the
    # next attempt is due at next_attempt_at), succeeded, failed (no attempts left).
    status = db.Column(db.String(16), nullable=False, default="pending")
    attempts = db.Column(db.Integer, nullable=False, default=0)
    next_attempt_at = db.Column(UTCDateTime)
    # Every attempt: {"at", "status_code", "duration_ms", "error"}.
    log = db.Column(JSONDocument, nullable=False, default=list)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    delivered_at = db.Column(UTCDateTime)

    endpoint = db.relationship("WebhookEndpoint")
