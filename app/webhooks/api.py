"""JSON routes: incoming webhooks (Stripe and other providers) and the delivery history."""

import base64

from flask import g, jsonify, request
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from app.api import bp
from app.api.auth import api_auth_required
from app.api.errors import ApiError, pydantic_details
from app.api.openapi import operation
from app.api.pagination import decode_cursor, page_response, parse_limit
from app.extensions import db
from app.orgs.access import role_required
from app.timeutil import isoformat
from app.webhooks import outgoing, service

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
    """Return the organization to list: g.org_id for its owners and admins, None (all) for site admins with ?all=1."""
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
@role_required("admin")
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
@role_required("admin")
def get_webhook_delivery(delivery_id):
    org_id = None if g.user.is_admin else _history_scope()
    delivery = service.get_delivery(delivery_id, org_id)
    return jsonify(delivery_json(delivery, with_body=request.args.get("include") == "body"))


@bp.post("/webhooks/history/<int:delivery_id>/replay")
@operation("Process a stored delivery again", response_model=DeliveryOut, status=202, tag=TAG)
@api_auth_required
@role_required("admin")
def replay_webhook_delivery(delivery_id):
    org_id = None if g.user.is_admin else _history_scope()
    delivery = service.replay(delivery_id, org_id)
    db.session.commit()
    return jsonify(delivery_json(delivery)), 202


# Outgoing webhooks


class EndpointIn(BaseModel):
    url: str = Field(max_length=2048, description="The http or https URL that receives the POSTs.")
    events: list[str] = Field(description="Event types to send, or ['*'] for all of them.")


class EndpointOut(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: str
    secret: str | None = Field(None, description="The signing secret; returned only when the endpoint is created.")


class OutgoingDeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    type: str
    status: str = Field(description="queued, sending, pending (a retry is due at next_attempt_at), succeeded, failed.")
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    log: list[dict] = Field(description="Every attempt: at, status_code, duration_ms, error.")
    payload: dict


def _require_org_admin():
    if not (g.user.is_admin or service.is_org_admin(g.user, g.org_id)):
        raise ApiError(403, "forbidden", "Only owners and admins of the organization can manage its webhooks.")


def endpoint_json(endpoint, secret=None):
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        consecutive_failures=endpoint.consecutive_failures,
        created_at=isoformat(endpoint.created_at),
        secret=secret,
    ).model_dump()


def outgoing_json(delivery):
    return OutgoingDeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        type=delivery.event_type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=isoformat(delivery.next_attempt_at),
        delivered_at=isoformat(delivery.delivered_at),
        log=delivery.log,
        payload=delivery.payload,
    ).model_dump()


@bp.get("/webhooks/endpoints")
@operation("List the organization's outgoing webhook endpoints", tag=TAG)
@api_auth_required
@role_required("admin")
def list_webhook_endpoints():
    _require_org_admin()
    return jsonify({"data": [endpoint_json(endpoint) for endpoint in outgoing.list_endpoints(g.org_id)]})


@bp.post("/webhooks/endpoints")
@operation(
    "Register an outgoing webhook endpoint; the answer has the secret, shown only once",
    request_model=EndpointIn,
    response_model=EndpointOut,
    status=201,
    tag=TAG,
)
@api_auth_required
@role_required("admin")
def create_webhook_endpoint():
    _require_org_admin()
    data = request.get_json(silent=True)
    try:
        body = EndpointIn.model_validate(data if isinstance(data, dict) else {})
    except PydanticValidationError as error:
        raise ApiError(422, "validation_error", "The endpoint is invalid.", pydantic_details(error)) from error

    endpoint, secret = outgoing.create_endpoint(g.org_id, body.url, body.events)

    db.session.commit()
    return jsonify(endpoint_json(endpoint, secret)), 201


@bp.delete("/webhooks/endpoints/<int:endpoint_id>")
@operation("Delete an outgoing webhook endpoint and its deliveries", status=204, tag=TAG)
@api_auth_required
@role_required("admin")
def delete_webhook_endpoint(endpoint_id):
    _require_org_admin()
    outgoing.delete_endpoint(g.org_id, endpoint_id)
    db.session.commit()
    return "", 204


@bp.post("/webhooks/endpoints/<int:endpoint_id>/enable")
@operation("Enable a disabled endpoint again", response_model=EndpointOut, tag=TAG)
@api_auth_required
@role_required("admin")
def enable_webhook_endpoint(endpoint_id):
    _require_org_admin()
    endpoint = outgoing.enable_endpoint(g.org_id, endpoint_id)
    db.session.commit()
    return jsonify(endpoint_json(endpoint))


@bp.get("/webhooks/endpoints/<int:endpoint_id>/deliveries")
@operation("List an endpoint's latest 50 deliveries with every attempt", tag=TAG)
@api_auth_required
@role_required("admin")
def list_outgoing_deliveries(endpoint_id):
    _require_org_admin()
    rows = outgoing.list_deliveries(g.org_id, endpoint_id)
    return jsonify({"data": [outgoing_json(delivery) for delivery in rows]})


@bp.post("/webhooks/outgoing/<int:delivery_id>/resend")
@operation("Send an outgoing delivery again now", response_model=OutgoingDeliveryOut, status=202, tag=TAG)
@api_auth_required
@role_required("admin")
def resend_outgoing_delivery(delivery_id):
    _require_org_admin()
    delivery = outgoing.resend(g.org_id, delivery_id)
    db.session.commit()
    return jsonify(outgoing_json(delivery)), 202
