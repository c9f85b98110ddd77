"""The Stripe webhook: signature checks on the raw bytes, storage, idempotency and event ordering."""

import json
import time

import pytest

from app.billing.models import BillingAccount, Invoice, Subscription
from app.extensions import db
from app.webhooks.models import WebhookDelivery
from tests.fake_stripe import FakeStripe, sign

SECRET = "whsec_test_secret"
URL = "/api/v1/webhooks/stripe"


@pytest.fixture
def stripe_app(app):
    app.config.update(STRIPE_WEBHOOK_SECRET=SECRET)
    return app


@pytest.fixture
def settle(app, wait_for_jobs):
    """Wait for the queue, then until no delivery is left unprocessed.

    In the full mode a worker process can still be starting when the queue first reads empty.
    """

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


@pytest.fixture
def samples(shared_data):
    """Builders of Stripe-shaped objects and events; the fake server is not started."""
    return FakeStripe(shared_data, "sk_test_unused")


def deliver(client, event, secret=SECRET, timestamp=None, body=None):
    payload = body if body is not None else json.dumps(event, indent=2, ensure_ascii=False).encode("utf-8")
    return client.post(
        URL,
        data=payload,
        headers={"Stripe-Signature": sign(payload, secret, timestamp)},
        content_type="application/json",
    )


def link_customer(app, org_id, customer_id):
    with app.app_context():
        db.session.add(BillingAccount(org_id=org_id, stripe_customer_id=customer_id, plan="free"))
        db.session.commit()


def stored(app, model, **filters):
    with app.app_context():
        return db.session.scalars(db.select(model).filter_by(**filters)).all()


def delivery_count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(WebhookDelivery.id)))


def test_pretty_printed_non_ascii_body_verifies(stripe_app, client, samples, settle):
    customer = samples.sample("customer")
    customer["name"] = "Zoë Ångström — 東京"
    event = samples.event("customer.updated", customer)
    body = json.dumps(event, indent=4, ensure_ascii=False).encode("utf-8")

    response = deliver(client, event, body=body)
    settle()

    assert response.status_code == 200
    assert response.json["received"] is True
    [delivery] = stored(stripe_app, WebhookDelivery)
    assert delivery.body == body
    assert delivery.event_id == event["id"]
    assert delivery.status == "ignored"


def test_reserialised_body_is_rejected(stripe_app, client, samples):
    customer = samples.sample("customer")
    customer["name"] = "Zoë"
    event = samples.event("customer.updated", customer)
    signed_body = json.dumps(event, indent=4, ensure_ascii=False).encode("utf-8")
    header = sign(signed_body, SECRET)

    reserialised = json.dumps(json.loads(signed_body)).encode("utf-8")
    response = client.post(URL, data=reserialised, headers={"Stripe-Signature": header})

    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_signature"
    assert delivery_count(stripe_app) == 0


@pytest.mark.parametrize(
    "case",
    ["missing header", "wrong secret", "old timestamp"],
)
def test_bad_signature_stores_nothing(stripe_app, client, samples, case):
    event = samples.event("invoice.paid", samples.invoice("cus_x", None))
    body = json.dumps(event).encode()
    headers = {
        "missing header": {},
        "wrong secret": {"Stripe-Signature": sign(body, "whsec_other")},
        "old timestamp": {"Stripe-Signature": sign(body, SECRET, timestamp=int(time.time()) - 3600)},
    }[case]

    response = client.post(URL, data=body, headers=headers)

    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_signature"
    assert response.json["error"]["message"]
    assert delivery_count(stripe_app) == 0


def test_without_secret_configured_answers_503(app, client, samples):
    event = samples.event("invoice.paid", samples.invoice("cus_x", None))

    response = deliver(client, event)

    assert response.status_code == 503
    assert response.json["error"]["code"] == "not_configured"


def test_unhandled_type_answers_200(stripe_app, client, samples, settle):
    response = deliver(client, samples.sample("event"))
    settle()

    assert response.status_code == 200
    [delivery] = stored(stripe_app, WebhookDelivery)
    assert delivery.status == "ignored"


def test_invoice_paid_twice_records_one_payment(stripe_app, client, make_user, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_one")
    event = samples.event("invoice.paid", samples.invoice("cus_one", "sub_unknown"))

    first = deliver(client, event)
    settle()
    second = deliver(client, event)
    settle()

    assert first.json["duplicate"] is False
    assert second.json["duplicate"] is True
    [invoice] = stored(stripe_app, Invoice)
    assert invoice.org_id == user["org_id"]
    assert invoice.paid_at is not None
    assert invoice.amount_paid == 2000
    [delivery] = stored(stripe_app, WebhookDelivery)
    assert delivery.status == "processed"
    assert delivery.attempts == 1


def test_failed_handler_applies_once_on_redelivery(stripe_app, client, make_user, samples, settle):
    user = make_user()
    invoice_event = samples.event("invoice.paid", samples.invoice("cus_later", None))

    deliver(client, invoice_event)
    settle()
    [failed] = stored(stripe_app, WebhookDelivery)
    link_customer(stripe_app, user["org_id"], "cus_later")
    deliver(client, invoice_event)
    settle()
    deliver(client, invoice_event)
    settle()

    assert failed.status == "failed"
    assert "cus_later" in failed.error
    [delivery] = stored(stripe_app, WebhookDelivery)
    assert delivery.status == "processed"
    assert delivery.attempts == 2
    assert delivery.error is None
    assert delivery.org_id == user["org_id"]
    [invoice] = stored(stripe_app, Invoice)
    assert invoice.paid_at is not None


def test_older_created_event_never_overwrites(stripe_app, client, make_user, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_order")
    subscription = samples.subscription("cus_order", "price_unknown", status="incomplete", metadata={"plan": "pro"})
    now = int(time.time())
    created = samples.event("customer.subscription.created", subscription, created=now - 10)
    active = dict(subscription, status="active")
    updated = samples.event("customer.subscription.updated", active, created=now - 5)

    deliver(client, updated)
    settle()
    deliver(client, created)
    settle()

    [row] = stored(stripe_app, Subscription)
    assert row.status == "active"
    assert row.plan == "pro"
    assert row.event_created == now - 5
    [account] = stored(stripe_app, BillingAccount)
    assert account.plan == "pro"


def test_invoice_linked_when_subscription_arrives(stripe_app, client, make_user, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_link")
    subscription = samples.subscription("cus_link", "price_unknown", metadata={"plan": "pro"})

    deliver(client, samples.event("invoice.paid", samples.invoice("cus_link", subscription["id"])))
    settle()
    [before] = stored(stripe_app, Invoice)
    deliver(client, samples.event("customer.subscription.created", subscription))
    settle()

    assert before.subscription_id is None
    assert before.stripe_subscription_id == subscription["id"]
    [row] = stored(stripe_app, Subscription)
    [after] = stored(stripe_app, Invoice)
    assert after.subscription_id == row.id


def test_payment_failed_marks_past_due_with_banner(stripe_app, client, make_user, auth, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_late")
    subscription = samples.subscription("cus_late", "price_unknown", metadata={"plan": "pro"})
    now = int(time.time())
    deliver(client, samples.event("customer.subscription.created", subscription, created=now - 60))
    settle()

    deliver(client, samples.event("invoice.payment_failed", samples.invoice("cus_late", subscription["id"], "open")))
    settle()
    auth.signin(user["email"])
    page = client.get("/billing")

    [row] = stored(stripe_app, Subscription)
    assert row.status == "past_due"
    [account] = stored(stripe_app, BillingAccount)
    assert account.plan == "pro"
    assert b"past due" in page.data
    assert b"The last payment for this organization failed" in page.data


def test_subscription_deleted_returns_to_free(stripe_app, client, make_user, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_end")
    subscription = samples.subscription("cus_end", "price_unknown", metadata={"plan": "team"})
    now = int(time.time())
    deliver(client, samples.event("customer.subscription.created", subscription, created=now - 60))
    settle()

    deliver(client, samples.event("customer.subscription.deleted", dict(subscription, status="canceled"), now))
    settle()

    [row] = stored(stripe_app, Subscription)
    assert row.status == "canceled"
    [account] = stored(stripe_app, BillingAccount)
    assert account.plan == "free"


def test_trial_will_end_is_recorded(stripe_app, client, make_user, samples, settle):
    user = make_user()
    link_customer(stripe_app, user["org_id"], "cus_trial")
    trial_end = int(time.time()) + 3 * 24 * 3600
    subscription = samples.subscription("cus_trial", "price_unknown", status="trialing", metadata={"plan": "pro"})
    subscription["trial_end"] = trial_end

    deliver(client, samples.event("customer.subscription.trial_will_end", subscription))
    settle()

    [row] = stored(stripe_app, Subscription)
    assert row.status == "trialing"
    assert row.trial_ending_notified is True
    assert int(row.trial_end.timestamp()) == trial_end


def test_cli_replays_failed_deliveries(stripe_app, client, make_user, samples, settle):
    user = make_user()
    deliver(client, samples.event("invoice.paid", samples.invoice("cus_cli", None)))
    settle()
    link_customer(stripe_app, user["org_id"], "cus_cli")

    result = stripe_app.test_cli_runner().invoke(args=["floyo", "replay-webhooks", "--provider", "stripe"])
    settle()

    assert result.exit_code == 0, result.output
    assert "Queued 1 deliveries" in result.output
    [delivery] = stored(stripe_app, WebhookDelivery)
    assert delivery.status == "processed"
    assert delivery.attempts == 2
