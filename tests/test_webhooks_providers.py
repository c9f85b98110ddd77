"""Incoming webhooks of other providers (GitHub and generic HMAC), and the delivery history."""

import hashlib
import hmac
import json
import time

import pytest

from app.extensions import db
from app.orgs.models import Membership
from app.webhooks.models import WebhookDelivery
from app.webhooks.signatures import sign_timestamped
from app.workflows.models import WorkflowRun

GITHUB_SECRET = "github-secret"
PAYMENT_SECRET = "payment-secret"


@pytest.fixture
def provider_app(app):
    app.config["WEBHOOK_PROVIDERS"] = {
        "github": {"secret": GITHUB_SECRET, "scheme": "github"},
        "payment": {"secret": PAYMENT_SECRET, "scheme": "hmac"},
    }
    return app


@pytest.fixture
def settle(app, wait_for_jobs):
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


def github_headers(body, secret=GITHUB_SECRET, delivery="d-1", event="push"):
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": delivery, "X-GitHub-Event": event}


def deliveries(app):
    with app.app_context():
        return db.session.scalars(db.select(WebhookDelivery).order_by(WebhookDelivery.id)).all()


def test_github_signature_accepted(provider_app, client, settle):
    body = json.dumps({"ref": "refs/heads/main", "pusher": {"name": "Zoë"}}, indent=2, ensure_ascii=False).encode()

    response = client.post("/api/v1/webhooks/github", data=body, headers=github_headers(body))
    settle()

    assert response.status_code == 200
    [delivery] = deliveries(provider_app)
    assert delivery.provider == "github"
    assert delivery.event_id == "d-1"
    assert delivery.event_type == "push"
    assert delivery.body == body


@pytest.mark.parametrize("case", ["missing header", "wrong secret", "changed body", "wrong scheme"])
def test_github_bad_signature_rejected(provider_app, client, case):
    body = b'{"ref": "refs/heads/main"}'
    headers = {
        "missing header": {"X-GitHub-Delivery": "d-1"},
        "wrong secret": github_headers(body, secret="other"),
        "changed body": github_headers(b'{"ref": "refs/heads/dev"}'),
        "wrong scheme": {"X-Hub-Signature-256": "sha1=" + "0" * 40},
    }[case]

    response = client.post("/api/v1/webhooks/github", data=body, headers=headers)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert deliveries(provider_app) == []


def test_generic_signature_accepted(provider_app, client, settle):
    body = b'{"id": "pay_1", "type": "payment.succeeded", "amount": 1200}'
    headers = {"Webhook-Signature": sign_timestamped(PAYMENT_SECRET, body)}

    first = client.post("/api/v1/webhooks/payment", data=body, headers=headers)
    second = client.post("/api/v1/webhooks/payment", data=body, headers=headers)
    settle()

    assert first.status_code == 200
    assert first.get_json()["duplicate"] is False
    assert second.get_json()["duplicate"] is True
    [delivery] = deliveries(provider_app)
    assert delivery.provider == "payment"
    assert delivery.event_id == "pay_1"
    assert delivery.event_type == "payment.succeeded"


@pytest.mark.parametrize("case", ["missing header", "wrong secret", "old timestamp", "no timestamp"])
def test_generic_bad_signature_rejected(provider_app, client, case):
    body = b'{"id": "pay_2", "type": "payment.failed"}'
    headers = {
        "missing header": {},
        "wrong secret": {"Webhook-Signature": sign_timestamped("other", body)},
        "old timestamp": {"Webhook-Signature": sign_timestamped(PAYMENT_SECRET, body, time.time() - 3600)},
        "no timestamp": {"Webhook-Signature": "v1=" + "0" * 64},
    }[case]

    response = client.post("/api/v1/webhooks/payment", data=body, headers=headers)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert deliveries(provider_app) == []


def test_unknown_provider_is_404(provider_app, client):
    body = b"{}"

    response = client.post("/api/v1/webhooks/gitlab", data=body, headers={"Webhook-Signature": "t=1,v1=0"})

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_provider"
    assert deliveries(provider_app) == []


def test_provider_delivery_starts_workflow(provider_app, client, make_user, make_api_key, settle, wait_for_jobs):
    user = make_user()
    provider_app.config["WEBHOOK_PROVIDERS"]["github"]["org_id"] = user["org_id"]
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    document = {
        "name": "On push",
        "trigger": {"type": "webhook", "provider": "github"},
        "steps": [{"id": "a", "type": "transform", "config": {}}],
    }
    created = client.post("/api/v1/workflows", json={"definition": document}, headers=headers)
    body = b'{"ref": "refs/heads/main"}'

    client.post("/api/v1/webhooks/github", data=body, headers=github_headers(body))
    settle()
    wait_for_jobs()

    assert created.status_code == 201
    assert created.get_json()["definition"]["trigger"] == {"type": "webhook", "provider": "github"}
    [delivery] = deliveries(provider_app)
    assert delivery.status == "processed"
    assert delivery.org_id == user["org_id"]
    with provider_app.app_context():
        [run] = db.session.scalars(db.select(WorkflowRun)).all()
        assert run.trigger_type == "webhook"
        assert run.input == {"provider": "github", "type": "push", "body": {"ref": "refs/heads/main"}}


@pytest.fixture
def two_orgs(provider_app, client, make_user, make_api_key, settle):
    """Two organizations with one provider delivery each; returns their users with API headers."""
    users = []
    for number in (1, 2):
        user = make_user()
        provider_app.config["WEBHOOK_PROVIDERS"][f"shop{number}"] = {
            "secret": "s",
            "scheme": "hmac",
            "org_id": user["org_id"],
        }
        body = json.dumps({"id": f"order-{number}", "type": "order.paid"}).encode()
        client.post(
            f"/api/v1/webhooks/shop{number}", data=body, headers={"Webhook-Signature": sign_timestamped("s", body)}
        )
        users.append({**user, "headers": {"Authorization": f"Bearer {make_api_key(user)}"}})
    settle()
    return users


def test_history_lists_own_org_only(client, two_orgs):
    first, second = two_orgs

    response = client.get("/api/v1/webhooks/history", headers=first["headers"])

    assert response.status_code == 200
    items = response.get_json()["data"]
    assert [item["provider"] for item in items] == ["shop1"]
    assert items[0]["status"] == "ignored"
    assert items[0]["attempts"] == 1
    assert "body" not in items[0] or items[0]["body"] is None


def test_history_other_org_gets_404(client, two_orgs):
    first, second = two_orgs
    own = client.get("/api/v1/webhooks/history", headers=first["headers"]).get_json()["data"][0]

    detail = client.get(f"/api/v1/webhooks/history/{own['id']}", headers=second["headers"])
    replay = client.post(f"/api/v1/webhooks/history/{own['id']}/replay", headers=second["headers"])
    everything = client.get("/api/v1/webhooks/history?all=1", headers=second["headers"])

    assert detail.status_code == 404
    assert replay.status_code == 404
    assert everything.status_code == 403


def test_history_raw_payload_and_replay(provider_app, client, two_orgs, settle):
    first, _ = two_orgs
    own = client.get("/api/v1/webhooks/history", headers=first["headers"]).get_json()["data"][0]

    detail = client.get(f"/api/v1/webhooks/history/{own['id']}?include=body", headers=first["headers"])
    replay = client.post(f"/api/v1/webhooks/history/{own['id']}/replay", headers=first["headers"])
    settle()
    after = client.get(f"/api/v1/webhooks/history/{own['id']}", headers=first["headers"])

    assert json.loads(detail.get_json()["body"]) == {"id": "order-1", "type": "order.paid"}
    assert detail.get_json()["body_encoding"] == "utf-8"
    assert replay.status_code == 202
    assert after.get_json()["attempts"] == 2
    assert after.get_json()["status"] == "ignored"


def test_history_needs_org_admin(provider_app, client, two_orgs, make_user, make_api_key):
    first, _ = two_orgs
    viewer = make_user()
    with provider_app.app_context():
        db.session.add(Membership(org_id=first["org_id"], user_id=viewer["id"], role="member"))
        db.session.commit()
    headers = {"Authorization": f"Bearer {make_api_key({**viewer, 'org_id': first['org_id']})}"}

    response = client.get("/api/v1/webhooks/history", headers=headers)

    assert response.status_code == 403


def test_site_admin_sees_all(provider_app, client, two_orgs, make_user, make_api_key, auth):
    admin = make_user(is_admin=True)
    headers = {"Authorization": f"Bearer {make_api_key(admin)}"}
    auth.signin(admin["email"])

    response = client.get("/api/v1/webhooks/history?all=1", headers=headers)
    page = client.get("/webhooks?all=1")

    assert sorted(item["provider"] for item in response.get_json()["data"]) == ["shop1", "shop2"]
    assert page.status_code == 200
    assert b"shop1" in page.data
    assert b"shop2" in page.data


def test_history_page_for_org_admin(client, two_orgs, auth):
    first, _ = two_orgs
    auth.signin(first["email"])

    page = client.get("/webhooks")
    own = client.get("/api/v1/webhooks/history", headers=first["headers"]).get_json()["data"][0]
    detail = client.get(f"/webhooks/{own['id']}")

    assert page.status_code == 200
    assert b"shop1" in page.data
    assert b"shop2" not in page.data
    assert b"order-1" in detail.data
