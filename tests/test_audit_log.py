"""The organization audit log: what is recorded, who may read it, filters, pages and exports."""

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from app.admin.models import AuditEntry
from app.admin.service import record
from app.extensions import db
from app.orgs.models import Membership, Organization
from tests.test_billing import billing_app, checkout, deliver, fake_stripe, settle  # noqa: F401

MANUAL = {
    "name": "Nightly report",
    "trigger": {"type": "manual"},
    "steps": [{"id": "shape", "type": "transform", "config": {"input": "{{ trigger }}"}}],
}
WEBHOOK = {**MANUAL, "name": "On push", "trigger": {"type": "webhook"}}


@pytest.fixture
def team(app, make_user, make_api_key, monkeypatch):
    """A shared organization with one user per role, each with an API key for it.

    The keys are created without their `api_key.created` entries, so each test sees only the
    entries it causes.
    """
    with app.app_context():
        org = Organization(name="Team")
        db.session.add(org)
        db.session.commit()
        org_id = org.id
    people = {}
    for role in ("owner", "admin", "member", "viewer"):
        user = make_user(email=f"{role}@example.com")
        with app.app_context():
            db.session.add(Membership(org_id=org_id, user_id=user["id"], role=role))
            db.session.commit()
        member = {**user, "org_id": org_id}
        with monkeypatch.context() as patched:
            patched.setattr("app.admin.service.record", lambda *args, **kwargs: None)
            key = make_api_key(member)
        people[role] = {**member, "personal_org_id": user["org_id"], "headers": {"Authorization": f"Bearer {key}"}}
    return {"id": org_id, **people}


def sign_in_to(client, auth, person):
    auth.signin(person["email"])
    with client.session_transaction() as session:
        session["org_id"] = person["org_id"]


def add_entry(app, org_id, action, email="", created_at=None, details=None):
    with app.app_context():
        entry = record(action, org_id=org_id, details=details or {})
        entry.actor_email = email
        if created_at is not None:
            entry.created_at = created_at
        db.session.commit()
        return entry.id


def actions(app, org_id):
    with app.app_context():
        return db.session.scalars(
            db.select(AuditEntry.action).where(AuditEntry.org_id == org_id).order_by(AuditEntry.id)
        ).all()


def entries_of(app, org_id):
    with app.app_context():
        return db.session.scalars(
            db.select(AuditEntry).where(AuditEntry.org_id == org_id).order_by(AuditEntry.id)
        ).all()


# What is recorded


def test_workflow_changes_recorded_through_api(app, client, team):
    headers = team["admin"]["headers"]

    created = client.post("/api/v1/workflows", json={"definition": WEBHOOK}, headers=headers).get_json()
    workflow_id = created["id"]
    client.put(f"/api/v1/workflows/{workflow_id}", json={"definition": {**WEBHOOK, "name": "On tag"}}, headers=headers)
    rotated = client.post(f"/api/v1/workflows/{workflow_id}/webhook-secret", headers=headers)
    restored = client.post(f"/api/v1/workflows/{workflow_id}/versions/1/restore", headers=headers)
    deleted = client.delete(f"/api/v1/workflows/{workflow_id}", headers=headers)

    assert rotated.status_code == 200
    assert restored.status_code == 200
    assert deleted.status_code == 204
    assert actions(app, team["id"]) == [
        "workflow.created",
        "workflow.updated",
        "workflow.webhook_secret_rotated",
        "workflow.version_restored",
        "workflow.deleted",
    ]
    entries = entries_of(app, team["id"])
    assert {entry.actor_email for entry in entries} == {"admin@example.com"}
    assert {entry.target_id for entry in entries} == {str(workflow_id)}
    assert entries[0].details == {"name": "On push", "version": 1}
    assert entries[1].details == {"name": "On tag", "version": 2}
    assert entries[2].details == {"name": "On tag"}
    assert entries[3].details == {"name": "On push", "version": 3, "restored_version": 1}
    assert entries[4].details == {"name": "On push", "version": 3}
    assert entries[0].ip_address == "127.0.0.1"
    new_url = rotated.get_json()["webhook_url"]
    token = new_url.rstrip("/").rsplit("/", 1)[1]
    assert token not in json.dumps([entry.details for entry in entries])


def test_workflow_enable_disable_recorded_from_pages(app, client, auth, team):
    created = client.post("/api/v1/workflows", json={"definition": MANUAL}, headers=team["member"]["headers"])
    workflow_id = created.get_json()["id"]
    sign_in_to(client, auth, team["member"])

    disabled = client.post(f"/workflows/{workflow_id}/enabled", data={"enabled": "0"})
    again = client.post(f"/workflows/{workflow_id}/enabled", data={"enabled": "0"})
    enabled = client.post(f"/workflows/{workflow_id}/enabled", data={"enabled": "1"})

    assert (disabled.status_code, again.status_code, enabled.status_code) == (302, 302, 302)
    # Saving the state it already has changes nothing, so it records nothing.
    assert actions(app, team["id"]) == ["workflow.created", "workflow.disabled", "workflow.enabled"]
    assert entries_of(app, team["id"])[1].actor_email == "member@example.com"


def test_billing_changes_recorded(billing_app, client, auth, make_user, fake_stripe, settle):  # noqa: F811
    user = make_user()
    auth.signin(user["email"])

    started = checkout(client)
    session_id = started.headers["Location"].rsplit("/", 1)[1]
    for event in fake_stripe.complete_checkout(session_id):
        deliver(client, event)
    settle()

    entries = entries_of(billing_app, user["org_id"])
    assert [entry.action for entry in entries][:2] == ["billing.checkout_started", "billing.subscription_created"]
    assert entries[0].actor_email == user["email"]
    assert entries[0].details == {"plan": "pro", "interval": "monthly"}
    stripe_entry = entries[1]
    assert stripe_entry.actor_id is None
    assert stripe_entry.actor_email == ""
    assert stripe_entry.details["plan"] == "pro"
    assert stripe_entry.details["status"] == "active"
    assert stripe_entry.target_type == "subscription"
    assert "whsec" not in json.dumps([entry.details for entry in entries])


# Who may read it


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_admins_and_owners_read_log(client, auth, team, role):
    sign_in_to(client, auth, team[role])

    page = client.get("/org/audit")
    api = client.get("/api/v1/audit", headers=team[role]["headers"])

    assert page.status_code == 200
    assert b"Audit log of Team" in page.data
    assert api.status_code == 200


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_get_403(client, auth, team, role):
    sign_in_to(client, auth, team[role])

    page = client.get("/org/audit")
    export = client.get("/org/audit/export.csv")
    api = client.get("/api/v1/audit", headers=team[role]["headers"])
    dashboard = client.get("/")

    assert page.status_code == 403
    assert export.status_code == 403
    assert api.status_code == 403
    assert api.get_json()["error"]["code"] == "forbidden"
    assert b'href="/org/audit"' not in dashboard.data


def test_nav_links_log_for_admins(client, auth, team):
    sign_in_to(client, auth, team["admin"])

    assert b'href="/org/audit"' in client.get("/").data


def test_signed_out_user_redirected(client):
    response = client.get("/org/audit")

    assert response.status_code == 302
    assert "/signin" in response.headers["Location"]


# Scoping


def test_other_org_entries_never_shown(app, client, auth, team):
    add_entry(app, team["id"], "workflow.created", details={"name": "ours"})
    add_entry(app, team["owner"]["personal_org_id"], "workflow.created", details={"name": "personal-secret-plan"})
    add_entry(app, None, "maintenance.started", details={"name": "site-wide"})
    sign_in_to(client, auth, team["owner"])

    # A streamed export is read before the next request, as a browser would.
    page = client.get("/org/audit").get_data()
    exported_csv = client.get("/org/audit/export.csv").get_data()
    exported_json = client.get("/org/audit/export.json").get_data()
    api = client.get("/api/v1/audit", headers=team["owner"]["headers"])

    for body in (page, exported_csv, exported_json, api.data):
        assert b"ours" in body
        assert b"personal-secret-plan" not in body
        assert b"site-wide" not in body
    assert [entry["details"]["name"] for entry in api.get_json()["data"]] == ["ours"]


# Filters and pages


def test_filters_by_action_actor_and_dates(app, client, auth, team):
    add_entry(app, team["id"], "workflow.created", "ada@example.com", datetime(2025, 1, 10, 12, tzinfo=UTC))
    add_entry(app, team["id"], "workflow.deleted", "bob@example.com", datetime(2025, 2, 10, 12, tzinfo=UTC))
    add_entry(app, team["id"], "billing.checkout_started", "ada@example.com", datetime(2025, 3, 10, 12, tzinfo=UTC))
    headers = team["admin"]["headers"]

    def listed(query):
        response = client.get(f"/api/v1/audit?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return [entry["action"] for entry in response.get_json()["data"]]

    assert listed("action=workflow.") == ["workflow.deleted", "workflow.created"]
    assert listed("actor=ADA@example.com") == ["billing.checkout_started", "workflow.created"]
    assert listed("from=2025-02-01&to=2025-02-10") == ["workflow.deleted"]
    assert listed("from=2025-02-10T12:00:01%2B00:00") == ["billing.checkout_started"]
    assert listed("action=workflow.&actor=ada@example.com") == ["workflow.created"]
    assert listed("action=workflow%25") == []


def test_page_filters_and_older_pages(app, client, auth, team):
    for index in range(55):
        add_entry(app, team["id"], "workflow.updated", details={"name": f"wf-{index:02d}"})
    add_entry(app, team["id"], "billing.checkout_started")
    sign_in_to(client, auth, team["admin"])

    first = client.get("/org/audit?action=workflow.")
    older_link = first.data.split(b'<a href="')[-1] if b">Older<" in first.data else b""
    older_url = older_link.split(b'"')[0].decode().replace("&amp;", "&")
    second = client.get(older_url)

    assert first.status_code == 200
    assert first.data.count(b"<code>workflow.updated</code>") == 50
    assert b"billing.checkout_started" not in first.data
    assert b"wf-54" in first.data
    assert "action=workflow." in older_url
    assert second.status_code == 200
    assert second.data.count(b"<code>workflow.updated</code>") == 5
    assert b"wf-00" in second.data
    assert b">Older<" not in second.data


def test_api_cursor_pages(app, client, team):
    ids = [add_entry(app, team["id"], "workflow.updated") for _ in range(5)]
    headers = team["admin"]["headers"]

    first = client.get("/api/v1/audit?limit=3", headers=headers).get_json()
    second = client.get(f"/api/v1/audit?limit=3&cursor={first['next_cursor']}", headers=headers).get_json()

    assert [entry["id"] for entry in first["data"]] == ids[::-1][:3]
    assert [entry["id"] for entry in second["data"]] == ids[::-1][3:]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=yesterday", "from", "'from' is not a date or time: 'yesterday'"),
        ("to=2025-02-30", "to", "'to' is not a valid date"),
        ("from=2025-02-10T09:00:00", "from", "has no UTC offset"),
        ("from=2025-03-01&to=2025-02-01", "to", "must be later than 'from'"),
        ("action=" + "x" * 65, "action", "at most 64 characters"),
    ],
)
def test_bad_filters_rejected(client, auth, team, query, field, message):
    sign_in_to(client, auth, team["admin"])

    api = client.get(f"/api/v1/audit?{query}", headers=team["admin"]["headers"])
    page = client.get(f"/org/audit?{query}")
    export = client.get(f"/org/audit/export.json?{query}")

    assert api.status_code == 422
    assert api.get_json()["error"]["code"] == "invalid_filter"
    assert message in api.get_json()["error"]["message"]
    assert field in api.get_json()["error"]["details"]
    assert page.status_code == 422
    assert message.replace("'", "&#39;").encode() in page.data
    assert export.status_code == 422


def test_bad_cursor_and_before_rejected(client, auth, team):
    sign_in_to(client, auth, team["admin"])

    api = client.get("/api/v1/audit?cursor=not-a-cursor", headers=team["admin"]["headers"])
    page = client.get("/org/audit?before=abc")

    assert api.status_code == 400
    assert api.get_json()["error"]["code"] == "invalid_cursor"
    assert page.status_code == 422


# Exports


def test_export_csv_and_json_content(app, client, auth, team):
    add_entry(app, team["id"], "workflow.created", "ada@example.com", details={"name": '=HYPERLINK("x")'})
    add_entry(app, team["id"], "workflow.deleted", "bob@example.com", details={"name": "Report"})
    sign_in_to(client, auth, team["admin"])

    exported_csv = client.get("/org/audit/export.csv?actor=ada@example.com")
    csv_text = exported_csv.get_data(as_text=True)
    exported_json = client.get("/org/audit/export.json")
    data = json.loads(exported_json.get_data())
    unknown = client.get("/org/audit/export.xml")

    assert exported_csv.status_code == 200
    assert exported_csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in exported_csv.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 1
    assert rows[0]["action"] == "workflow.created"
    assert rows[0]["actor_email"] == "ada@example.com"
    assert json.loads(rows[0]["details"]) == {"name": '=HYPERLINK("x")'}
    assert exported_json.status_code == 200
    assert [entry["action"] for entry in data] == ["workflow.deleted", "workflow.created"]
    assert data[0]["created_at"].endswith("Z")
    assert unknown.status_code == 422


def test_export_csv_escapes_formula_cells(app, client, auth, team):
    add_entry(app, team["id"], "workflow.created", "=cmd@example.com")
    sign_in_to(client, auth, team["admin"])

    rows = list(csv.DictReader(io.StringIO(client.get("/org/audit/export.csv").get_data(as_text=True))))

    assert rows[0]["actor_email"] == "'=cmd@example.com"


# Entries cannot change


def test_entries_cannot_be_updated_or_deleted(app, team):
    entry_id = add_entry(app, team["id"], "workflow.created")

    with app.app_context():
        entry = db.session.get(AuditEntry, entry_id)
        entry.action = "workflow.forged"
        with pytest.raises(RuntimeError, match="append-only"):
            db.session.commit()
        db.session.rollback()
        with pytest.raises(RuntimeError, match="append-only"):
            db.session.delete(db.session.get(AuditEntry, entry_id))
            db.session.commit()
        db.session.rollback()

    assert actions(app, team["id"]) == ["workflow.created"]


def test_no_route_changes_entries(app, client, auth, team):
    add_entry(app, team["id"], "workflow.created")
    sign_in_to(client, auth, team["owner"])
    audit_rules = [rule for rule in app.url_map.iter_rules() if "audit" in rule.rule]

    responses = [
        client.post("/org/audit"),
        client.delete("/org/audit"),
        client.delete("/api/v1/audit", headers=team["owner"]["headers"]),
        client.put("/api/v1/audit", headers=team["owner"]["headers"]),
    ]

    assert {rule.rule for rule in audit_rules} >= {"/org/audit", "/org/audit/export.<fmt>", "/api/v1/audit"}
    for rule in audit_rules:
        assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule.rule
    assert [response.status_code for response in responses] == [405, 405, 405, 405]
    assert actions(app, team["id"]) == ["workflow.created"]


def test_openapi_documents_audit_route(client):
    document = client.get("/api/v1/openapi.json").get_json()

    operation = document["paths"]["/api/v1/audit"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"action", "actor", "from", "to", "cursor"}
