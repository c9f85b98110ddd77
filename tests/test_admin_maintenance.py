"""Maintenance mode: a banner, writes rejected with 503 and Retry-After, admins, sign-in and webhooks unaffected."""

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.admin.models import AuditEntry
from app.extensions import db
from app.timeutil import isoformat, utcnow

EVENT = {"type": "file_opened", "path": "notes/todo.md", "occurred_at": "2025-02-13T09:16:00+01:00"}


@pytest.fixture
def admin_key(make_user, make_api_key):
    admin = make_user(email="admin@example.com", is_admin=True)
    return {"Authorization": f"Bearer {make_api_key(admin)}"}


def _turn_on(client, headers, **body):
    response = client.post("/api/v1/admin/maintenance", headers=headers, json={"enabled": True, **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_api_turns_maintenance_on_and_off(client, admin_key):
    ends_at = (utcnow() + timedelta(hours=1)).replace(microsecond=0)

    started = _turn_on(client, admin_key, message="Upgrading the database.", ends_at=isoformat(ends_at))
    read = client.get("/api/v1/admin/maintenance", headers=admin_key).get_json()
    stopped = client.post("/api/v1/admin/maintenance", headers=admin_key, json={"enabled": False}).get_json()

    assert started["enabled"] is True
    assert started["message"] == "Upgrading the database."
    assert started["ends_at"] == isoformat(ends_at)
    assert read == started
    assert stopped == {"enabled": False}
    with client.application.app_context():
        actions = db.session.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action.like("maintenance.%")).order_by(AuditEntry.id)
        ).all()
    assert actions == ["maintenance.started", "maintenance.ended"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": True, "ends_at": "tomorrow"}, "ends_at"),
        ({"enabled": True, "ends_at": "2025-03-01T18:00:00"}, "ends_at"),
        ({"enabled": True, "message": "x" * 501}, "message"),
        ({"message": "no switch"}, "enabled"),
    ],
)
def test_api_rejects_invalid_switch(client, admin_key, body, field):
    response = client.post("/api/v1/admin/maintenance", headers=admin_key, json=body)

    assert response.status_code == 422
    assert field in response.get_json()["error"]["message"]
    assert client.get("/api/v1/admin/maintenance", headers=admin_key).get_json() == {"enabled": False}


def test_api_rejects_end_in_past(client, admin_key):
    past = isoformat(utcnow() - timedelta(minutes=5))

    response = client.post("/api/v1/admin/maintenance", headers=admin_key, json={"enabled": True, "ends_at": past})

    assert response.status_code == 422
    assert "already passed" in response.get_json()["error"]["message"]


def test_writes_rejected_with_retry_after(client, admin_key, make_user, make_api_key):
    user = make_user()
    user_key = {"Authorization": f"Bearer {make_api_key(user)}"}
    _turn_on(client, admin_key, ends_at=isoformat(utcnow() + timedelta(minutes=10)))

    response = client.post("/api/v1/events", headers=user_key, json=EVENT)

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "maintenance"
    assert 590 <= int(response.headers["Retry-After"]) <= 600
    assert client.get("/api/v1/events", headers=user_key).get_json()["data"] == []


def test_retry_after_defaults_without_end(client, admin_key, make_user, make_api_key):
    user = make_user()
    _turn_on(client, admin_key)

    response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {make_api_key(user)}"}, json=EVENT)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "300"


def test_page_writes_rejected_but_reads_allowed(client, auth, admin_key, make_user):
    user = make_user()
    auth.signin(user["email"])
    _turn_on(client, admin_key, message="Back at six.")

    page = client.get("/settings")
    write = client.post("/settings/api-keys", data={"name": "laptop"})

    assert page.status_code == 200
    assert b'id="maintenance-banner"' in page.data
    assert b"Back at six." in page.data
    assert write.status_code == 503
    assert b"Back at six." in write.data


def test_banner_shown_signed_out(client, admin_key):
    _turn_on(client, admin_key, message="Back at six.")

    response = client.get("/signin")

    assert b'id="maintenance-banner"' in response.data


def test_no_banner_when_off(client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])

    assert b'id="maintenance-banner"' not in client.get("/settings").data


def test_admin_writes_allowed(client, admin_key):
    _turn_on(client, admin_key)

    response = client.post("/api/v1/events", headers=admin_key, json=EVENT)

    assert response.status_code == 201


def test_admin_session_writes_allowed(client, auth, make_user):
    admin = make_user(email="root@example.com", is_admin=True)
    auth.signin(admin["email"])
    client.post("/admin/maintenance", data={"message": "Moving servers."})

    response = client.post("/settings/api-keys", data={"name": "laptop"})

    assert response.status_code == 302
    assert b"Moving servers." in client.get("/admin").data


def test_signin_allowed_during_maintenance(client, admin_key, make_user):
    user = make_user()
    _turn_on(client, admin_key)

    response = client.post("/signin", data={"email": user["email"], "password": user["password"]})

    assert response.status_code == 302


def test_console_switch_with_end_time(client, auth, make_user):
    admin = make_user(email="root@example.com", is_admin=True)
    auth.signin(admin["email"])
    ends_at = (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")

    client.post("/admin/maintenance", data={"message": "", "ends_at": ends_at})
    on = client.get("/admin")
    client.post("/admin/maintenance/end")
    off = client.get("/admin")

    assert b"Expected to end at" in on.data
    assert b"Floyo is down for maintenance" in on.data
    assert b'id="maintenance-banner"' not in off.data


def test_console_switch_rejects_bad_end_time(client, auth, make_user):
    admin = make_user(email="root@example.com", is_admin=True)
    auth.signin(admin["email"])

    response = client.post("/admin/maintenance", data={"message": "", "ends_at": "soon"}, follow_redirects=True)

    assert b"is not an ISO 8601 time" in response.data
    assert b'id="maintenance-banner"' not in response.data


def test_workers_keep_running(client, make_user, make_api_key, wait_for_jobs):
    """A job queued while maintenance is on (by an admin's write) is run by the workers."""
    admin = make_user(email="admin@example.com", is_admin=True)
    admin_key = {"Authorization": f"Bearer {make_api_key(admin)}"}
    _turn_on(client, admin_key)

    assert client.post("/api/v1/events", headers=admin_key, json=EVENT).status_code == 201
    wait_for_jobs()

    from app.insights.models import AnalysisState

    # A worker process of the full mode may still be starting when the queue first reads empty.
    deadline = time.monotonic() + 30
    while True:
        with client.application.app_context():
            state = db.session.get(AnalysisState, admin["org_id"])
        if state.finished_at is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert state.error is None
    assert state.events_analyzed == 1


def test_stripe_webhook_stored_and_processed(client, admin_key, shared_data, wait_for_jobs):
    fake_stripe = pytest.importorskip("tests.fake_stripe")
    from app.webhooks.models import WebhookDelivery

    secret = "whsec_test_secret"
    client.application.config.update(STRIPE_WEBHOOK_SECRET=secret)
    samples = fake_stripe.FakeStripe(shared_data, "sk_test_unused")
    event = samples.event("customer.updated", samples.sample("customer"))
    payload = json.dumps(event).encode()
    _turn_on(client, admin_key)

    response = client.post(
        "/api/v1/webhooks/stripe",
        data=payload,
        headers={"Stripe-Signature": fake_stripe.sign(payload, secret, None)},
        content_type="application/json",
    )
    wait_for_jobs()

    assert response.status_code == 200
    deadline = time.monotonic() + 30
    while True:
        with client.application.app_context():
            delivery = db.session.scalar(sa.select(WebhookDelivery))
            status = delivery.status
        if status != "received" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert delivery.event_id == event["id"]
    assert status in ("processed", "ignored")


def test_cli_turns_maintenance_on_and_off(app, make_user):
    admin = make_user(email="root@example.com", is_admin=True)
    make_user(email="ada@example.com")
    runner = app.test_cli_runner()

    refused = runner.invoke(args=["floyo", "maintenance", "on", "--email", "ada@example.com"])
    started = runner.invoke(args=["floyo", "maintenance", "on", "--email", admin["email"], "--message", "Deploying."])
    status = runner.invoke(args=["floyo", "maintenance", "status"])
    stopped = runner.invoke(args=["floyo", "maintenance", "off", "--email", admin["email"]])

    assert refused.exit_code == 1
    assert "site admin" in refused.output
    assert started.exit_code == 0, started.output
    assert "Maintenance mode is on: Deploying." in status.output
    assert stopped.exit_code == 0
    assert "Maintenance mode is off." in runner.invoke(args=["floyo", "maintenance", "status"]).output
    with app.app_context():
        actions = db.session.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action.like("maintenance.%")).order_by(AuditEntry.id)
        ).all()
    assert actions == ["maintenance.started", "maintenance.ended"]
