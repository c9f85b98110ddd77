"""The account lifecycle: verification, password reset and change, email change, deletion, sessions."""

import io
import re
from datetime import timedelta

import pytest
from werkzeug.security import check_password_hash

from app.admin.models import AuditEntry
from app.auth import account_service
from app.auth.models import AccountToken, User, UserSession
from app.events.models import Event
from app.extensions import db
from app.files.models import File
from app.files.service import store_file
from app.files.storage import get_storage
from app.mail import outbox
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow

NEW_PASSWORD = "a brand new passphrase"
CHROME_ON_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
)


def signed_in_client(app, user, **extra):
    client = app.test_client()
    response = client.post("/signin", data={"email": user["email"], "password": user["password"], **extra})
    assert response.status_code == 302
    return client


def link_in(message, path):
    match = re.search(rf"http://localhost({re.escape(path)}\S+)", message.get_content())
    assert match, f"no {path} link in the email body"
    return match.group(1)


def mails_to(app, address):
    return [message for message in outbox(app) if message["To"] == address]


def move_clock(monkeypatch, delta):
    """Make the account service see a time `delta` from now."""
    later = utcnow() + delta
    monkeypatch.setattr(account_service, "utcnow", lambda: later)


def load_user(app, user_id):
    with app.app_context():
        user = db.session.get(User, user_id)
        if user is not None:
            db.session.expunge(user)
        return user


def audit_actions(app):
    with app.app_context():
        return [entry.action for entry in db.session.scalars(db.select(AuditEntry).order_by(AuditEntry.id))]


def sign_up(client, email="new@example.com"):
    return client.post("/signup", data={"email": email, "password": "long enough pw", "confirm": "long enough pw"})


# Email verification


def test_signup_sends_verification_and_shows_banner(client, app):
    response = sign_up(client)

    assert response.status_code == 302
    (message,) = mails_to(app, "new@example.com")
    assert "Verify your email" in message["Subject"]
    page = client.get("/").get_data(as_text=True)
    assert 'id="verify-banner"' in page
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "new@example.com"))
        assert user.email_verified_at is None
        token = db.session.scalar(db.select(AccountToken).where(AccountToken.user_id == user.id))
        raw = link_in(message, "/account/verify/").rsplit("/", 1)[1]
        assert token.token_hash != raw
        assert raw not in token.token_hash


def test_verification_link_verifies_once(client, app):
    sign_up(client)
    link = link_in(mails_to(app, "new@example.com")[0], "/account/verify/")

    first = client.get(link)
    again = client.get(link)

    assert first.status_code == 302
    assert again.status_code == 400
    assert "already used" in again.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "new@example.com"))
        assert user.email_verified_at is not None
    assert 'id="verify-banner"' not in client.get("/").get_data(as_text=True)
    assert "auth.email_verified" in audit_actions(app)


def test_verification_link_expires(client, app, monkeypatch):
    sign_up(client)
    link = link_in(mails_to(app, "new@example.com")[0], "/account/verify/")
    move_clock(monkeypatch, timedelta(hours=app.config["EMAIL_VERIFICATION_TTL_HOURS"], seconds=1))

    response = client.get(link)

    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "new@example.com"))
        assert user.email_verified_at is None


def test_verification_link_unknown_token(client):
    response = client.get("/account/verify/not-a-real-token")

    assert response.status_code == 400
    assert "invalid" in response.get_data(as_text=True)


def test_resend_replaces_link_and_is_rate_limited(client, app):
    sign_up(client)
    first_link = link_in(mails_to(app, "new@example.com")[0], "/account/verify/")
    limit = app.config["VERIFICATION_RESEND_RATE_LIMIT"]

    for _ in range(limit):
        assert client.post("/account/verify/resend").status_code == 302
    refused = client.post("/account/verify/resend")

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert len(mails_to(app, "new@example.com")) == 1 + limit
    assert client.get(first_link).status_code == 400
    newest_link = link_in(mails_to(app, "new@example.com")[-1], "/account/verify/")
    assert client.get(newest_link).status_code == 302


def test_signup_rate_limited_per_address(client, app):
    app.config["SIGNUP_RATE_LIMIT"] = 2
    for index in range(2):
        assert sign_up(app.test_client(), f"person{index}@example.com").status_code == 302

    response = sign_up(client, "person-late@example.com")

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    with app.app_context():
        assert db.session.scalar(db.select(User).where(User.email == "person-late@example.com")) is None


# Password reset


def test_reset_request_hides_unknown_email(app, make_user):
    user = make_user(email="known@example.com")

    known = app.test_client().post("/password/forgot", data={"email": user["email"]}, follow_redirects=True)
    unknown = app.test_client().post("/password/forgot", data={"email": "nobody@example.com"}, follow_redirects=True)

    assert known.status_code == unknown.status_code == 200
    known_text = known.get_data(as_text=True).replace("known@example.com", "EMAIL")
    unknown_text = unknown.get_data(as_text=True).replace("nobody@example.com", "EMAIL")
    assert "If an account exists for EMAIL" in known_text
    # Only the CSRF tokens may differ between the two pages.
    csrf = r'"X-CSRFToken": "[^"]*"|value="[^"]*"'
    assert re.sub(csrf, "", known_text) == re.sub(csrf, "", unknown_text)
    assert len(mails_to(app, "known@example.com")) == 1
    assert mails_to(app, "nobody@example.com") == []


def test_signin_page_links_forgot_password(client):
    page = client.get("/signin").get_data(as_text=True)

    assert 'href="/password/forgot"' in page


def test_password_reset_sets_password_and_ends_sessions(app, make_user):
    user = make_user()
    other_browser = signed_in_client(app, user, remember="y")
    client = app.test_client()
    client.post("/password/forgot", data={"email": user["email"]})
    link = link_in(mails_to(app, user["email"])[0], "/password/reset/")

    form = client.get(link)
    response = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

    assert form.status_code == 200
    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"
    assert other_browser.get("/").status_code == 302
    stored = load_user(app, user["id"])
    assert check_password_hash(stored.password_hash, NEW_PASSWORD)
    assert client.post("/signin", data={"email": user["email"], "password": NEW_PASSWORD}).status_code == 302
    actions = audit_actions(app)
    assert "auth.password_reset_requested" in actions
    assert "auth.password_reset" in actions


def test_password_reset_link_is_single_use(app, make_user):
    user = make_user()
    client = app.test_client()
    client.post("/password/forgot", data={"email": user["email"]})
    link = link_in(mails_to(app, user["email"])[0], "/password/reset/")
    client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

    again = client.post(link, data={"password": "yet another passphrase", "confirm": "yet another passphrase"})

    assert again.status_code == 400
    assert "already used" in again.get_data(as_text=True)
    assert check_password_hash(load_user(app, user["id"]).password_hash, NEW_PASSWORD)


def test_password_reset_link_expires(app, make_user, monkeypatch):
    user = make_user()
    client = app.test_client()
    client.post("/password/forgot", data={"email": user["email"]})
    link = link_in(mails_to(app, user["email"])[0], "/password/reset/")
    move_clock(monkeypatch, timedelta(minutes=app.config["PASSWORD_RESET_TTL_MINUTES"], seconds=1))

    response = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

    assert response.status_code == 400
    assert "expired" in response.get_data(as_text=True)
    assert check_password_hash(load_user(app, user["id"]).password_hash, user["password"])


def test_password_reset_rejects_short_password(app, make_user):
    user = make_user()
    client = app.test_client()
    client.post("/password/forgot", data={"email": user["email"]})
    link = link_in(mails_to(app, user["email"])[0], "/password/reset/")

    response = client.post(link, data={"password": "short", "confirm": "short"})

    assert response.status_code == 422
    assert check_password_hash(load_user(app, user["id"]).password_hash, user["password"])
    assert client.get(link).status_code == 200


def test_password_reset_rate_limited_per_email(app, make_user):
    user = make_user()
    limit = app.config["PASSWORD_RESET_RATE_LIMIT"]
    for _ in range(limit):
        app.test_client().post("/password/forgot", data={"email": user["email"]})

    response = app.test_client().post("/password/forgot", data={"email": user["email"]})

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert len(mails_to(app, user["email"])) == limit


def test_password_reset_rate_limited_per_address(app, client):
    app.config["PASSWORD_RESET_ADDRESS_RATE_LIMIT"] = 2
    for index in range(2):
        client.post("/password/forgot", data={"email": f"someone{index}@example.com"})

    response = client.post("/password/forgot", data={"email": "someone-else@example.com"})

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


# Password change


def test_password_change_ends_other_sessions_and_remember_cookies(app, make_user):
    user = make_user()
    client_a = signed_in_client(app, user)
    client_b = signed_in_client(app, user, remember="y")
    b_session = client_b.get_cookie("session").value
    b_remember = client_b.get_cookie("remember_token").value
    # The remember-me cookie alone signs B back in before the change.
    client_b.delete_cookie("session")
    assert client_b.get("/").status_code == 200

    response = client_a.post(
        "/settings/password",
        data={"current_password": user["password"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )

    assert response.status_code == 302
    only_session = app.test_client()
    only_session.set_cookie("session", b_session)
    only_remember = app.test_client()
    only_remember.set_cookie("remember_token", b_remember)
    for stale in (only_session, only_remember, client_b):
        page = stale.get("/")
        assert page.status_code == 302
        assert page.headers["Location"].startswith("/signin")
        assert stale.get("/api/v1/events").status_code == 401
    assert client_a.get("/").status_code == 200
    assert client_a.get("/api/v1/events").status_code == 200
    assert check_password_hash(load_user(app, user["id"]).password_hash, NEW_PASSWORD)
    assert "auth.password_changed" in audit_actions(app)


def test_password_change_replaces_this_browsers_cookies(app, make_user):
    user = make_user()
    client = signed_in_client(app, user, remember="y")
    old_session = client.get_cookie("session").value
    old_remember = client.get_cookie("remember_token").value

    client.post(
        "/settings/password",
        data={"current_password": user["password"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )

    assert client.get_cookie("remember_token").value != old_remember
    client.delete_cookie("session")
    assert client.get("/").status_code == 200
    replay = app.test_client()
    replay.set_cookie("session", old_session)
    assert replay.get("/").status_code == 302


def test_password_change_wrong_current_password(app, make_user):
    user = make_user()
    client_a = signed_in_client(app, user)
    client_b = signed_in_client(app, user)

    response = client_a.post(
        "/settings/password",
        data={"current_password": "not my password", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )

    assert response.status_code == 422
    assert "current password is wrong" in response.get_data(as_text=True)
    assert check_password_hash(load_user(app, user["id"]).password_hash, user["password"])
    assert client_b.get("/").status_code == 200
    assert "auth.password_changed" not in audit_actions(app)


def test_password_change_mismatched_confirmation(app, make_user):
    user = make_user()
    client = signed_in_client(app, user)

    response = client.post(
        "/settings/password",
        data={"current_password": user["password"], "password": NEW_PASSWORD, "confirm": "something else entirely"},
    )

    assert response.status_code == 422
    assert "do not match" in response.get_data(as_text=True)
    assert check_password_hash(load_user(app, user["id"]).password_hash, user["password"])


# Email change


def test_email_change_applies_when_confirmed(app, make_user):
    user = make_user(email="old@example.com")
    client = signed_in_client(app, user)

    response = client.post("/settings/email", data={"email": "New@Example.com", "current_password": user["password"]})

    assert response.status_code == 302
    assert load_user(app, user["id"]).email == "old@example.com"
    (confirmation,) = mails_to(app, "new@example.com")
    assert "is about to change" in mails_to(app, "old@example.com")[0]["Subject"]
    link = link_in(confirmation, "/account/email/confirm/")

    confirmed = client.get(link)

    assert confirmed.status_code == 302
    stored = load_user(app, user["id"])
    assert stored.email == "new@example.com"
    assert stored.email_verified_at is not None
    assert "was changed" in mails_to(app, "old@example.com")[-1]["Subject"]
    assert client.get(link).status_code == 400
    actions = audit_actions(app)
    assert "auth.email_change_requested" in actions
    assert "auth.email_changed" in actions


def test_email_change_wrong_current_password(app, make_user):
    user = make_user(email="old@example.com")
    client = signed_in_client(app, user)

    response = client.post("/settings/email", data={"email": "new@example.com", "current_password": "wrong one"})

    assert response.status_code == 422
    assert "current password is wrong" in response.get_data(as_text=True)
    assert mails_to(app, "new@example.com") == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(AccountToken.id))) == 0


@pytest.mark.parametrize(
    "new_email, status, message",
    [("not-an-email", 422, "valid email"), ("taken@example.com", 409, "Another account uses this email")],
)
def test_email_change_rejects_bad_address(app, make_user, new_email, status, message):
    make_user(email="taken@example.com")
    user = make_user(email="old@example.com")
    client = signed_in_client(app, user)

    response = client.post("/settings/email", data={"email": new_email, "current_password": user["password"]})

    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert load_user(app, user["id"]).email == "old@example.com"


def test_email_change_link_expires(app, make_user, monkeypatch):
    user = make_user(email="old@example.com")
    client = signed_in_client(app, user)
    client.post("/settings/email", data={"email": "new@example.com", "current_password": user["password"]})
    link = link_in(mails_to(app, "new@example.com")[0], "/account/email/confirm/")
    move_clock(monkeypatch, timedelta(hours=app.config["EMAIL_VERIFICATION_TTL_HOURS"], seconds=1))

    response = client.get(link)

    assert response.status_code == 400
    assert load_user(app, user["id"]).email == "old@example.com"


# Deleting the account


def add_org_with_member(app, owner, member):
    with app.app_context():
        org = Organization(name="Team Rocket", personal=False)
        db.session.add(org)
        db.session.flush()
        db.session.add(Membership(org_id=org.id, user_id=owner["id"], role="owner"))
        db.session.add(Membership(org_id=org.id, user_id=member["id"], role="member"))
        db.session.commit()
        return org.id


def test_delete_account_refused_while_paying(app, make_user):
    from app.billing.models import Subscription

    user = make_user()
    with app.app_context():
        db.session.add(
            Subscription(
                org_id=user["org_id"],
                stripe_id="sub_paying",
                stripe_customer_id="cus_paying",
                status="active",
                plan="pro",
            )
        )
        db.session.commit()
    client = signed_in_client(app, user)

    response = client.post(
        "/settings/account/delete", data={"confirm_email": user["email"], "current_password": user["password"]}
    )

    assert response.status_code == 409
    assert "paid subscription" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user["id"]) is not None
        assert db.session.get(Organization, user["org_id"]) is not None


def test_delete_account_removes_user_and_personal_data(app, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    client = signed_in_client(app, user)
    event = {"type": "file_opened", "path": "a.txt", "tool": "vim", "occurred_at": "2025-02-13T09:16:25Z"}
    assert client.post("/api/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}).status_code == 201
    with app.app_context():
        stored = store_file(user["org_id"], user["id"], "notes.txt", io.BytesIO(b"hello"))
        db.session.commit()
        blob = get_storage().path(user["org_id"], stored.storage_key)
    assert blob.exists()

    response = client.post(
        "/settings/account/delete", data={"confirm_email": user["email"], "current_password": user["password"]}
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"
    assert not blob.exists()
    with app.app_context():
        assert db.session.get(User, user["id"]) is None
        assert db.session.get(Organization, user["org_id"]) is None
        assert db.session.scalar(db.select(db.func.count(Event.id))) == 0
        assert db.session.scalar(db.select(db.func.count(File.id))) == 0
        assert db.session.scalar(db.select(db.func.count(UserSession.id))) == 0
        entry = db.session.scalar(db.select(AuditEntry).where(AuditEntry.action == "auth.account_deleted"))
        assert entry.actor_email == user["email"]
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    "confirm_email, password, message",
    [("someone@example.com", None, "Type your email"), (None, "not my password", "current password is wrong")],
)
def test_delete_account_needs_email_and_password(app, make_user, confirm_email, password, message):
    user = make_user()
    client = signed_in_client(app, user)

    response = client.post(
        "/settings/account/delete",
        data={"confirm_email": confirm_email or user["email"], "current_password": password or user["password"]},
    )

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert load_user(app, user["id"]) is not None
    assert client.get("/").status_code == 200


def test_delete_account_refused_for_only_owner_with_members(app, make_user):
    owner = make_user()
    member = make_user()
    org_id = add_org_with_member(app, owner, member)
    client = signed_in_client(app, owner)

    page = client.get("/settings/account").get_data(as_text=True)
    response = client.post(
        "/settings/account/delete", data={"confirm_email": owner["email"], "current_password": owner["password"]}
    )

    assert "Team Rocket" in page
    assert response.status_code == 409
    assert "only owner of Team Rocket" in response.get_data(as_text=True)
    assert load_user(app, owner["id"]) is not None
    with app.app_context():
        assert db.session.get(Organization, org_id) is not None


def test_delete_account_keeps_org_with_another_owner(app, make_user):
    owner = make_user()
    co_owner = make_user()
    org_id = add_org_with_member(app, owner, co_owner)
    with app.app_context():
        membership = db.session.scalar(
            db.select(Membership).where(Membership.user_id == co_owner["id"], Membership.org_id == org_id)
        )
        membership.role = "owner"
        db.session.commit()
    client = signed_in_client(app, owner)

    response = client.post(
        "/settings/account/delete", data={"confirm_email": owner["email"], "current_password": owner["password"]}
    )

    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Organization, org_id) is not None
        assert db.session.get(User, co_owner["id"]) is not None


# Sessions


def test_sessions_page_shows_device_and_this_session(app, make_user):
    user = make_user()
    client = app.test_client()
    client.post(
        "/signin",
        data={"email": user["email"], "password": user["password"]},
        headers={"User-Agent": CHROME_ON_WINDOWS},
    )
    signed_in_client(app, user)

    page = client.get("/settings", headers={"User-Agent": CHROME_ON_WINDOWS}).get_data(as_text=True)

    assert "Chrome on Windows" in page
    assert page.count("this session") == 1
    assert len(re.findall(r'/settings/sessions/\d+/revoke"', page)) == 1


def test_session_revoke_is_audited(app, make_user):
    user = make_user()
    client = signed_in_client(app, user)
    other = signed_in_client(app, user)
    with app.app_context():
        other_id = max(db.session.scalars(db.select(UserSession.id)))

    response = client.post(f"/settings/sessions/{other_id}/revoke")

    assert response.status_code in (200, 302)
    assert other.get("/").status_code == 302
    assert "auth.session_revoked" in audit_actions(app)


def test_last_seen_updated_at_most_once_a_minute(app, make_user):
    user = make_user()
    client = signed_in_client(app, user)

    def set_last_seen(age):
        with app.app_context():
            user_session = db.session.scalar(db.select(UserSession))
            user_session.last_seen_at = utcnow() - age
            db.session.commit()
            return user_session.last_seen_at

    recent = set_last_seen(timedelta(seconds=10))
    client.get("/")
    with app.app_context():
        assert db.session.scalar(db.select(UserSession.last_seen_at)) == recent

    stale = set_last_seen(timedelta(minutes=5))
    client.get("/")
    with app.app_context():
        assert db.session.scalar(db.select(UserSession.last_seen_at)) > stale


@pytest.mark.parametrize(
    "user_agent, expected",
    [
        (CHROME_ON_WINDOWS, "Chrome on Windows"),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox on Linux"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.4 Safari/605.1.15",
            "Safari on macOS",
        ),
        (CHROME_ON_WINDOWS + " Edg/124.0", "Edge on Windows"),
        ("curl/8.5.0", "curl/8.5.0"),
        ("", "Unknown device"),
    ],
)
def test_describe_user_agent(user_agent, expected):
    assert account_service.describe_user_agent(user_agent) == expected


# Audit entries


def test_audit_details_hold_no_token_or_password(app, make_user):
    user = make_user()
    client = signed_in_client(app, user)
    client.post("/password/forgot", data={"email": user["email"]})
    link = link_in(mails_to(app, user["email"])[0], "/password/reset/")
    token = link.rsplit("/", 1)[1]
    client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

    with app.app_context():
        entries = db.session.scalars(db.select(AuditEntry)).all()
        text = " ".join(str(entry.details) for entry in entries)

    assert len(entries) >= 2
    assert token not in text
    assert NEW_PASSWORD not in text
    assert user["password"] not in text
