import re

import pytest

from app.auth.models import ApiKey, User, UserSession
from app.extensions import db
from app.orgs.models import Membership, Organization
from app.orgs.service import personal_org


def test_signup_creates_user_and_personal_org(client, app):
    response = client.post(
        "/signup",
        data={"name": "Ada", "email": "Ada@Example.com", "password": "long enough pw", "confirm": "long enough pw"},
    )

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "ada@example.com"))
        assert user is not None
        assert user.password_hash != "long enough pw"
        org = personal_org(user)
        assert org.personal
        membership = db.session.scalar(db.select(Membership).where(Membership.user_id == user.id))
        assert membership.role == "owner"
    assert client.get("/").status_code == 200


def test_signup_rejects_duplicate_email(client, make_user, app):
    make_user(email="taken@example.com")

    response = client.post(
        "/signup", data={"email": "taken@example.com", "password": "long enough pw", "confirm": "long enough pw"}
    )

    assert response.status_code == 422
    assert b"already exists" in response.data
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Organization.id))) == 1


def test_signin_wrong_password(client, make_user):
    user = make_user()

    response = client.post("/signin", data={"email": user["email"], "password": "wrong password"})

    assert response.status_code == 401
    assert b"email or password is wrong" in response.data


@pytest.mark.parametrize(
    "next_value, expected",
    [
        ("https://elsewhere.example/", "/"),
        ("//elsewhere.example", "/"),
        ("/\\elsewhere.example", "/"),
        ("/events?type=file_opened", "/events?type=file_opened"),
    ],
)
def test_signin_next_stays_on_site(client, make_user, next_value, expected):
    user = make_user()

    response = client.post(
        "/signin", query_string={"next": next_value}, data={"email": user["email"], "password": user["password"]}
    )

    assert response.status_code == 302
    assert response.headers["Location"] == expected


def test_page_requires_signin(client):
    response = client.get("/events")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/signin?next=/events")


def test_htmx_request_gets_hx_redirect(client):
    response = client.get("/events", headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/events?x=1"})

    assert response.status_code == 200
    assert response.headers["HX-Redirect"].startswith("/signin?next=")
    assert response.data == b""


def test_signout_revokes_server_session(client, auth, make_user, app):
    user = make_user()
    auth.signin(user["email"])
    cookie = client.get_cookie("session")

    auth.signout()

    # Replaying the old cookie must not sign the browser back in.
    client.set_cookie("session", cookie.value)
    assert client.get("/").status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(UserSession.revoked_at).where(UserSession.user_id == user["id"])) is not None


def test_revoked_session_is_signed_out(client, auth, make_user, app):
    user = make_user()
    auth.signin(user["email"])
    with app.app_context():
        for user_session in db.session.scalars(db.select(UserSession)):
            user_session.revoked_at = user_session.created_at
        db.session.commit()

    assert client.get("/").status_code == 302


def test_signin_rate_limited(client, make_user, app):
    user = make_user()
    limit = app.config["SIGNIN_RATE_LIMIT"]
    for _ in range(limit):
        client.post("/signin", data={"email": user["email"], "password": "wrong password"})

    response = client.post("/signin", data={"email": user["email"], "password": user["password"]})

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_api_key_shown_once_and_stored_hashed(client, auth, make_user, app):
    user = make_user()
    auth.signin(user["email"])

    client.post("/settings/api-keys", data={"name": "laptop"})
    first = client.get("/settings").get_data(as_text=True)
    second = client.get("/settings").get_data(as_text=True)

    key = re.search(r'id="new-api-key">([^<]+)<', first).group(1)
    assert key.startswith("floyo_")
    assert key not in second
    with app.app_context():
        stored = db.session.scalar(db.select(ApiKey))
        assert stored.key_hash != key
        assert key.startswith(stored.prefix)
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json["email"] == user["email"]


def test_revoked_api_key_rejected(client, auth, make_user, make_api_key, app):
    user = make_user()
    key = make_api_key(user)
    auth.signin(user["email"])
    with app.app_context():
        key_id = db.session.scalar(db.select(ApiKey.id))

    client.post(f"/settings/api-keys/{key_id}/revoke")
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_api_key"


def test_api_without_key(app):
    response = app.test_client().get("/api/v1/me")

    assert response.status_code == 401
    assert response.json["error"]["code"] == "missing_api_key"


def test_csrf_required_on_forms(make_user, app):
    app.config["WTF_CSRF_ENABLED"] = True
    user = make_user()

    response = app.test_client().post("/signin", data={"email": user["email"], "password": user["password"]})

    assert response.status_code == 400
    assert b"form expired" in response.data


def test_csrf_token_accepted_as_htmx_header(make_user, app):
    app.config["WTF_CSRF_ENABLED"] = True
    user = make_user()
    client = app.test_client()
    page = client.get("/signin").get_data(as_text=True)
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)

    response = client.post(
        "/signin",
        data={"email": user["email"], "password": user["password"]},
        headers={"X-CSRFToken": token, "HX-Request": "true"},
    )

    assert response.status_code == 302


def test_cli_create_user_and_key(app):
    runner = app.test_cli_runner()

    created = runner.invoke(
        args=["floyo", "create-user", "--email", "ops@example.com", "--password", "long enough pw", "--admin"]
    )
    keyed = runner.invoke(args=["floyo", "create-api-key", "--email", "ops@example.com"])

    assert created.exit_code == 0, created.output
    assert keyed.exit_code == 0, keyed.output
    key = keyed.output.strip().splitlines()[-1]
    assert re.fullmatch(r"floyo_[0-9a-f]{8}_[A-Za-z0-9_-]+", key)
    response = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert response.json["email"] == "ops@example.com"
    with app.app_context():
        assert db.session.scalar(db.select(User.is_admin).where(User.email == "ops@example.com")) is True


def test_cli_create_user_rejects_short_password(app):
    result = app.test_cli_runner().invoke(
        args=["floyo", "create-user", "--email", "a@example.com", "--password", "short"]
    )

    assert result.exit_code != 0
    assert "at least 10 characters" in result.output


def test_error_pages_html_and_json(client):
    page = client.get("/no-such-page")
    api = client.get("/api/v1/no-such-route")

    assert page.status_code == 404
    assert b"Page not found" in page.data
    assert api.status_code == 404
    assert api.json["error"]["code"] == "not_found"


def test_request_id_echoed(client):
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})

    assert response.headers["X-Request-ID"] == "abc-123"
