"""Incoming webhooks: storing authentic deliveries, processing them once, history and replay.

A delivery is checked before the database is touched, stored with its raw body under a unique
(provider, event_id), and processed by a job enqueued after the commit. The job locks the row and
commits the handler's changes together with the status `processed`, so a delivery applies at most
once however often it arrives; a handler that raises leaves the row `failed` with the error, and
the next delivery of the same event (a provider's retry) or a replay applies it.
"""

import hashlib
import json
import logging

from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from app.errors import NotFound, ServiceError
from app.extensions import db
from app.queue import enqueue_after_commit
from app.timeutil import utcnow
from app.webhooks import signatures
from app.webhooks.models import WebhookDelivery

logger = logging.getLogger(__name__)

# Request headers kept with a delivery, for the history page; never an Authorization header.
KEPT_HEADERS = (
    "Content-Type",
    "User-Agent",
    "Stripe-Signature",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-Hub-Signature-256",
    "Webhook-Id",
    "Webhook-Event",
    "Webhook-Signature",
)
REPROCESS_STATUSES = ("received", "failed")


class UnknownProvider(NotFound):
    code = "unknown_provider"


class NotConfigured(ServiceError):
    status = 503
    code = "not_configured"


class InvalidPayload(ServiceError):
    status = 400
    code = "invalid_payload"


def _parse_json(payload):
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidPayload(f"The body is not valid JSON: {error}.") from error
    if not isinstance(data, dict):
        raise InvalidPayload("The body must be a JSON object.")
    return data


def receive_stripe(payload, headers):
    """Verify and store a Stripe delivery; return (delivery, is_new). The caller commits."""
    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    if not secret:
        raise NotConfigured("Stripe webhooks are not configured here: STRIPE_WEBHOOK_SECRET is empty.")
    signatures.verify_stripe(payload, headers.get("Stripe-Signature"), secret)
    event = _parse_json(payload)
    if not isinstance(event.get("id"), str) or not event["id"]:
        raise InvalidPayload("The Stripe event has no id.")
    return _store("stripe", event["id"], str(event.get("type") or ""), payload, headers, None)


def provider_settings(provider):
    settings = current_app.config["WEBHOOK_PROVIDERS"].get(provider)
    if provider == "stripe" or not isinstance(settings, dict) or not settings.get("secret"):
        raise UnknownProvider(
            f"No webhook provider named {provider!r} is configured here. An operator adds it to WEBHOOK_PROVIDERS."
        )
    return settings


def receive_provider(provider, payload, headers):
    """Verify and store a delivery of a configured provider (scheme github or hmac); return (delivery, is_new)."""
    settings = provider_settings(provider)
    scheme = settings.get("scheme", "hmac")
    if scheme == "github":
        signatures.verify_github(payload, headers.get("X-Hub-Signature-256"), settings["secret"])
        event_id = headers.get("X-GitHub-Delivery")
        event_type = headers.get("X-GitHub-Event") or ""
    elif scheme == "hmac":
        tolerance = current_app.config["WEBHOOK_TOLERANCE_SECONDS"]
        signatures.verify_timestamped(payload, headers.get("Webhook-Signature"), settings["secret"], tolerance)
        event_id = headers.get("Webhook-Id")
        event_type = headers.get("Webhook-Event") or ""
    else:
        raise NotConfigured(f"Webhook provider {provider!r} has an unknown scheme {scheme!r}; use github or hmac.")
    data = _parse_json(payload)
    if not event_type and isinstance(data.get("type"), str):
        event_type = data["type"]
    if not event_id:
        event_id = str(data.get("id") or "") or "sha256:" + hashlib.sha256(payload).hexdigest()
    return _store(provider, event_id[:255], event_type[:128], payload, headers, settings.get("org_id"))


def _store(provider, event_id, event_type, payload, headers, org_id):
    """Insert the delivery unless (provider, event_id) exists; a failed or unprocessed one is queued again."""
    now = utcnow()
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    table = WebhookDelivery.__table__
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(
            provider=provider,
            event_id=event_id,
            event_type=event_type,
            org_id=org_id,
            body=payload,
            headers=kept,
            status="received",
            attempts=0,
            received_at=now,
            last_received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(table.c.id)
    )
    new_id = db.session.execute(statement).scalar()
    if new_id is not None:
        _enqueue(new_id)
        logger.info("webhook stored provider=%s event=%s type=%s delivery=%s", provider, event_id, event_type, new_id)
        return db.session.get(WebhookDelivery, new_id), True

    delivery = db.session.scalar(
        db.select(WebhookDelivery).where(WebhookDelivery.provider == provider, WebhookDelivery.event_id == event_id)
    )
    delivery.last_received_at = now
    if delivery.status in REPROCESS_STATUSES:
        # A provider's retry of a failed delivery: process it again (the last error stays until then).
        delivery.status = "received"
        _enqueue(delivery.id)
    logger.info(
        "webhook redelivered provider=%s event=%s delivery=%s status=%s",
        provider,
        event_id,
        delivery.id,
        delivery.status,
    )
    return delivery, False


def _enqueue(delivery_id):
    from app.webhooks.jobs import process_delivery_job

    enqueue_after_commit(process_delivery_job, delivery_id)


def process_delivery(delivery_id):
    """Apply a stored delivery once; return its final status.

    The row lock makes a second job for the same delivery wait and then find it processed.
    """
    delivery = db.session.scalar(db.select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update())
    if delivery is None:
        logger.warning("webhook delivery gone delivery=%s", delivery_id)
        return None
    if delivery.status not in REPROCESS_STATUSES:
        db.session.commit()
        return delivery.status

    delivery.attempts += 1
    try:
        with db.session.begin_nested():
            handled, org_id = _dispatch(delivery)
    except Exception as error:
        delivery.status = "failed"
        delivery.error = f"{type(error).__name__}: {error}"[:2000]
        db.session.commit()
        logger.exception(
            "webhook handler failed provider=%s event=%s delivery=%s", delivery.provider, delivery.event_id, delivery.id
        )
        return delivery.status

    delivery.status = "processed" if handled else "ignored"
    delivery.error = None
    delivery.processed_at = utcnow()
    if org_id is not None:
        delivery.org_id = org_id
    db.session.commit()
    logger.info(
        "webhook %s provider=%s event=%s type=%s delivery=%s org=%s",
        delivery.status,
        delivery.provider,
        delivery.event_id,
        delivery.event_type,
        delivery.id,
        delivery.org_id,
    )
    return delivery.status


def _dispatch(delivery):
    """Run the provider's handler; return (handled, org_id)."""
    data = json.loads(delivery.body)
    if delivery.provider == "stripe":
        from app.billing.service import apply_stripe_event

        return apply_stripe_event(data)
    return _start_provider_workflows(delivery, data)


def _start_provider_workflows(delivery, data):
    """Start the enabled workflows of the provider's organization whose trigger names this provider.

    A workflow opts in with a webhook trigger carrying {"provider": "<name>"}; its run input is
    the provider, the event type and the JSON body.
    """
    from app.workflows.models import Workflow
    from app.workflows.runs import create_run

    if delivery.org_id is None:
        return False, None
    workflows = db.session.scalars(
        db.select(Workflow).where(
            Workflow.org_id == delivery.org_id, Workflow.trigger_type == "webhook", Workflow.enabled.is_(True)
        )
    ).all()
    started = 0
    for workflow in workflows:
        if (workflow.definition.get("trigger") or {}).get("provider") != delivery.provider:
            continue
        create_run(workflow, "webhook", {"provider": delivery.provider, "type": delivery.event_type, "body": data})
        started += 1
    return started > 0, delivery.org_id


def is_org_admin(user, org_id):
    from app.orgs.models import Membership

    role = db.session.scalar(
        db.select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user.id)
    )
    return role in ("owner", "admin")


def list_deliveries(org_id=None, provider=None, status=None, before_id=None, limit=50):
    """Deliveries newest first (limit + 1 rows, so the caller can tell a next page exists).

    `org_id` None lists every organization's and the unassigned ones: only for site admins.
    """
    query = db.select(WebhookDelivery)
    if org_id is not None:
        query = query.where(WebhookDelivery.org_id == org_id)
    if provider:
        query = query.where(WebhookDelivery.provider == provider)
    if status:
        query = query.where(WebhookDelivery.status == status)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return db.session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).all()


def get_delivery(delivery_id, org_id=None):
    query = db.select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if org_id is not None:
        query = query.where(WebhookDelivery.org_id == org_id)
    delivery = db.session.scalar(query)
    if delivery is None:
        raise NotFound(f"Webhook delivery {delivery_id} was not found.")
    return delivery


def replay(delivery_id, org_id=None):
    """Process a delivery again, whatever its status: handlers are idempotent and skip older state."""
    delivery = get_delivery(delivery_id, org_id)
    delivery.status = "received"
    delivery.error = None
    _enqueue(delivery.id)
    logger.info("webhook replay requested delivery=%s provider=%s", delivery.id, delivery.provider)
    return delivery


def replay_matching(provider=None, status="failed", limit=1000):
    """Queue every matching delivery (up to `limit`) to be processed again; return how many."""
    query = db.select(WebhookDelivery.id).where(WebhookDelivery.status == status)
    if provider:
        query = query.where(WebhookDelivery.provider == provider)
    ids = db.session.scalars(query.order_by(WebhookDelivery.id).limit(limit)).all()
    for delivery_id in ids:
        replay(delivery_id)
    return len(ids)
