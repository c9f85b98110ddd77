"""JSON routes: incoming webhooks (Stripe and other providers) and the delivery history."""

import base64

from flask import g, jsonify, request
from pydantic import BaseModel, Field

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError
from app.api.openapi import operation
from app.api.pagination import decode_cursor, page_response, parse_limit
from app.extensions import db
from app.timeutil import isoformat
from app.webhooks import service

TAG = "Webhooks"


class ReceivedOut(BaseModel):
    received: bool = Field(description="Always true: the delivery is authentic and stored.")
    delivery_id: int
    duplicate: bool = Field(description="True when this event was received before; it is not applied twice.")


class DeliveryOut(BaseModel):
    id: int
    provider: str
    event_id: str
    type: str
    org_id: int | None
    status: str = Field(description="received, processed, ignored (a type not handled) or failed.")
    attempts: int
    error: str | None
    received_at: str
    last_received_at: str
    processed_at: str | None
    body: str | None = Field(None, description="The raw body as received (with ?include=body).")
    body_encoding: str | None = Field(None, description="utf-8, or base64 when the body is not UTF-8 text.")


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


def _received(delivery, is_new):
    return jsonify({"received": True, "delivery_id": delivery.id, "duplicate": not is_new})


@bp.post("/webhooks/stripe")
@operation("Receive a Stripe event (signed with Stripe-Signature)", response_model=ReceivedOut, tag=TAG, public=True)
def receive_stripe_webhook():
    """Check the signature against the raw bytes, store the delivery, and process it in a job."""
    payload = request.get_data()

    delivery, is_new = service.receive_stripe(payload, request.headers)

    db.session.commit()
    return _received(delivery, is_new)


@bp.post("/webhooks/<provider>")
@operation(
    "Receive a delivery of a configured provider (GitHub or HMAC-signed; 'payment' for the payment provider)",
    response_model=ReceivedOut,
    tag=TAG,
    public=True,
)
def receive_provider_webhook(provider):
    payload = request.get_data()

    delivery, is_new = service.receive_provider(provider, payload, request.headers)

    db.session.commit()
    return _received(delivery, is_new)


def delivery_json(delivery, with_body=False):
    data = DeliveryOut(
        id=delivery.id,
        provider=delivery.provider,
        event_id=delivery.event_id,
        type=delivery.event_type,
        org_id=delivery.org_id,
        status=delivery.status,
        attempts=delivery.attempts,
        error=delivery.error,
        received_at=isoformat(delivery.received_at),
        last_received_at=isoformat(delivery.last_received_at),
        processed_at=isoformat(delivery.processed_at),
    )
    if with_body:
        try:
            data.body, data.body_encoding = delivery.body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            data.body, data.body_encoding = base64.b64encode(delivery.body).decode(), "base64"
    return data.model_dump()


def _history_scope():
    """The organization to list: g.org_id for its owners and admins; None (all) for site admins asking ?all=1."""
    if request.args.get("all") in ("1", "true"):
        if not g.user.is_admin:
            raise ApiError(403, "forbidden", "Only site admins can list the deliveries of all organizations.")
        return None
    if not (g.user.is_admin or service.is_org_admin(g.user, g.org_id)):
        raise ApiError(403, "forbidden", "Only owners and admins of the organization can see its webhook deliveries.")
    return g.org_id


@bp.get("/webhooks/history")
@operation(
    "List webhook deliveries, newest first",
    response_model=DeliveryPage,
    query=[
        ("provider", "string", "Only deliveries of this provider (stripe, github, ...)."),
        ("status", "string", "received, processed, ignored or failed."),
        ("all", "string", "1 lists every organization's deliveries (site admins only)."),
        ("limit", "integer", "Page size, 1 to 500."),
        ("cursor", "string", "The next_cursor of the previous page."),
    ],
    tag=TAG,
)
@api_auth_required
def list_webhook_deliveries():
    org_id = _history_scope()
    limit = parse_limit()
    before_id = None
    if request.args.get("cursor"):
        (before_id,) = decode_cursor(request.args["cursor"], 1)
        if not isinstance(before_id, int):
            raise ApiError(400, "invalid_cursor", "The cursor is invalid. Use the next_cursor of a previous page.")

    rows = service.list_deliveries(
        org_id, request.args.get("provider") or None, request.args.get("status") or None, before_id, limit
    )

    items, next_cursor = page_response(rows, limit, lambda delivery: [delivery.id])
    return jsonify({"data": [delivery_json(item) for item in items], "next_cursor": next_cursor})


@bp.get("/webhooks/history/<int:delivery_id>")
@operation(
    "Show one delivery; ?include=body adds the raw payload",
    response_model=DeliveryOut,
    query=[("include", "string", "body adds the raw payload.")],
    tag=TAG,
)
@api_auth_required
def get_webhook_delivery(delivery_id):
    org_id = None if g.user.is_admin else _history_scope()
    delivery = service.get_delivery(delivery_id, org_id)
    return jsonify(delivery_json(delivery, with_body=request.args.get("include") == "body"))


@bp.post("/webhooks/history/<int:delivery_id>/replay")
@operation("Process a stored delivery again", response_model=DeliveryOut, status=202, tag=TAG)
@api_auth_required
def replay_webhook_delivery(delivery_id):
    org_id = None if g.user.is_admin else _history_scope()
    delivery = service.replay(delivery_id, org_id)
    db.session.commit()
    return jsonify(delivery_json(delivery)), 202
