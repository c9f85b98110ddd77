"""Security headers, cookies, trusted proxies and rate limits with their headers."""

from types import SimpleNamespace

import pytest
from flask import request

from app import create_app
from app.queue import get_queues
from app.ratelimit import enforce
from app.security import CHART_PAGE_POLICY, CONTENT_SECURITY_POLICY

# Headers


def test_html_pages_get_csp(client):
    response = client.get("/signin")

    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_chart_page_allows_inline_styles_only(client, auth, make_user):
    user = make_user()
    auth.signin(user["email"])

    response = client.get("/analytics?tz=UTC")

    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == CHART_PAGE_POLICY
    assert "style-src 'self' 'unsafe-inline'" in CHART_PAGE_POLICY
    assert "script-src 'self';" in CHART_PAGE_POLICY


def test_json_answers_have_no_csp(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert "Content-Security-Policy" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_hsts_only_over_https(client):
    plain = client.get("/signin")
    secure = client.get("/signin", base_url="https://localhost")
    spoofed = client.get("/signin", headers={"X-Forwarded-Proto": "https"})

    assert "Strict-Transport-Security" not in plain.headers
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    # Without a trusted proxy, a client cannot claim HTTPS with a header.
    assert "Strict-Transport-Security" not in spoofed.headers


# Cookies


def cookie_attributes(response, name):
    [header] = [value for value in response.headers.getlist("Set-Cookie") if value.startswith(f"{name}=")]
    return {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}


def test_sign_in_cookies_httponly_and_lax(client, make_user):
    user = make_user()

    response = client.post("/signin", data={"email": user["email"], "password": user["password"], "remember": "y"})

    assert response.status_code == 302
    for name in ("session", "remember_token"):
        attributes = cookie_attributes(response, name)
        assert "httponly" in attributes, name
        assert attributes["samesite"] == "SameSite=Lax", name
        assert "secure" not in attributes, name


def test_cookies_secure_when_configured(app, make_user):
    app.config["SESSION_COOKIE_SECURE"] = True
    app.config["REMEMBER_COOKIE_SECURE"] = True
    client = app.test_client()
    user = make_user()

    response = client.post(
        "/signin",
        data={"email": user["email"], "password": user["password"], "remember": "y"},
        base_url="https://localhost",
    )

    assert response.status_code == 302
    for name in ("session", "remember_token"):
        assert "secure" in cookie_attributes(response, name), name


def test_session_cookie_secure_setting_covers_remember_cookie(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "true")

    secure_app = create_app({"INSTANCE_PATH": str(tmp_path / "secure"), "REDIS_URL": "", "TESTING": True})

    assert secure_app.config["SESSION_COOKIE_SECURE"] is True
    assert secure_app.config["REMEMBER_COOKIE_SECURE"] is True
    get_queues(secure_app).stop_embedded_worker()


# Trusted proxies


@pytest.fixture
def proxied_app(app):
    """Build an app like `app` with TRUSTED_PROXY_COUNT from the test, and a route that shows the client."""
    built = []

    def build(count):
        settings = {
            key: app.config[key] for key in ("INSTANCE_PATH", "SQLALCHEMY_DATABASE_URI", "REDIS_URL", "SECRET_KEY")
        }
        proxied = create_app({**settings, "TESTING": True, "TRUSTED_PROXY_COUNT": count})

        @proxied.get("/_client")
        def client_address():
            return {"address": request.remote_addr, "scheme": request.scheme, "host": request.host}

        built.append(proxied)
        return proxied.test_client()

    yield build
    for proxied in built:
        get_queues(proxied).stop_embedded_worker()


FORWARDED = {
    "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "floyo.example.com",
}


def test_forwarded_headers_ignored_without_proxies(proxied_app):
    client = proxied_app(0)

    response = client.get("/_client", headers=FORWARDED)

    assert response.get_json() == {"address": "127.0.0.1", "scheme": "http", "host": "localhost"}
    assert "Strict-Transport-Security" not in response.headers


def test_one_proxy_uses_rightmost_address(proxied_app):
    client = proxied_app(1)

    response = client.get("/_client", headers=FORWARDED)

    assert response.get_json() == {"address": "203.0.113.9", "scheme": "https", "host": "floyo.example.com"}
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_two_proxies_use_second_address_from_right(proxied_app):
    client = proxied_app(2)

    response = client.get("/_client", headers={"X-Forwarded-For": "10.0.0.1, 198.51.100.7, 203.0.113.9"})

    assert response.get_json()["address"] == "198.51.100.7"


def test_negative_proxy_count_rejected(app):
    settings = {key: app.config[key] for key in ("INSTANCE_PATH", "SQLALCHEMY_DATABASE_URI", "REDIS_URL")}

    with pytest.raises(RuntimeError, match="TRUSTED_PROXY_COUNT must be 0 or more"):
        create_app({**settings, "TRUSTED_PROXY_COUNT": -1})


# Rate limits


def test_sign_in_rate_limit_headers(app, client, make_user, monkeypatch):
    app.config.update(SIGNIN_RATE_LIMIT=2, SIGNIN_RATE_WINDOW_SECONDS=300)
    # A fixed clock in the middle of a window: the three attempts must not straddle two windows.
    monkeypatch.setattr("app.ratelimit.time", SimpleNamespace(time=lambda: 1_800_000_150.0))
    user = make_user()
    wrong = {"email": user["email"], "password": "wrong password"}

    answers = [client.post("/signin", data=wrong) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [401, 401, 429]
    assert [answer.headers["X-RateLimit-Limit"] for answer in answers] == ["2", "2", "2"]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers] == ["1", "0", "0"]
    assert answers[0].headers["X-RateLimit-Reset"] == "1800000300"
    assert answers[2].headers["Retry-After"] == "150"
    assert b"Too many sign-in attempts." in answers[2].data


def test_pages_without_limit_have_no_headers(client):
    response = client.get("/signin")

    assert "X-RateLimit-Limit" not in response.headers


@pytest.fixture
def api_user(make_user, make_api_key):
    user = make_user()
    return {**user, "headers": {"Authorization": f"Bearer {make_api_key(user)}"}}


def test_api_rate_limit_per_key(app, client, api_user, make_user, make_api_key):
    app.config.update(API_RATE_LIMIT=3, API_RATE_WINDOW_SECONDS=60)
    other_headers = {"Authorization": f"Bearer {make_api_key(make_user())}"}

    answers = [client.get("/api/v1/events", headers=api_user["headers"]) for _ in range(4)]
    other = client.get("/api/v1/events", headers=other_headers)

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers] == ["2", "1", "0", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    error = answers[3].get_json()["error"]
    assert error["code"] == "rate_limited"
    assert "the limit is 3 per 60 seconds" in error["message"]
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60
    assert other.status_code == 200
    assert other.headers["X-RateLimit-Remaining"] == "2"


def test_api_rate_limit_per_address_without_key(app, client):
    app.config.update(API_RATE_LIMIT=2, API_RATE_WINDOW_SECONDS=60)

    missing = [client.get("/api/v1/events") for _ in range(2)]
    wrong_key = client.get("/api/v1/events", headers={"Authorization": "Bearer floyo_wrong_key"})

    assert [answer.status_code for answer in missing] == [401, 401]
    assert missing[1].headers["X-RateLimit-Remaining"] == "0"
    assert wrong_key.status_code == 429
    assert wrong_key.get_json()["error"]["code"] == "rate_limited"


def test_api_rate_limit_per_address_for_cookie_reads(app, client, auth, make_user):
    app.config.update(API_RATE_LIMIT=1, API_RATE_WINDOW_SECONDS=60)
    user = make_user()
    auth.signin(user["email"])

    answers = [client.get("/api/v1/events") for _ in range(2)]

    assert [answer.status_code for answer in answers] == [200, 429]


def test_api_rate_limit_zero_turns_it_off(app, client, api_user):
    app.config.update(API_RATE_LIMIT=0)

    answers = [client.get("/api/v1/events", headers=api_user["headers"]) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert "X-RateLimit-Limit" not in answers[0].headers


def test_enforce_raises_past_the_limit(app):
    with app.test_request_context("/"):
        enforce("test:enforce", 1, 60, "Too many tries.")
        with pytest.raises(Exception, match=r"Too many tries\. Try again in \d+ seconds\.") as raised:
            enforce("test:enforce", 1, 60, "Too many tries.")

    assert raised.value.status == 429
    assert 1 <= raised.value.retry_after <= 60


def test_rate_limit_settings_in_env_example():
    from pathlib import Path

    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()

    for name in ("API_RATE_LIMIT=600", "API_RATE_WINDOW_SECONDS=60", "TRUSTED_PROXY_COUNT=0"):
        assert name in example
