"""Outgoing webhooks: signed deliveries, retries with backoff, logs, resend, disabling, isolation.

Attempts run in the test process (`attempt_delivery`), because only this process's app allows
requests to 127.0.0.1; the jobs queued after each commit are dropped before it.
"""

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.extensions import db
from app.timeutil import utcnow
from app.webhooks import outgoing
from app.webhooks.models import OutgoingDelivery, WebhookEndpoint
from app.webhooks.signatures import InvalidSignature, verify_timestamped
from app.workflows.scheduler import Scheduler


class Receiver:
    """A server on 127.0.0.1 that responds with the statuses in `script` in turn, then 200."""

    def __init__(self, script=()):
        self.script = list(script)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver_factory():
    started = []

    def start(script=()):
        receiver = Receiver(script)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def hook_app(app):
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
    return app


@pytest.fixture
def admin(make_user, make_api_key):
    user = make_user()
    return {**user, "headers": {"Authorization": f"Bearer {make_api_key(user)}"}}


def register(client, admin, url, events=("*",)):
    response = client.post(
        "/api/v1/webhooks/endpoints", json={"url": url, "events": list(events)}, headers=admin["headers"]
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def emit(app, org_id, event_type="workflow_run.succeeded", data=None):
    """Create deliveries without queueing their jobs; return their ids."""
    with app.app_context():
        outgoing.emit(org_id, event_type, data or {"run_id": 7})
        db.session.info.pop("floyo_pending_jobs", None)
        db.session.commit()
        return db.session.scalars(db.select(OutgoingDelivery.id).order_by(OutgoingDelivery.id)).all()


def attempt(app, delivery_id, now):
    with app.app_context():
        return outgoing.attempt_delivery(delivery_id, now=now)


def claim_due(app, now):
    with app.app_context():
        return outgoing.claim_due_deliveries(now)


def load(app, model, row_id):
    with app.app_context():
        row = db.session.get(model, row_id)
        db.session.expunge(row)
        return row


def test_retries_until_success(hook_app, client, admin, receiver_factory):
    receiver = receiver_factory([500, 503])
    endpoint = register(client, admin, receiver.url)
    [delivery_id] = emit(hook_app, admin["org_id"], data={"run_id": 7, "name": "Zoë"})
    start = utcnow()

    first = attempt(hook_app, delivery_id, start)
    after_first = load(hook_app, OutgoingDelivery, delivery_id)
    too_early = claim_due(hook_app, start + timedelta(seconds=30))
    claimed_second = claim_due(hook_app, start + timedelta(seconds=61))
    second = attempt(hook_app, delivery_id, start + timedelta(seconds=61))
    after_second = load(hook_app, OutgoingDelivery, delivery_id)
    claimed_third = claim_due(hook_app, start + timedelta(seconds=182))
    third = attempt(hook_app, delivery_id, start + timedelta(seconds=182))

    assert first == "pending"
    assert after_first.next_attempt_at == start + timedelta(seconds=60)
    assert too_early == []
    assert claimed_second == [delivery_id]
    assert second == "pending"
    assert after_second.next_attempt_at == start + timedelta(seconds=61 + 120)
    assert claimed_third == [delivery_id]
    assert third == "succeeded"
    delivery = load(hook_app, OutgoingDelivery, delivery_id)
    assert delivery.attempts == 3
    assert [entry["status_code"] for entry in delivery.log] == [500, 503, 200]
    assert delivery.log[0]["error"] == "The endpoint answered HTTP 500."
    assert all(isinstance(entry["duration_ms"], int) for entry in delivery.log)
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        verify_timestamped(request["body"], request["headers"]["Floyo-Signature"], endpoint["secret"], 300)
        assert request["headers"]["Floyo-Event"] == "workflow_run.succeeded"
    body = json.loads(receiver.requests[-1]["body"])
    assert body["type"] == "workflow_run.succeeded"
    assert body["data"] == {"run_id": 7, "name": "Zoë"}


def test_signature_fails_with_other_secret(hook_app, client, admin, receiver_factory):
    receiver = receiver_factory()
    register(client, admin, receiver.url)
    [delivery_id] = emit(hook_app, admin["org_id"])

    attempt(hook_app, delivery_id, utcnow())

    [request] = receiver.requests
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_timestamped(request["body"], request["headers"]["Floyo-Signature"], "whsec_other", 300)


def test_failing_endpoint_is_disabled(hook_app, client, admin, receiver_factory):
    hook_app.config.update(OUTGOING_WEBHOOK_MAX_ATTEMPTS=1, OUTGOING_WEBHOOK_DISABLE_AFTER=2)
    receiver = receiver_factory([500, 500, 500])
    endpoint = register(client, admin, receiver.url)

    [first] = emit(hook_app, admin["org_id"])
    attempt(hook_app, first, utcnow())
    still_enabled = load(hook_app, WebhookEndpoint, endpoint["id"]).enabled
    [_, second] = emit(hook_app, admin["org_id"])
    attempt(hook_app, second, utcnow())
    after = emit(hook_app, admin["org_id"])
    page = client.get(f"/api/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=admin["headers"])

    assert still_enabled is True
    disabled = load(hook_app, WebhookEndpoint, endpoint["id"])
    assert disabled.enabled is False
    assert "Disabled after 2 deliveries in a row failed" in disabled.disabled_reason
    assert after == [first, second]
    assert [item["status"] for item in page.get_json()["data"]] == ["failed", "failed"]


def test_resend_by_hand(hook_app, client, admin, receiver_factory):
    hook_app.config["OUTGOING_WEBHOOK_MAX_ATTEMPTS"] = 1
    receiver = receiver_factory([500])
    register(client, admin, receiver.url)
    [delivery_id] = emit(hook_app, admin["org_id"])
    attempt(hook_app, delivery_id, utcnow())

    with hook_app.app_context():
        outgoing.resend(admin["org_id"], delivery_id)
        db.session.info.pop("floyo_pending_jobs", None)
        db.session.commit()
    result = attempt(hook_app, delivery_id, utcnow())

    assert result == "succeeded"
    delivery = load(hook_app, OutgoingDelivery, delivery_id)
    assert [entry["status_code"] for entry in delivery.log] == [500, 200]
    assert len(receiver.requests) == 2


def test_blocked_address_is_logged(app, client, admin):
    register(client, admin, "http://127.0.0.1:9/hooks")
    app.config["OUTGOING_WEBHOOK_MAX_ATTEMPTS"] = 1
    [delivery_id] = emit(app, admin["org_id"])

    result = attempt(app, delivery_id, utcnow())

    assert result == "failed"
    delivery = load(app, OutgoingDelivery, delivery_id)
    assert delivery.log[0]["status_code"] is None
    assert "not allowed" in delivery.log[0]["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
        ({"url": "https://example.com/x", "events": []}, "events"),
        ({"url": "https://example.com/x", "events": ["run.exploded"]}, "events"),
        ({"events": ["*"]}, "url"),
    ],
)
def test_invalid_endpoint_rejected(app, client, admin, body, field):
    response = client.post("/api/v1/webhooks/endpoints", json=body, headers=admin["headers"])

    assert response.status_code == 422
    assert field in json.dumps(response.get_json()["error"])
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(WebhookEndpoint.id))) == 0


def test_other_org_cannot_touch_endpoints(hook_app, client, admin, make_user, make_api_key, receiver_factory):
    endpoint = register(client, admin, receiver_factory().url)
    [delivery_id] = emit(hook_app, admin["org_id"])
    other = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(other)}"}

    listing = client.get("/api/v1/webhooks/endpoints", headers=headers)
    deliveries = client.get(f"/api/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=headers)
    resend = client.post(f"/api/v1/webhooks/outgoing/{delivery_id}/resend", headers=headers)
    delete = client.delete(f"/api/v1/webhooks/endpoints/{endpoint['id']}", headers=headers)

    assert listing.get_json()["data"] == []
    assert deliveries.status_code == 404
    assert resend.status_code == 404
    assert delete.status_code == 404
    assert load(hook_app, WebhookEndpoint, endpoint["id"]).enabled is True


def test_endpoint_page_shows_secret_once(app, client, admin, auth):
    auth.signin(admin["email"])

    created = client.post("/webhooks/endpoints", data={"url": "https://example.com/hooks", "events": ["*"]})
    page = client.get("/webhooks/endpoints")

    assert created.status_code == 201
    assert b"whsec_" in created.data
    assert b"https://example.com/hooks" in page.data
    assert b"whsec_" not in page.data


def test_scheduler_round_sends_due_retry(hook_app, client, admin, receiver_factory, wait_for_jobs):
    receiver = receiver_factory([500])
    register(client, admin, receiver.url)
    [delivery_id] = emit(hook_app, admin["org_id"])
    attempt(hook_app, delivery_id, utcnow() - timedelta(minutes=5))

    Scheduler(hook_app).tick()
    wait_for_jobs()
    deadline = time.monotonic() + 60
    while load(hook_app, OutgoingDelivery, delivery_id).attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    # The embedded worker shares this app's allow-list and reaches the receiver; a full-mode
    # worker process does not, and logs the blocked address. Either way one more attempt ran.
    delivery = load(hook_app, OutgoingDelivery, delivery_id)
    assert delivery.attempts == 2
    assert len(delivery.log) == 2
