"""The admin console and its API: access, users, organizations, statistics and the audit log."""

import io

import pytest
import sqlalchemy as sa

from app.admin import service as admin_service
from app.admin.models import AuditEntry
from app.auth.models import ApiKey, User
from app.events.models import Event
from app.extensions import db
from app.files.service import store_file
from app.files.storage import get_storage
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow

ADMIN_PAGES = [
    "/admin",
    "/admin/users",
    "/admin/users/1",
    "/admin/users/1/delete",
    "/admin/orgs",
    "/admin/orgs/1",
    "/admin/stats",
    "/admin/audit",
    "/admin/queues",
    "/admin/queues/default/failed",
    "/admin/monitoring",
]
ADMIN_POSTS = [
    "/admin/users/1",
    "/admin/users/1/deactivate",
    "/admin/users/1/reactivate",
    "/admin/users/1/delete",
    "/admin/maintenance",
    "/admin/maintenance/end",
    "/admin/queues/default/failed/requeue",
    "/admin/queues/default/failed/delete",
    "/admin/queues/default/failed/abc/requeue",
    "/admin/queues/default/failed/abc/delete",
]
ADMIN_API = [
    ("GET", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/users/1"),
    ("PUT", "/api/v1/admin/users/1"),
    ("DELETE", "/api/v1/admin/users/1"),
    ("GET", "/api/v1/admin/stats"),
    ("GET", "/api/v1/admin/maintenance"),
    ("POST", "/api/v1/admin/maintenance"),
    ("GET", "/api/v1/admin/queues"),
    ("GET", "/api/v1/admin/queues/default/failed"),
    ("POST", "/api/v1/admin/queues/default/failed/requeue"),
    ("DELETE", "/api/v1/admin/queues/default/failed"),
    ("POST", "/api/v1/admin/queues/default/failed/abc/requeue"),
    ("DELETE", "/api/v1/admin/queues/default/failed/abc"),
    ("GET", "/api/v1/monitoring/metrics"),
    ("GET", "/api/v1/monitoring/cache"),
    ("GET", "/api/v1/monitoring/database"),
]


@pytest.fixture
def admin(make_user, auth):
    """A site admin, signed in on `client`."""
    user = make_user(email="admin@example.com", is_admin=True)
    auth.signin(user["email"])
    return user


def _user(app, user_id):
    with app.app_context():
        return db.session.get(User, user_id)


def _audit_actions(app):
    with app.app_context():
        return [entry.action for entry in db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]


# Access


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_pages_hidden_from_non_admin(client, auth, make_user, path):
    user = make_user()
    auth.signin(user["email"])

    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_pages_hidden_when_signed_out(client, make_user, path):
    make_user()

    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_posts_hidden_from_non_admin(client, auth, make_user, path):
    user = make_user()
    auth.signin(user["email"])

    assert client.post(path, data={"confirm_email": user["email"]}).status_code == 404
    assert _user(client.application, user["id"]).active


@pytest.mark.parametrize(("method", "path"), ADMIN_API)
def test_api_hidden_from_non_admin_key(client, make_user, make_api_key, method, path):
    user = make_user()
    key = make_api_key(user)

    response = client.open(path, method=method, headers={"Authorization": f"Bearer {key}"}, json={"enabled": True})

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("method", "path"), ADMIN_API)
def test_api_hidden_without_key(client, make_user, method, path):
    make_user()

    assert client.open(path, method=method, json={}).status_code == 404


@pytest.mark.parametrize(("method", "path"), ADMIN_API)
def test_api_hidden_from_non_admin_session(client, auth, make_user, method, path):
    user = make_user()
    auth.signin(user["email"])

    assert client.open(path, method=method, json={}).status_code == 404


def test_api_writes_refuse_admin_cookie(client, admin, make_user):
    """The API is exempt from CSRF, so a write with only the admin's cookie must not pass."""
    target = make_user()

    response = client.put(f"/api/v1/admin/users/{target['id']}", json={"active": False})

    assert response.status_code == 404
    assert _user(client.application, target["id"]).active


def test_admin_nav_link_only_for_admins(client, auth, make_user, admin):
    assert b'href="/admin"' in client.get("/settings").data

    other = client.application.test_client()
    user = make_user()
    other.post("/signin", data={"email": user["email"], "password": user["password"]})
    assert b'href="/admin"' not in other.get("/settings").data


# Users


def test_users_search_and_filter(client, admin, make_user):
    make_user(email="ada@example.com", name="Ada Lovelace")
    grace = make_user(email="grace@example.com", name="Grace Hopper")
    with client.application.app_context():
        db.session.get(User, grace["id"]).active = False
        db.session.commit()

    by_name = client.get("/admin/users?q=lovelace")
    disabled = client.get("/admin/users?status=disabled")
    admins = client.get("/admin/users?status=admin")

    assert b"ada@example.com" in by_name.data
    assert b"grace@example.com" not in by_name.data
    assert b"grace@example.com" in disabled.data
    assert b"ada@example.com" not in disabled.data
    assert b"admin@example.com" in admins.data
    assert b"ada@example.com" not in admins.data


def test_users_search_escapes_wildcards(client, admin, make_user):
    make_user(email="percent@example.com")

    response = client.get("/admin/users?q=%25")

    assert b"percent@example.com" not in response.data
    assert b"0 users" in response.data


def test_users_htmx_gets_fragment(client, admin):
    response = client.get("/admin/users?q=admin", headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert b"<html" not in response.data
    assert b"admin@example.com" in response.data
    assert "HX-Request" in response.headers["Vary"]


def test_users_invalid_sort_is_400(client, admin):
    response = client.get("/admin/users?sort=shoe_size")

    assert response.status_code == 400
    assert b"Unknown sort" in response.data


def test_users_paginate(client, admin, make_user, monkeypatch):
    monkeypatch.setattr(admin_service, "PAGE_SIZE", 2)
    for index in range(4):
        make_user(email=f"page{index}@example.com")

    first = client.get("/admin/users?sort=email&q=page")
    second = client.get("/admin/users?sort=email&q=page&page=2")

    assert b"page0@example.com" in first.data
    assert b"page1@example.com" in first.data
    assert b"page2@example.com" not in first.data
    assert b"page2@example.com" in second.data
    assert b"page3@example.com" in second.data
    assert b"Page 2 of 2" in second.data


def test_user_page_shows_organizations_keys_and_audit(client, admin, make_user, make_api_key):
    user = make_user(email="ada@example.com")
    make_api_key(user, name="laptop agent")
    client.post(f"/admin/users/{user['id']}/deactivate")

    response = client.get(f"/admin/users/{user['id']}")

    assert response.status_code == 200
    assert b"laptop agent" in response.data
    assert b"workspace" in response.data
    assert b"user.deactivated" in response.data


def test_user_page_unknown_id_is_404(client, admin):
    assert client.get("/admin/users/9999").status_code == 404


def test_edit_user_records_changes(client, admin, make_user):
    user = make_user(email="ada@example.com")

    response = client.post(
        f"/admin/users/{user['id']}", data={"name": "Ada L.", "email": "ada.l@example.com", "is_admin": "y"}
    )

    assert response.status_code == 302
    account = _user(client.application, user["id"])
    assert account.name == "Ada L."
    assert account.email == "ada.l@example.com"
    assert account.is_admin is True
    with client.application.app_context():
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "user.updated"))
        assert entry.details["before"]["email"] == "ada@example.com"
        assert entry.details["after"]["email"] == "ada.l@example.com"
        assert entry.actor_email == "admin@example.com"


def test_edit_user_rejects_taken_email(client, admin, make_user):
    user = make_user(email="ada@example.com")
    make_user(email="grace@example.com")

    response = client.post(f"/admin/users/{user['id']}", data={"name": "", "email": "grace@example.com"})

    assert response.status_code == 422
    assert b"already uses grace@example.com" in response.data
    assert _user(client.application, user["id"]).email == "ada@example.com"


def test_admin_cannot_remove_own_flag(client, admin):
    response = client.post(f"/admin/users/{admin['id']}", data={"name": "", "email": admin["email"]})

    assert response.status_code == 422
    assert _user(client.application, admin["id"]).is_admin is True


def test_deactivate_refuses_session_and_key_at_once(client, admin, make_user, make_api_key):
    user = make_user(email="ada@example.com")
    key = make_api_key(user)
    browser = client.application.test_client()
    browser.post("/signin", data={"email": user["email"], "password": user["password"]})
    assert browser.get("/settings").status_code == 200
    assert client.get("/api/v1/events", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    response = client.post(f"/admin/users/{user['id']}/deactivate")

    assert response.status_code == 302
    assert browser.get("/settings").status_code == 302
    api = client.get("/api/v1/events", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 401
    signin = client.application.test_client().post(
        "/signin", data={"email": user["email"], "password": user["password"]}
    )
    assert b"This account is disabled" in signin.data
    assert "user.deactivated" in _audit_actions(client.application)


def test_reactivate_restores_key(client, admin, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    client.post(f"/admin/users/{user['id']}/deactivate")

    client.post(f"/admin/users/{user['id']}/reactivate")

    assert client.get("/api/v1/events", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert _audit_actions(client.application)[-1] == "user.reactivated"


def test_admin_cannot_deactivate_self(client, admin):
    client.post(f"/admin/users/{admin['id']}/deactivate")

    assert _user(client.application, admin["id"]).active is True


def _share_org(app, owner_id, other_id, role):
    """Make a team organization owned by `owner_id` with `other_id` in `role`; return its id."""
    with app.app_context():
        org = Organization(name="Shared team")
        db.session.add(org)
        db.session.flush()
        db.session.add_all(
            [
                Membership(org_id=org.id, user_id=owner_id, role="owner"),
                Membership(org_id=org.id, user_id=other_id, role=role),
            ]
        )
        db.session.commit()
        return org.id


def _add_event(app, org_id, user_id):
    with app.app_context():
        event = Event(
            org_id=org_id, user_id=user_id, type="file_opened", path="a.txt", occurred_at=utcnow(), source="api"
        )
        db.session.add(event)
        db.session.commit()
        return event.id


def test_delete_confirmation_names_what_goes(client, admin, make_user):
    user = make_user(email="ada@example.com", name="Ada")
    other = make_user(email="grace@example.com")
    _share_org(client.application, other["id"], user["id"], "owner")

    response = client.get(f"/admin/users/{user['id']}/delete")

    assert response.status_code == 200
    deleted = response.data.split(b'id="organizations-deleted"')[1].split(b"</ul>")[0]
    kept = response.data.split(b'id="organizations-kept"')[1].split(b"</ul>")[0]
    assert b"Ada&#39;s workspace" in deleted
    assert b"Shared team" in kept


def test_delete_user_keeps_shared_org(client, admin, make_user):
    app = client.application
    user = make_user(email="ada@example.com")
    other = make_user(email="grace@example.com")
    shared_id = _share_org(app, other["id"], user["id"], "owner")
    # Ada owns this one alone; Grace is only a member, so it goes with Ada.
    solo_id = _share_org(app, user["id"], other["id"], "member")
    personal_event = _add_event(app, user["org_id"], user["id"])
    shared_event = _add_event(app, shared_id, user["id"])

    response = client.post(f"/admin/users/{user['id']}/delete", data={"confirm_email": "ADA@example.com"})

    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(User, user["id"]) is None
        assert db.session.get(Organization, user["org_id"]) is None
        assert db.session.get(Organization, solo_id) is None
        assert db.session.get(Event, personal_event) is None
        assert db.session.get(Organization, shared_id) is not None
        assert db.session.get(Organization, other["org_id"]) is not None
        kept_event = db.session.get(Event, shared_event)
        assert kept_event is not None and kept_event.user_id is None
        members = db.session.scalars(sa.select(Membership.user_id).where(Membership.org_id == shared_id)).all()
        assert members == [other["id"]]
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "user.deleted"))
        assert entry.details["email"] == "ada@example.com"
        assert {org["id"] for org in entry.details["organizations_deleted"]} == {user["org_id"], solo_id}


def test_delete_user_removes_stored_files(client, admin, make_user):
    app = client.application
    user = make_user(email="ada@example.com")
    with app.app_context():
        stored = store_file(user["org_id"], user["id"], "notes.txt", io.BytesIO(b"hello"))
        db.session.commit()
        blob = get_storage().path(user["org_id"], stored.storage_key)
    assert blob.exists()

    response = client.post(f"/admin/users/{user['id']}/delete", data={"confirm_email": user["email"]})

    assert response.status_code == 302
    assert not blob.exists()


def test_delete_user_needs_matching_email(client, admin, make_user):
    user = make_user(email="ada@example.com")

    response = client.post(f"/admin/users/{user['id']}/delete", data={"confirm_email": "someone@example.com"})

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/users/{user['id']}/delete")
    assert _user(client.application, user["id"]) is not None
    assert "user.deleted" not in _audit_actions(client.application)


# Organizations, statistics, audit log


def test_orgs_list_and_detail(client, admin, make_user):
    user = make_user(email="ada@example.com", name="Ada")
    _add_event(client.application, user["org_id"], user["id"])

    listing = client.get("/admin/orgs?q=ada")
    detail = client.get(f"/admin/orgs/{user['org_id']}")

    # The top bar's organization switcher names the admin's own workspace, so look in <main> only.
    results = listing.data.split(b"<main>", 1)[1]
    assert b"Ada&#39;s workspace" in results
    assert b"admin&#39;s workspace" not in results
    assert detail.status_code == 200
    assert b"ada@example.com" in detail.data
    assert b"<strong>1</strong> events" in detail.data


def test_orgs_filter_by_plan(client, admin, make_user):
    make_user(email="ada@example.com", name="Ada")

    free = client.get("/admin/orgs?plan=free")
    unknown = client.get("/admin/orgs?plan=gold")

    assert b"Ada&#39;s workspace" in free.data
    assert unknown.status_code == 400


def test_stats_page_draws_charts(client, admin, make_user):
    make_user()

    response = client.get("/admin/stats?days=7")

    assert response.status_code == 200
    assert b'id="chart-signups"' in response.data
    assert b"plotly-4.1.1.min.js" in response.data


def test_stats_api_counts_signups(client, admin, make_user, make_api_key):
    make_user()
    key = make_api_key(admin)

    response = client.get("/api/v1/admin/stats?days=3", headers={"Authorization": f"Bearer {key}"})

    body = response.get_json()
    assert response.status_code == 200
    assert len(body["series"]) == 3
    assert body["series"][-1]["signups"] == 2
    assert body["totals"]["users"] == 2


def test_stats_api_rejects_bad_days(client, admin, make_api_key):
    key = make_api_key(admin)

    response = client.get("/api/v1/admin/stats?days=9999", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 422
    assert "days" in response.get_json()["error"]["message"]


def test_audit_log_filters_and_pages(client, admin, make_user, monkeypatch):
    users = [make_user() for _ in range(3)]
    for user in users:
        client.post(f"/admin/users/{user['id']}/deactivate")
    monkeypatch.setattr(admin_service, "PAGE_SIZE", 2)

    first = client.get("/admin/audit?action=user.")
    older = first.data.split(b'<a href="')[-1].split(b'">Older')[0].decode().replace("&amp;", "&")
    second = client.get(older)
    by_target = client.get(f"/admin/audit?target_type=user&target_id={users[0]['id']}")

    assert first.data.count(b"user.deactivated") == 2
    assert second.data.count(b"user.deactivated") == 1
    assert by_target.data.count(b"user.deactivated") == 1


def test_audit_entries_are_append_only(app, make_user):
    user = make_user()
    with app.app_context():
        admin_service.record("test.action", target_type="user", target_id=user["id"])
        db.session.commit()
        entry = db.session.scalar(sa.select(AuditEntry))

        entry.action = "changed"
        with pytest.raises(RuntimeError, match="append-only"):
            db.session.commit()
        db.session.rollback()
        db.session.delete(entry)
        with pytest.raises(RuntimeError, match="append-only"):
            db.session.commit()


# The users API


def _admin_key(make_api_key, admin):
    return {"Authorization": f"Bearer {make_api_key(admin)}"}


def test_api_list_users_pages_with_cursor(client, admin, make_user, make_api_key):
    headers = _admin_key(make_api_key, admin)
    for index in range(3):
        make_user(email=f"list{index}@example.com")

    first = client.get("/api/v1/admin/users?q=list&sort=email&limit=2", headers=headers).get_json()
    second = client.get(
        f"/api/v1/admin/users?q=list&sort=email&limit=2&cursor={first['next_cursor']}", headers=headers
    ).get_json()

    assert [user["email"] for user in first["data"]] == ["list0@example.com", "list1@example.com"]
    assert first["total"] == 3
    assert [user["email"] for user in second["data"]] == ["list2@example.com"]
    assert second["next_cursor"] is None


def test_api_get_user(client, admin, make_user, make_api_key):
    user = make_user(email="ada@example.com")
    headers = _admin_key(make_api_key, admin)

    body = client.get(f"/api/v1/admin/users/{user['id']}", headers=headers).get_json()

    assert body["email"] == "ada@example.com"
    assert body["organizations"][0]["role"] == "owner"
    assert body["usage"]["events_total"] == 0


def test_api_update_user_deactivates(client, admin, make_user, make_api_key):
    user = make_user(email="ada@example.com")
    user_key = make_api_key(user)
    headers = _admin_key(make_api_key, admin)

    response = client.put(f"/api/v1/admin/users/{user['id']}", headers=headers, json={"active": False, "name": "Ada"})

    assert response.status_code == 200
    assert response.get_json()["active"] is False
    assert response.get_json()["name"] == "Ada"
    assert client.get("/api/v1/events", headers={"Authorization": f"Bearer {user_key}"}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [({"email": "not-an-email"}, "email"), ({"is_admin": "yes"}, "is_admin"), ({"colour": "red"}, "colour")],
)
def test_api_update_user_rejects_invalid(client, admin, make_user, make_api_key, body, field):
    user = make_user(email="ada@example.com")
    headers = _admin_key(make_api_key, admin)

    response = client.put(f"/api/v1/admin/users/{user['id']}", headers=headers, json=body)

    assert response.status_code == 422
    assert field in str(response.get_json()["error"])
    assert _user(client.application, user["id"]).email == "ada@example.com"


def test_api_delete_user(client, admin, make_user, make_api_key):
    user = make_user(email="ada@example.com")
    headers = _admin_key(make_api_key, admin)

    refused = client.delete(f"/api/v1/admin/users/{user['id']}?confirm=wrong@example.com", headers=headers)
    response = client.delete(f"/api/v1/admin/users/{user['id']}?confirm=ada@example.com", headers=headers)

    assert refused.status_code == 422
    assert response.status_code == 200
    assert [org["id"] for org in response.get_json()["organizations_deleted"]] == [user["org_id"]]
    assert _user(client.application, user["id"]) is None


def test_api_unknown_user_is_404(client, admin, make_api_key):
    headers = _admin_key(make_api_key, admin)

    assert client.get("/api/v1/admin/users/9999", headers=headers).status_code == 404


def test_admin_routes_in_openapi(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]

    assert set(paths["/api/v1/admin/users/{user_id}"]) == {"get", "put", "delete"}
    assert "post" in paths["/api/v1/admin/maintenance"]


def test_key_admin_flag_is_read_per_request(client, make_user, make_api_key):
    """Removing the admin flag closes the admin API to the user's existing keys at once."""
    user = make_user(is_admin=True)
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    assert client.get("/api/v1/admin/users", headers=headers).status_code == 200
    with client.application.app_context():
        db.session.get(User, user["id"]).is_admin = False
        db.session.commit()

    assert client.get("/api/v1/admin/users", headers=headers).status_code == 404


def test_org_scope_unaffected_by_admin_api(client, make_user, make_api_key):
    """An admin key still lists only its own organization's events through the customer API."""
    admin_user = make_user(is_admin=True)
    other = make_user()
    _add_event(client.application, other["org_id"], other["id"])
    headers = {"Authorization": f"Bearer {make_api_key(admin_user)}"}

    response = client.get("/api/v1/events", headers=headers)

    assert response.get_json()["data"] == []
    with client.application.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey)) == 1


def test_stats_revenue_by_plan(client, admin, make_user, make_api_key):
    from app.billing.models import Invoice, Subscription

    user = make_user()
    with client.application.app_context():
        subscription = Subscription(
            org_id=user["org_id"], stripe_id="sub_1", stripe_customer_id="cus_1", status="active", plan="pro"
        )
        db.session.add(subscription)
        db.session.flush()
        for number, amount in ((1, 1900), (2, 1900)):
            db.session.add(
                Invoice(
                    org_id=user["org_id"],
                    stripe_id=f"in_{number}",
                    stripe_customer_id="cus_1",
                    subscription_id=subscription.id,
                    status="paid",
                    currency="usd",
                    amount_paid=amount,
                    paid_at=utcnow(),
                )
            )
        db.session.add(
            Invoice(org_id=user["org_id"], stripe_id="in_3", stripe_customer_id="cus_1", status="open", amount_due=500)
        )
        db.session.commit()

    body = client.get("/api/v1/admin/stats", headers=_admin_key(make_api_key, admin)).get_json()
    page = client.get("/admin/stats")

    assert body["revenue_by_plan"] == [{"plan": "pro", "currency": "usd", "amount_paid": 3800, "invoices": 2}]
    assert b"38.00" in page.data
    assert b'id="chart-revenue"' in page.data
