"""Billing: Checkout against a fake Stripe server, the customer portal, plan limits and roles."""

import io
import json
import time

import pytest

from app.billing.models import BillingAccount
from app.events.models import Event
from app.extensions import db
from app.files.models import File
from app.orgs.models import Membership
from app.webhooks.models import WebhookDelivery
from tests.fake_stripe import FakeStripe, sign

API_KEY = "sk_test_fake_key"
WEBHOOK_SECRET = "whsec_billing_tests"
PRO_MONTHLY = "price_pro_monthly_test"


@pytest.fixture
def fake_stripe(shared_data):
    fake = FakeStripe(shared_data, API_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def billing_app(app, fake_stripe):
    """The app with Stripe pointed at the fake server, and small Free limits to reach in a test."""
    app.config.update(
        STRIPE_SECRET_KEY=API_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, STRIPE_API_BASE=fake_stripe.base_url
    )
    plans = app.config["BILLING_PLANS"]
    plans["pro"]["prices"]["monthly"] = PRO_MONTHLY
    plans["free"]["limits"].update(events_per_month=5, workflows=1, api_calls_per_month=1000)
    return app


@pytest.fixture
def settle(app, wait_for_jobs):
    """Wait until the queue is empty and every webhook delivery has been processed."""

    def wait(timeout=60):
        wait_for_jobs(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with app.app_context():
                waiting = db.session.scalar(
                    db.select(db.func.count(WebhookDelivery.id)).where(WebhookDelivery.status == "received")
                )
            if not waiting:
                return
            time.sleep(0.1)
        raise AssertionError("webhook deliveries were not processed in time")

    return wait


def deliver(client, event):
    payload = json.dumps(event, indent=2).encode()
    headers = {"Stripe-Signature": sign(payload, WEBHOOK_SECRET)}
    response = client.post("/api/v1/webhooks/stripe", data=payload, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response


def event_batch(count, prefix="e"):
    return {
        "events": [
            {
                "type": "file_modified",
                "path": f"src/{prefix}{index}.py",
                "tool": "vim",
                "occurred_at": "2025-02-13T09:16:25Z",
                "event_id": f"{prefix}-{index}",
            }
            for index in range(count)
        ]
    }


def stored_events(app, org_id):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Event.id)).where(Event.org_id == org_id))


def checkout(client, plan="pro", interval="monthly"):
    return client.post("/billing/checkout", data={"plan": plan, "interval": interval})


def test_checkout_to_pro_subscription(billing_app, client, make_user, auth, fake_stripe, settle):
    user = make_user()
    auth.signin(user["email"])

    page = client.get("/billing")
    started = checkout(client)
    session_id = started.headers["Location"].rsplit("/", 1)[1]
    for event in fake_stripe.complete_checkout(session_id):
        deliver(client, event)
    settle()
    after = client.get("/billing")

    assert page.status_code == 200
    assert b"Plan: Free" in page.data
    assert b"Upgrade to Pro" in page.data
    assert started.status_code == 303
    assert started.headers["Location"].startswith(fake_stripe.base_url + "/pay/")
    [customer_call] = [call for call in fake_stripe.requests if call["path"] == "/v1/customers"]
    assert customer_call["form"]["metadata[org_id]"] == str(user["org_id"])
    [session_call] = [call for call in fake_stripe.requests if call["path"] == "/v1/checkout/sessions"]
    assert session_call["form"]["line_items[0][price]"] == PRO_MONTHLY
    assert session_call["form"]["mode"] == "subscription"
    assert session_call["form"]["client_reference_id"] == str(user["org_id"])
    assert b"Plan: Pro" in after.data
    assert b"Renews on" in after.data
    assert b"FAKE-" in after.data
    assert b"1,000,000" in after.data
    with billing_app.app_context():
        account = db.session.get(BillingAccount, user["org_id"])
        assert account.plan == "pro"
        assert account.stripe_customer_id.startswith("cus_")
        assert account.subscription.status == "active"
        assert account.subscription.interval == "monthly"


def test_checkout_reuses_the_customer(billing_app, client, make_user, auth, fake_stripe):
    user = make_user()
    auth.signin(user["email"])

    first = checkout(client)
    second = checkout(client, interval="monthly")

    assert first.status_code == 303
    assert second.status_code == 303
    customer_calls = [call for call in fake_stripe.requests if call["path"] == "/v1/customers"]
    assert len(customer_calls) == 1
    sessions = [call for call in fake_stripe.requests if call["path"] == "/v1/checkout/sessions"]
    assert sessions[0]["form"]["customer"] == sessions[1]["form"]["customer"]


def test_checkout_rejects_unconfigured_interval(billing_app, client, make_user, auth, fake_stripe):
    user = make_user()
    auth.signin(user["email"])

    response = checkout(client, interval="yearly")
    page = client.get("/billing")

    assert response.status_code == 302
    assert b"has no yearly price set up" in page.data
    assert fake_stripe.requests == []


def test_checkout_needs_owner(billing_app, client, make_user, auth, fake_stripe):
    owner = make_user()
    member = make_user()
    with billing_app.app_context():
        db.session.add(Membership(org_id=owner["org_id"], user_id=member["id"], role="member"))
        db.session.commit()
    auth.signin(member["email"])
    with client.session_transaction() as session:
        session["org_id"] = owner["org_id"]

    page = client.get("/billing")
    response = checkout(client)

    assert page.status_code == 200
    assert b"Only an owner of this organization can change its plan" in page.data
    assert b"Upgrade to Pro" not in page.data
    assert response.status_code == 403
    assert b"needs the owner role" in response.data
    assert fake_stripe.requests == []


def test_portal_redirects_to_stripe(billing_app, client, make_user, auth, fake_stripe):
    user = make_user()
    auth.signin(user["email"])
    checkout(client)

    response = client.post("/billing/portal")

    assert response.status_code == 303
    assert response.headers["Location"].startswith(fake_stripe.base_url + "/portal/")
    [portal_call] = [call for call in fake_stripe.requests if call["path"] == "/v1/billing_portal/sessions"]
    assert portal_call["form"]["customer"].startswith("cus_")


def test_event_limit_stops_then_upgrade_lifts(billing_app, client, make_user, make_api_key, auth, fake_stripe, settle):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    auth.signin(user["email"])

    within = client.post("/api/v1/events/batch", json=event_batch(4, "a"), headers=headers)
    over = client.post("/api/v1/events/batch", json=event_batch(2, "b"), headers=headers)
    session_id = checkout(client).headers["Location"].rsplit("/", 1)[1]
    for event in fake_stripe.complete_checkout(session_id):
        deliver(client, event)
    settle()
    after_upgrade = client.post("/api/v1/events/batch", json=event_batch(2, "b"), headers=headers)

    assert within.status_code == 200
    assert over.status_code == 402
    error = over.get_json()["error"]
    assert error["code"] == "plan_limit_reached"
    assert "The Free plan allows 5 events this month" in error["message"]
    assert "Upgrade the plan at /billing" in error["message"]
    assert error["details"]["upgrade_url"] == "/billing"
    assert error["details"]["allowed"] == 5
    assert error["details"]["used"] == 4
    assert after_upgrade.status_code == 200
    assert stored_events(billing_app, user["org_id"]) == 6


def test_usage_warning_at_80_percent(billing_app, client, make_user, make_api_key, auth):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    auth.signin(user["email"])
    client.post("/api/v1/events/batch", json=event_batch(3), headers=headers)
    before = client.get("/billing")

    client.post("/api/v1/events/batch", json=event_batch(1, "x"), headers=headers)
    after = client.get("/billing")

    assert b"3 of 5" in before.data
    assert b"60 % used" not in before.data
    assert b"4 of 5" in after.data
    assert b"80 % used" in after.data


def test_workflow_limit_answers_402(billing_app, client, make_user, make_api_key):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    document = {
        "name": "Copy",
        "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "transform", "config": {}}],
    }

    first = client.post("/api/v1/workflows", json={"definition": document}, headers=headers)
    second = client.post("/api/v1/workflows", json={"definition": document}, headers=headers)

    assert first.status_code == 201
    assert second.status_code == 402
    assert second.get_json()["error"]["code"] == "plan_limit_reached"
    assert "allows 1 workflows" in second.get_json()["error"]["message"]


def test_api_call_limit_answers_402(billing_app, client, make_user, make_api_key):
    billing_app.config["BILLING_PLANS"]["free"]["limits"]["api_calls_per_month"] = 2
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}

    responses = [client.get("/api/v1/events", headers=headers) for _ in range(3)]

    assert [response.status_code for response in responses] == [200, 200, 402]
    assert "API calls this month" in responses[2].get_json()["error"]["message"]


def test_without_stripe_keys_pages_say_so(app, client, make_user, make_api_key, auth):
    app.config["BILLING_PLANS"]["free"]["limits"]["events_per_month"] = 2
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    auth.signin(user["email"])

    page = client.get("/billing")
    ingest = client.post("/api/v1/events/batch", json=event_batch(3), headers=headers)
    upgrade = checkout(client)

    assert page.status_code == 200
    assert b"Billing is not set up on this server" in page.data
    assert b"Upgrade to Pro" not in page.data
    assert ingest.status_code == 200
    assert stored_events(app, user["org_id"]) == 3
    assert upgrade.status_code == 302
    assert b"STRIPE_SECRET_KEY is empty" in client.get("/billing").data


def test_billing_api_shows_own_org(billing_app, client, make_user, make_api_key):
    user = make_user()
    other = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    other_headers = {"Authorization": f"Bearer {make_api_key(other)}"}
    client.post("/api/v1/events/batch", json=event_batch(4), headers=headers)

    mine = client.get("/api/v1/billing", headers=headers).get_json()
    theirs = client.get("/api/v1/billing", headers=other_headers).get_json()

    usage = {row["metric"]: row for row in mine["usage"]}
    assert mine["plan"] == "free"
    assert mine["billing_enabled"] is True
    assert mine["upgrade_url"] == "/billing"
    assert usage["events_per_month"]["used"] == 4
    assert usage["events_per_month"]["limit"] == 5
    assert usage["events_per_month"]["warning"] is True
    assert {row["metric"]: row["used"] for row in theirs["usage"]}["events_per_month"] == 0


def test_storage_limit_stops_upload(billing_app, client, make_user, make_api_key):
    billing_app.config["BILLING_PLANS"]["free"]["limits"]["storage_bytes"] = 10
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    data = {"file": (io.BytesIO(b"twenty bytes of text"), "notes.txt", "text/plain")}

    response = client.post("/api/v1/files/upload", data=data, headers=headers, content_type="multipart/form-data")

    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "plan_limit_reached"
    assert "file storage" in response.get_json()["error"]["message"]
    with billing_app.app_context():
        assert db.session.scalar(db.select(db.func.count(File.id))) == 0
