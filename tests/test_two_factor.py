"""Two-factor sign-in: enrolment, the code step of sign-in, backup codes, limits and organizations.

The TOTP clock is frozen by replacing `two_factor_service.current_time`, so every code is
computed for a known time step.
"""

import logging
import re
from types import SimpleNamespace

import pyotp
import pytest

from app.admin.models import AuditEntry
from app.auth import service as auth_service
from app.auth import two_factor_service
from app.auth.models import BackupCode, User, UserSession
from app.extensions import db
from app.orgs.models import Membership, Organization

# 2027-01-15 08:00:10 UTC: ten seconds into TOTP time step 60,000,000.
FROZEN_TIME = 1_800_000_010.0
STEP = 30
SECRET_ON_PAGE = re.compile(r'data-testid="totp-secret"[^>]*>([A-Z2-7]+)<')
BACKUP_CODE = re.compile(r"\b[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}\b")


class Clock:
    def __init__(self, now):
        self.now = now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    frozen = Clock(FROZEN_TIME)
    monkeypatch.setattr(two_factor_service, "current_time", lambda: frozen.now)
    return frozen


@pytest.fixture
def enable_two_factor(app, clock):
    """Turn two-factor on for a make_user dict; returns {"secret": ..., "backup_codes": [...]}.

    The enrolment code is taken ten steps before the frozen time, so that every code a test
    computes for the frozen time is still unused.
    """

    def enable(user):
        with app.app_context():
            account = db.session.get(User, user["id"])
            secret = two_factor_service.pending_secret(account)
            clock.advance(-10 * STEP)
            try:
                codes = two_factor_service.enable(account, pyotp.TOTP(secret).at(clock.now))
            finally:
                clock.advance(10 * STEP)
            db.session.commit()
        return {"secret": secret, "backup_codes": codes}

    return enable


def code_at(secret, when):
    return pyotp.TOTP(secret).at(when)


def audit_actions(app, action):
    with app.app_context():
        return db.session.scalars(
            db.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).all()


def pending_sessions(app, user_id):
    with app.app_context():
        return db.session.scalars(
            db.select(UserSession).where(UserSession.user_id == user_id, UserSession.two_factor_pending.is_(True))
        ).all()


# Enrolment


def test_enrolment_page_shows_qr_and_secret(client, auth, make_user, app, clock, caplog):
    user = make_user()
    auth.signin(user["email"])
    caplog.set_level(logging.DEBUG)

    response = client.get("/settings/two-factor")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    secret = SECRET_ON_PAGE.search(page).group(1)
    assert len(secret) == 32
    assert "<svg" in page
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None, "the page must have no inline script"
    with app.app_context():
        account = db.session.get(User, user["id"])
        assert account.totp_pending_secret_encrypted
        assert secret not in account.totp_pending_secret_encrypted
        assert account.totp_secret_encrypted is None
        assert not account.two_factor_enabled
    assert secret not in caplog.text
    # Reloading keeps the same secret, so an app scanned before a reload still matches.
    assert SECRET_ON_PAGE.search(client.get("/settings/two-factor").get_data(as_text=True)).group(1) == secret


def test_enrolment_rejects_wrong_code(client, auth, make_user, app, clock):
    user = make_user()
    auth.signin(user["email"])
    secret = SECRET_ON_PAGE.search(client.get("/settings/two-factor").get_data(as_text=True)).group(1)
    wrong = code_at(secret, clock.now + 5 * STEP)

    response = client.post("/settings/two-factor", data={"code": wrong})

    assert response.status_code == 422
    assert b"The code is invalid" in response.data
    with app.app_context():
        account = db.session.get(User, user["id"])
        assert not account.two_factor_enabled
        assert account.totp_secret_encrypted is None
        assert db.session.scalar(db.select(db.func.count(BackupCode.id))) == 0
    assert audit_actions(app, "auth.two_factor_enabled") == []
    assert len(audit_actions(app, "auth.two_factor_failed")) == 1


@pytest.mark.parametrize("code", ["", "12345", "abcdef", "1" * 40])
def test_enrolment_rejects_malformed_code(client, auth, make_user, app, clock, code):
    user = make_user()
    auth.signin(user["email"])
    client.get("/settings/two-factor")

    response = client.post("/settings/two-factor", data={"code": code})

    assert response.status_code == 422
    with app.app_context():
        assert not db.session.get(User, user["id"]).two_factor_enabled


def test_enrolment_enables_and_shows_backup_codes_once(client, auth, make_user, app, clock):
    user = make_user()
    auth.signin(user["email"])
    secret = SECRET_ON_PAGE.search(client.get("/settings/two-factor").get_data(as_text=True)).group(1)

    response = client.post("/settings/two-factor", data={"code": code_at(secret, clock.now)})

    assert response.status_code == 302
    assert response.headers["Location"] == "/settings/two-factor"
    page = client.get("/settings/two-factor").get_data(as_text=True)
    codes = BACKUP_CODE.findall(page)
    assert len(set(codes)) == 10
    assert "Two-factor sign-in is on" in page
    with app.app_context():
        account = db.session.get(User, user["id"])
        assert account.two_factor_enabled
        assert account.totp_pending_secret_encrypted is None
        assert secret not in account.totp_secret_encrypted
        stored = db.session.scalars(db.select(BackupCode.code_hash).where(BackupCode.user_id == user["id"])).all()
        assert len(stored) == 10
        assert not any(code.replace("-", "") in digest for code in codes for digest in stored)
    assert len(audit_actions(app, "auth.two_factor_enabled")) == 1
    again = client.get("/settings/two-factor").get_data(as_text=True)
    assert BACKUP_CODE.findall(again) == []
    assert "10 unused backup codes left" in again


# Sign-in


def test_signin_asks_for_code_then_signs_in(client, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]

    response = client.post(
        "/signin", query_string={"next": "/events"}, data={"email": user["email"], "password": user["password"]}
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin/two-factor"
    assert len(pending_sessions(app, user["id"])) == 1
    assert client.get("/").status_code == 302
    assert audit_actions(app, "auth.signed_in") == []

    response = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})

    assert response.status_code == 302
    assert response.headers["Location"] == "/events"
    assert client.get("/").status_code == 200
    assert pending_sessions(app, user["id"]) == []
    entries = audit_actions(app, "auth.signed_in")
    assert len(entries) == 1
    assert entries[0].actor_id == user["id"]
    assert entries[0].details == {"two_factor": "totp"}
    assert entries[0].ip_address == "127.0.0.1"


@pytest.mark.parametrize("offset_steps", [-1, 1])
def test_signin_accepts_neighbouring_step(client, auth, make_user, app, clock, enable_two_factor, offset_steps):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])

    response = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now + offset_steps * STEP)})

    assert response.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("offset_steps", [-2, 2])
def test_signin_rejects_code_two_steps_away(client, auth, make_user, app, clock, enable_two_factor, offset_steps):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])

    response = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now + offset_steps * STEP)})

    assert response.status_code == 422
    assert b"The code is invalid or was already used" in response.data
    assert client.get("/").status_code == 302
    assert len(pending_sessions(app, user["id"])) == 1
    failures = audit_actions(app, "auth.two_factor_failed")
    assert len(failures) == 1
    assert failures[0].details == {"purpose": "sign-in"}


def test_signin_rejects_reused_code(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    code = code_at(secret, clock.now)
    auth.signin(user["email"])
    assert client.post("/signin/two-factor", data={"code": code}).status_code == 302
    auth.signout()
    auth.signin(user["email"])

    response = client.post("/signin/two-factor", data={"code": code})

    assert response.status_code == 422
    assert client.get("/").status_code == 302
    # An older code inside the window is rejected too once a later step was used.
    assert client.post("/signin/two-factor", data={"code": code_at(secret, clock.now - STEP)}).status_code == 422
    assert client.post("/signin/two-factor", data={"code": code_at(secret, clock.now + STEP)}).status_code == 302


def test_backup_code_works_once(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    backup_code = enable_two_factor(user)["backup_codes"][0]
    auth.signin(user["email"])

    response = client.post("/signin/two-factor", data={"code": backup_code.upper()})

    assert response.status_code == 302
    assert client.get("/").status_code == 200
    with app.app_context():
        used = db.session.scalar(db.select(db.func.count(BackupCode.id)).where(BackupCode.used_at.is_not(None)))
        assert used == 1
    assert audit_actions(app, "auth.signed_in")[0].details == {"two_factor": "backup"}

    auth.signout()
    auth.signin(user["email"])
    response = client.post("/signin/two-factor", data={"code": backup_code})

    assert response.status_code == 422
    assert client.get("/").status_code == 302


def test_half_signed_in_browser_is_refused_everywhere(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])

    dashboard = client.get("/")
    enrol = client.post("/settings/two-factor", data={"code": code_at(secret, clock.now)})
    password = client.post(
        "/settings/password",
        data={"current_password": user["password"], "password": "a new password", "confirm": "a new password"},
    )
    api = client.get("/api/v1/events")
    events_page = client.get("/events")

    assert dashboard.status_code == 302
    assert dashboard.headers["Location"].startswith("/signin")
    assert enrol.status_code == 302
    assert enrol.headers["Location"].startswith("/signin")
    assert password.status_code == 302
    assert password.headers["Location"].startswith("/signin")
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "missing_api_key"
    assert events_page.status_code == 302
    assert events_page.headers["Location"].startswith("/signin")

    assert client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)}).status_code == 302
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/events").status_code == 200
    assert client.get("/events").status_code == 200
    with app.app_context():
        assert auth_service.authenticate(user["email"], user["password"]) is not None


def test_pending_session_cookie_is_not_signed_in(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    enable_two_factor(user)
    auth.signin(user["email"])
    with client.session_transaction() as flask_session:
        key = flask_session["two_factor_session_key"]
    # A forged Flask-Login cookie that carries the pending key must not sign in either.
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = key
        flask_session["_fresh"] = True

    assert client.get("/").status_code == 302
    assert client.get("/api/v1/events").status_code == 401


def test_remember_me_applies_after_code(client, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]

    client.post("/signin", data={"email": user["email"], "password": user["password"], "remember": "y"})

    assert client.get_cookie("remember_token") is None

    client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})

    assert client.get_cookie("remember_token") is not None
    # The remember-me cookie alone signs the browser in again.
    client.delete_cookie("session")
    assert client.get("/").status_code == 200


def test_code_step_without_password_step(client, clock):
    response = client.get("/signin/two-factor")

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"


def test_pending_session_expires(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])
    with app.app_context():
        user_session = db.session.scalars(db.select(UserSession).where(UserSession.user_id == user["id"])).one()
        user_session.created_at = user_session.created_at - two_factor_service.PENDING_SESSION_LIFETIME
        db.session.commit()

    response = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"
    assert client.get("/").status_code == 302


def test_cancel_revokes_pending_session(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])

    response = client.post("/signin/two-factor/cancel")

    assert response.status_code == 302
    with app.app_context():
        user_session = db.session.scalars(db.select(UserSession).where(UserSession.user_id == user["id"])).one()
        assert user_session.revoked_at is not None
    assert client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)}).status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_codes_rate_limited(client, auth, make_user, app, clock, enable_two_factor):
    app.config["TWO_FACTOR_RATE_LIMIT"] = 3
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])
    wrong = code_at(secret, clock.now + 10 * STEP)
    statuses = [client.post("/signin/two-factor", data={"code": wrong}).status_code for _ in range(3)]

    response = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})

    assert statuses == [422, 422, 422]
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert b"Too many two-factor code attempts" in response.data
    assert client.get("/").status_code == 302
    assert len(audit_actions(app, "auth.two_factor_failed")) == 3


def test_correct_codes_do_not_use_up_limit(client, auth, make_user, app, clock, enable_two_factor, monkeypatch):
    app.config["TWO_FACTOR_RATE_LIMIT"] = 2
    # One rate-limit window for the whole test, wherever the real clock is.
    monkeypatch.setattr("app.ratelimit.time", SimpleNamespace(time=lambda: 1_800_000_150.0))
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    wrong = code_at(secret, clock.now + 10 * STEP)

    auth.signin(user["email"])
    first_wrong = client.post("/signin/two-factor", data={"code": wrong})
    correct = client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})
    auth.signout()
    clock.now += STEP
    auth.signin(user["email"])
    second_wrong = client.post("/signin/two-factor", data={"code": wrong})
    third_wrong = client.post("/signin/two-factor", data={"code": wrong})

    assert first_wrong.status_code == 422
    assert correct.status_code == 302
    assert second_wrong.status_code == 422
    assert third_wrong.status_code == 429


def test_code_attempts_limited_per_address(client, auth, make_user, app, clock, enable_two_factor):
    app.config["TWO_FACTOR_RATE_LIMIT"] = 1
    users = [make_user() for _ in range(6)]
    statuses = []
    for user in users:
        secret = enable_two_factor(user)["secret"]
        auth.signin(user["email"])
        statuses.append(client.post("/signin/two-factor", data={"code": code_at(secret, clock.now + 10 * STEP)}))

    assert [response.status_code for response in statuses] == [422] * 5 + [429]


# Settings once enabled


def test_regenerate_backup_codes(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    enabled = enable_two_factor(user)
    old_code = enabled["backup_codes"][0]
    client.post("/signin", data={"email": user["email"], "password": user["password"]})
    client.post("/signin/two-factor", data={"code": code_at(enabled["secret"], clock.now)})

    wrong = client.post("/settings/two-factor/backup-codes", data={"code": "000000"})
    clock.advance(STEP)
    response = client.post("/settings/two-factor/backup-codes", data={"code": code_at(enabled["secret"], clock.now)})

    assert wrong.status_code == 422
    assert response.status_code == 302
    new_codes = BACKUP_CODE.findall(client.get("/settings/two-factor").get_data(as_text=True))
    assert len(new_codes) == 10
    assert old_code not in new_codes
    assert len(audit_actions(app, "auth.backup_codes_regenerated")) == 1
    auth.signout()
    auth.signin(user["email"])
    assert client.post("/signin/two-factor", data={"code": old_code}).status_code == 422
    assert client.post("/signin/two-factor", data={"code": new_codes[0]}).status_code == 302


def test_disable_needs_valid_code(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    enabled = enable_two_factor(user)
    auth.signin(user["email"])
    client.post("/signin/two-factor", data={"code": enabled["backup_codes"][0]})

    wrong = client.post("/settings/two-factor/disable", data={"code": "123456"})
    reused = client.post("/settings/two-factor/disable", data={"code": enabled["backup_codes"][0]})

    assert wrong.status_code == 422
    assert reused.status_code == 422
    with app.app_context():
        assert db.session.get(User, user["id"]).two_factor_enabled

    response = client.post("/settings/two-factor/disable", data={"code": enabled["backup_codes"][1]})

    assert response.status_code == 302
    with app.app_context():
        account = db.session.get(User, user["id"])
        assert not account.two_factor_enabled
        assert account.totp_secret_encrypted is None
        assert db.session.scalar(db.select(db.func.count(BackupCode.id))) == 0
    assert len(audit_actions(app, "auth.two_factor_disabled")) == 1
    auth.signout()
    response = auth.signin(user["email"])
    assert response.headers["Location"] == "/"


# Audit of the password step


def test_signin_audit_entries(client, auth, make_user, app):
    user = make_user()

    client.post("/signin", data={"email": "  Nobody@Example.com", "password": "a secret password"})
    auth.signin(user["email"])

    failed = audit_actions(app, "auth.sign_in_failed")
    assert len(failed) == 1
    assert failed[0].actor_id is None
    assert failed[0].org_id is None
    assert failed[0].details == {"email": "nobody@example.com", "reason": "wrong email or password"}
    assert "a secret password" not in str(failed[0].details)
    signed_in = audit_actions(app, "auth.signed_in")
    assert len(signed_in) == 1
    assert signed_in[0].actor_id == user["id"]
    assert signed_in[0].ip_address == "127.0.0.1"


# Organizations


@pytest.fixture
def shared_org(app, make_user):
    """An organization owned by one user with a second user as member; returns (org_id, owner, member)."""
    owner = make_user()
    member = make_user()
    with app.app_context():
        org = Organization(name="Acme")
        db.session.add(org)
        db.session.flush()
        db.session.add(Membership(org_id=org.id, user_id=owner["id"], role="owner"))
        db.session.add(Membership(org_id=org.id, user_id=member["id"], role="member"))
        db.session.commit()
        org_id = org.id
    return org_id, owner, member


def choose_org(client, org_id):
    with client.session_transaction() as flask_session:
        flask_session["org_id"] = org_id


def test_owner_requires_two_factor(client, auth, app, clock, enable_two_factor, shared_org):
    org_id, owner, _ = shared_org
    secret = enable_two_factor(owner)["secret"]
    auth.signin(owner["email"])
    client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})
    choose_org(client, org_id)

    page = client.get("/settings/two-factor").get_data(as_text=True)
    response = client.post("/settings/two-factor/organization", data={"require_two_factor": "y"})

    assert 'id="organization-two-factor"' in page
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Organization, org_id).require_two_factor
    entries = audit_actions(app, "org.two_factor_required_changed")
    assert len(entries) == 1
    assert entries[0].org_id == org_id
    assert entries[0].details == {"require_two_factor": True}
    # The owner has two-factor, so the organization's pages stay open to them.
    assert client.get("/").status_code == 200


def test_admin_without_two_factor_cannot_require_it(client, auth, app, clock, shared_org):
    org_id, owner, _ = shared_org
    auth.signin(owner["email"])
    choose_org(client, org_id)

    response = client.post("/settings/two-factor/organization", data={"require_two_factor": "y"})

    assert response.status_code == 409
    assert b"Turn on two-factor sign-in for your own account" in response.data
    with app.app_context():
        assert not db.session.get(Organization, org_id).require_two_factor
    assert audit_actions(app, "org.two_factor_required_changed") == []


def test_member_cannot_change_requirement(client, auth, app, clock, enable_two_factor, shared_org):
    org_id, _, member = shared_org
    secret = enable_two_factor(member)["secret"]
    auth.signin(member["email"])
    client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})
    choose_org(client, org_id)

    page = client.get("/settings/two-factor").get_data(as_text=True)
    response = client.post("/settings/two-factor/organization", data={"require_two_factor": "y"})

    assert 'id="organization-two-factor"' not in page
    assert response.status_code == 403
    with app.app_context():
        assert not db.session.get(Organization, org_id).require_two_factor


def test_member_without_two_factor_sent_to_enrolment(client, auth, app, make_api_key, shared_org):
    org_id, _, member = shared_org
    with app.app_context():
        db.session.get(Organization, org_id).require_two_factor = True
        db.session.commit()
    org_key = make_api_key({**member, "org_id": org_id})
    personal_key = make_api_key(member)
    auth.signin(member["email"])
    choose_org(client, org_id)

    dashboard = client.get("/")
    flashed = client.get("/settings/two-factor").get_data(as_text=True)
    events = client.get("/events")
    htmx = client.get("/events", headers={"HX-Request": "true"})
    settings = client.get("/settings")
    enrolment = client.get("/settings/two-factor")
    api_with_key = client.get("/api/v1/events", headers={"Authorization": f"Bearer {org_key}"})
    api_with_cookie = client.get("/api/v1/events")
    api_personal = client.get("/api/v1/events", headers={"Authorization": f"Bearer {personal_key}"})

    assert dashboard.status_code == 302
    assert dashboard.headers["Location"] == "/settings/two-factor"
    assert "Acme requires two-factor sign-in. Turn it on below to continue." in flashed
    assert events.status_code == 302
    assert htmx.headers["HX-Redirect"] == "/settings/two-factor"
    assert settings.status_code == 200
    assert enrolment.status_code == 200
    assert "Acme requires two-factor sign-in" in enrolment.get_data(as_text=True)
    assert api_with_key.status_code == 403
    assert api_with_key.get_json()["error"]["code"] == "two_factor_required"
    assert "requires two-factor sign-in" in api_with_key.get_json()["error"]["message"]
    assert api_with_cookie.status_code == 403
    assert api_personal.status_code == 200
    assert client.post("/signout").status_code == 302


def test_member_with_two_factor_opens_required_org(client, auth, app, clock, enable_two_factor, shared_org):
    org_id, _, member = shared_org
    secret = enable_two_factor(member)["secret"]
    with app.app_context():
        db.session.get(Organization, org_id).require_two_factor = True
        db.session.commit()
    auth.signin(member["email"])
    client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})
    choose_org(client, org_id)

    assert client.get("/").status_code == 200
    assert client.get("/api/v1/events").status_code == 200


def test_disable_refused_while_org_requires(client, auth, app, clock, enable_two_factor, shared_org):
    org_id, _, member = shared_org
    enabled = enable_two_factor(member)
    with app.app_context():
        db.session.get(Organization, org_id).require_two_factor = True
        db.session.commit()
    auth.signin(member["email"])
    client.post("/signin/two-factor", data={"code": enabled["backup_codes"][0]})

    response = client.post("/settings/two-factor/disable", data={"code": enabled["backup_codes"][1]})

    assert response.status_code == 409
    assert b"required by Acme" in response.data
    with app.app_context():
        assert db.session.get(User, member["id"]).two_factor_enabled
        unused = db.session.scalar(db.select(db.func.count(BackupCode.id)).where(BackupCode.used_at.is_(None)))
        assert unused == 9


def test_rotate_secrets_reencrypts_totp_secret(client, auth, make_user, app, clock, enable_two_factor):
    app.config["SECRET_ENCRYPTION_KEYS"] = "old-key"
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    app.config["SECRET_ENCRYPTION_KEYS"] = "new-key,old-key"

    result = app.test_cli_runner().invoke(args=["floyo", "rotate-secrets"])

    assert result.exit_code == 0, result.output
    assert "two-factor secrets of 1 users" in result.output
    app.config["SECRET_ENCRYPTION_KEYS"] = "new-key"
    auth.signin(user["email"])
    assert client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)}).status_code == 302
    assert client.get("/").status_code == 200


def test_enable_twice_is_conflict(client, auth, make_user, app, clock, enable_two_factor):
    user = make_user()
    secret = enable_two_factor(user)["secret"]
    auth.signin(user["email"])
    client.post("/signin/two-factor", data={"code": code_at(secret, clock.now)})

    response = client.post("/settings/two-factor", data={"code": code_at(secret, clock.now + STEP)})

    assert response.status_code == 409
    assert b"Two-factor sign-in is already on for this account." in response.data
    assert len(audit_actions(app, "auth.two_factor_enabled")) == 0
