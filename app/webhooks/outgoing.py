"""Outgoing webhooks: endpoints an organization registers, and signed deliveries retried with backoff.

Each delivery is a POST of a JSON body with the header
`Floyo-Signature: t=<Unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint secret>`
(docs/webhooks.md shows how to check it). A failed attempt (a network error or a status other than
2xx) is tried again after 1, 2, 4, ... minutes until OUTGOING_WEBHOOK_MAX_ATTEMPTS; an endpoint
whose deliveries fail OUTGOING_WEBHOOK_DISABLE_AFTER times in a row is disabled with a notice.
Requests go through app.integrations.outbound, so they follow the same address rules as the
workflow step http_request.
"""

import json
import logging
import secrets
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app

from app.errors import NotFound, ValidationError
from app.extensions import db
from app.integrations import crypto, outbound
from app.queue import enqueue_after_commit
from app.timeutil import isoformat, utcnow
from app.webhooks.models import OutgoingDelivery, WebhookEndpoint
from app.webhooks.signatures import sign_timestamped

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "workflow_run.succeeded",
    "workflow_run.failed",
    "workflow_run.cancelled",
    "billing.subscription_updated",
    "billing.payment_failed",
)
SIGNATURE_HEADER = "Floyo-Signature"
REQUEST_TIMEOUT_SECONDS = 10.0
FIRST_RETRY_SECONDS = 60
# A delivery left in `sending` this long (its worker died mid-request) is due again.
SENDING_STALE_SECONDS = 15 * 60
SWEEP_BATCH = 200


def _check_url(url):
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"The URL {url[:100]!r} is invalid; use a full http or https URL such as https://example.com/hooks.",
            {"url": "must be an http or https URL with a host"},
        )
    if parts.username or parts.password:
        raise ValidationError("URLs with a user name or password are not allowed.", {"url": "remove the user info"})


def _check_events(events):
    if not events:
        raise ValidationError("Choose at least one event to send.", {"events": "empty"})
    unknown = [name for name in events if name != "*" and name not in EVENT_TYPES]
    if unknown:
        raise ValidationError(
            f"Unknown event {unknown[0]!r}; use * or any of {', '.join(EVENT_TYPES)}.", {"events": "unknown event"}
        )
    return sorted(set(events))


def create_endpoint(org_id, url, events):
    """Register an endpoint; return (endpoint, secret). The secret is shown once and stored encrypted."""
    url = (url or "").strip()
    _check_url(url)
    events = _check_events(events)
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        org_id=org_id,
        url=url,
        events=events,
        secret_encrypted=crypto.encrypt_secrets({"secret": secret}),
        enabled=True,
        consecutive_failures=0,
    )
    db.session.add(endpoint)
    db.session.flush()
    logger.info("webhook endpoint created org=%s endpoint=%s", org_id, endpoint.id)
    return endpoint, secret


def list_endpoints(org_id):
    return db.session.scalars(
        db.select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id).order_by(WebhookEndpoint.id)
    ).all()


def get_endpoint(org_id, endpoint_id):
    endpoint = db.session.scalar(
        db.select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.id == endpoint_id)
    )
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} was not found in this organization.")
    return endpoint


def delete_endpoint(org_id, endpoint_id):
    endpoint = get_endpoint(org_id, endpoint_id)
    db.session.delete(endpoint)
    logger.info("webhook endpoint deleted org=%s endpoint=%s", org_id, endpoint_id)


def enable_endpoint(org_id, endpoint_id):
    """Turn a disabled endpoint back on, with its failure count reset."""
    endpoint = get_endpoint(org_id, endpoint_id)
    endpoint.enabled = True
    endpoint.disabled_reason = None
    endpoint.consecutive_failures = 0
    return endpoint


def list_deliveries(org_id, endpoint_id, limit=50):
    get_endpoint(org_id, endpoint_id)
    return db.session.scalars(
        db.select(OutgoingDelivery)
        .where(OutgoingDelivery.org_id == org_id, OutgoingDelivery.endpoint_id == endpoint_id)
        .order_by(OutgoingDelivery.id.desc())
        .limit(limit)
    ).all()


def emit(org_id, event_type, data):
    """Queue a delivery of an event to every enabled endpoint of the organization that subscribed to it.

    The rows are added to the caller's transaction and sent after it commits; returns how many.
    """
    endpoints = db.session.scalars(
        db.select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.enabled.is_(True))
    ).all()
    now = utcnow()
    payload = {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "created": isoformat(now), "data": data}
    count = 0
    for endpoint in endpoints:
        if "*" not in endpoint.events and event_type not in endpoint.events:
            continue
        delivery = OutgoingDelivery(
            org_id=org_id,
            endpoint_id=endpoint.id,
            event_type=event_type,
            payload=payload,
            status="queued",
            attempts=0,
            next_attempt_at=now,
            log=[],
        )
        db.session.add(delivery)
        db.session.flush()
        _enqueue(delivery.id)
        count += 1
    return count


def _enqueue(delivery_id):
    from app.webhooks.jobs import send_delivery_job

    enqueue_after_commit(send_delivery_job, delivery_id)


def resend(org_id, delivery_id):
    """Send a delivery again now, with a fresh set of attempts; its log keeps the earlier ones."""
    delivery = db.session.scalar(
        db.select(OutgoingDelivery).where(OutgoingDelivery.org_id == org_id, OutgoingDelivery.id == delivery_id)
    )
    if delivery is None:
        raise NotFound(f"Webhook delivery {delivery_id} was not found in this organization.")
    delivery.status = "queued"
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    _enqueue(delivery.id)
    logger.info("webhook resend requested org=%s delivery=%s", org_id, delivery_id)
    return delivery


def retry_delay(attempts):
    """Seconds before the next attempt after `attempts` failed ones: 60, 120, 240, ..."""
    return FIRST_RETRY_SECONDS * 2 ** (attempts - 1)


def attempt_delivery(delivery_id, now=None):
    """Make one attempt of a queued delivery; return its status afterwards (None when it was not queued).

    The claim is a conditional update committed before the request, so two jobs for the same
    delivery never send the same attempt twice.
    """
    now = now or utcnow()
    claimed = db.session.execute(
        db.update(OutgoingDelivery)
        .where(OutgoingDelivery.id == delivery_id, OutgoingDelivery.status == "queued")
        .values(status="sending", next_attempt_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    if not claimed:
        return None
    delivery = db.session.get(OutgoingDelivery, delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        delivery.status = "failed"
        _log(delivery, now, None, 0, f"The endpoint is disabled: {endpoint.disabled_reason or 'by a user'}.")
        db.session.commit()
        return delivery.status

    status_code, duration_ms, error = _send(endpoint, delivery)
    delivery.attempts += 1
    _log(delivery, now, status_code, duration_ms, error)
    if error is None:
        delivery.status = "succeeded"
        delivery.delivered_at = utcnow()
        delivery.next_attempt_at = None
        endpoint.consecutive_failures = 0
    elif delivery.attempts >= current_app.config["OUTGOING_WEBHOOK_MAX_ATTEMPTS"]:
        delivery.status = "failed"
        delivery.next_attempt_at = None
        _count_failure(endpoint)
    else:
        delivery.status = "pending"
        delivery.next_attempt_at = now + timedelta(seconds=retry_delay(delivery.attempts))
    db.session.commit()
    logger.info(
        "webhook sent org=%s endpoint=%s delivery=%s attempt=%s status_code=%s result=%s",
        delivery.org_id,
        endpoint.id,
        delivery.id,
        delivery.attempts,
        status_code,
        delivery.status,
    )
    return delivery.status


def _send(endpoint, delivery):
    """POST the signed payload; return (status code or None, duration in ms, error text or None)."""
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    secret = crypto.decrypt_secrets(endpoint.secret_encrypted)["secret"]
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_timestamped(secret, body),
        "Floyo-Event": delivery.event_type,
        "Floyo-Delivery": str(delivery.id),
    }
    started = time.monotonic()
    try:
        response = outbound.request("POST", endpoint.url, headers=headers, body=body, timeout=REQUEST_TIMEOUT_SECONDS)
    except outbound.OutboundError as error:
        duration_ms = round((time.monotonic() - started) * 1000)
        logger.warning("webhook request failed endpoint=%s delivery=%s error=%s", endpoint.id, delivery.id, error)
        return None, duration_ms, str(error)
    duration_ms = round((time.monotonic() - started) * 1000)
    if 200 <= response.status < 300:
        return response.status, duration_ms, None
    return response.status, duration_ms, f"The endpoint answered HTTP {response.status}."


def _log(delivery, at, status_code, duration_ms, error):
    entry = {"at": isoformat(at), "status_code": status_code, "duration_ms": duration_ms, "error": error}
    # Assign a new list: SQLAlchemy does not track changes made inside a JSON value.
    delivery.log = [*delivery.log, entry]


def _count_failure(endpoint):
    endpoint.consecutive_failures += 1
    limit = current_app.config["OUTGOING_WEBHOOK_DISABLE_AFTER"]
    if endpoint.consecutive_failures >= limit:
        endpoint.enabled = False
        endpoint.disabled_reason = (
            f"Disabled after {endpoint.consecutive_failures} deliveries in a row failed every attempt. "
            "Fix the receiving server, then enable the endpoint again."
        )
        logger.warning("webhook endpoint disabled org=%s endpoint=%s", endpoint.org_id, endpoint.id)


def claim_due_deliveries(now=None):
    """Mark the deliveries whose next attempt is due as queued; return their ids.

    A delivery stuck in queued or sending for SENDING_STALE_SECONDS (its job was lost or its
    worker died mid-request) is due again. The updates are conditional, so two schedulers never
    queue one delivery twice.
    """
    now = now or utcnow()
    stale = now - timedelta(seconds=SENDING_STALE_SECONDS)
    candidates = db.session.scalars(
        db.select(OutgoingDelivery.id)
        .where(
            db.or_(
                db.and_(OutgoingDelivery.status == "pending", OutgoingDelivery.next_attempt_at <= now),
                db.and_(OutgoingDelivery.status.in_(("queued", "sending")), OutgoingDelivery.next_attempt_at < stale),
            )
        )
        .order_by(OutgoingDelivery.next_attempt_at)
        .limit(SWEEP_BATCH)
    ).all()
    claimed = []
    for delivery_id in candidates:
        changed = db.session.execute(
            db.update(OutgoingDelivery)
            .where(
                OutgoingDelivery.id == delivery_id,
                db.or_(
                    db.and_(OutgoingDelivery.status == "pending", OutgoingDelivery.next_attempt_at <= now),
                    db.and_(
                        OutgoingDelivery.status.in_(("queued", "sending")), OutgoingDelivery.next_attempt_at < stale
                    ),
                ),
            )
            .values(status="queued", next_attempt_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            claimed.append(delivery_id)
    db.session.commit()
    return claimed


def enqueue_due_deliveries(now=None):
    """Queue a job for every delivery whose next attempt is due; called on every scheduler round."""
    from app.queue import enqueue
    from app.webhooks.jobs import send_delivery_job

    claimed = claim_due_deliveries(now)
    for delivery_id in claimed:
        enqueue(send_delivery_job, delivery_id)
    return len(claimed)


def run_payload(run, status):
    return {
        "run_id": run.id,
        "workflow_id": run.workflow_id,
        "version": run.version_number,
        "status": status,
        "trigger": run.trigger_type,
    }
