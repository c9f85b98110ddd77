"""Integrations: connect, change, test, encryption at rest with key rotation, secrets never shown."""

import json

import pytest
import test_workflow_helpers
from cryptography.fernet import Fernet
from test_workflow_helpers import RecordingServer, SmtpServer, json_response

from app.extensions import db
from app.integrations.crypto import SecretsUnreadable, decrypt_secrets
from app.integrations.models import Integration

member = test_workflow_helpers.member
SECRET = "xoxb-very-secret-value"


def _create(client, member, name="team", kind="slack", settings=None):
    return client.post(
        "/api/v1/integrations",
        json={
            "name": name,
            "kind": kind,
            "settings": {"webhook_url": f"https://hooks.example.com/{SECRET}"} if settings is None else settings,
        },
        headers=member["headers"],
    )


def _stored(app):
    with app.app_context():
        integration = db.session.scalar(db.select(Integration))
        values = {"token": integration.secrets_token, "settings": integration.settings, "id": integration.id}
        db.session.remove()
    return values


def test_create_never_returns_secret(app, client, member):
    response = _create(client, member)
    listed = client.get("/api/v1/integrations", headers=member["headers"])

    body = response.get_json()
    assert response.status_code == 201
    assert body["secrets_set"] == ["webhook_url"]
    assert SECRET not in response.get_data(as_text=True)
    assert SECRET not in listed.get_data(as_text=True)
    stored = _stored(app)
    assert SECRET not in stored["token"]
    assert SECRET not in json.dumps(stored["settings"])


def test_invalid_settings_rejected(app, client, member):
    missing = _create(client, member, settings={})
    wrong_kind = _create(client, member, kind="carrier-pigeon")
    bad_url = _create(client, member, kind="http", settings={"base_url": "ftp://files"})

    assert missing.status_code == 422
    assert missing.get_json()["error"]["details"][0]["field"] == "webhook_url"
    assert wrong_kind.status_code == 422
    assert "slack, http, smtp, github, s3" in wrong_kind.get_json()["error"]["message"]
    assert bad_url.status_code == 422
    assert "http or https URL" in bad_url.get_json()["error"]["message"]


def test_duplicate_name_conflicts(app, client, member):
    _create(client, member)

    response = _create(client, member)

    assert response.status_code == 409


def test_update_keeps_secret_when_left_out(app, client, member):
    created = _create(
        client, member, name="api", kind="http", settings={"base_url": "https://a.example", "bearer_token": "t0ken"}
    )
    integration_id = created.get_json()["id"]

    response = client.patch(
        f"/api/v1/integrations/{integration_id}",
        json={"settings": {"base_url": "https://b.example"}},
        headers=member["headers"],
    )

    assert response.status_code == 200
    assert response.get_json()["settings"]["base_url"] == "https://b.example"
    with app.app_context():
        assert decrypt_secrets(_stored(app)["token"]) == {"bearer_token": "t0ken"}


def test_key_rotation_keeps_secrets_readable(app, client, member):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app.config["SECRET_ENCRYPTION_KEYS"] = old_key
    _create(client, member)
    from app.integrations.service import rotate_all_secrets

    with app.app_context():
        app.config["SECRET_ENCRYPTION_KEYS"] = f"{new_key},{old_key}"
        readable_during = decrypt_secrets(_stored(app)["token"])
        rotated = rotate_all_secrets()
        db.session.commit()
        app.config["SECRET_ENCRYPTION_KEYS"] = new_key
        readable_after = decrypt_secrets(_stored(app)["token"])
        app.config["SECRET_ENCRYPTION_KEYS"] = old_key
        with pytest.raises(SecretsUnreadable):
            decrypt_secrets(_stored(app)["token"])
        db.session.remove()

    assert rotated == 1
    assert readable_during["webhook_url"].endswith(SECRET)
    assert readable_after == readable_during


def test_connection_test_records_result(app, client, member):
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
    with RecordingServer(lambda request: json_response({"login": "octocat"})) as server:
        created = _create(
            client, member, name="gh", kind="github", settings={"token": "ghp_abc", "api_url": server.url}
        )
        response = client.post(f"/api/v1/integrations/{created.get_json()['id']}/test", headers=member["headers"])

    body = response.get_json()
    assert body["last_test_ok"] is True
    assert body["last_test_message"] == "Signed in to GitHub as octocat."
    assert server.requests[0]["path"] == "/user"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer ghp_abc"
    assert "ghp_abc" not in response.get_data(as_text=True)


def test_connection_test_failure_recorded(app, client, member):
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
    with RecordingServer(lambda request: json_response({}, 403)) as server:
        created = _create(client, member, name="hook", kind="slack", settings={"webhook_url": server.url + "/x"})
        response = client.post(f"/api/v1/integrations/{created.get_json()['id']}/test", headers=member["headers"])

    assert response.get_json()["last_test_ok"] is False
    assert "403" in response.get_json()["last_test_message"]


def test_connection_test_refuses_internal_address(app, client, member):
    created = _create(client, member, name="local", kind="http", settings={"base_url": "http://127.0.0.1:9/"})

    response = client.post(f"/api/v1/integrations/{created.get_json()['id']}/test", headers=member["headers"])

    assert response.get_json()["last_test_ok"] is False
    assert "not allowed" in response.get_json()["last_test_message"]


def test_smtp_and_s3_connection_tests(app, client, member):
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
    with SmtpServer() as smtp, RecordingServer(lambda request: (200, {}, b"")) as s3:
        mail = _create(
            client,
            member,
            name="mail",
            kind="smtp",
            settings={"host": "127.0.0.1", "port": smtp.port, "use_tls": False, "from_address": "a@example.com"},
        )
        bucket = _create(
            client,
            member,
            name="bucket",
            kind="s3",
            settings={"endpoint_url": s3.url, "bucket": "reports", "access_key_id": "AKIA1", "secret_access_key": "sk"},
        )
        mail_test = client.post(f"/api/v1/integrations/{mail.get_json()['id']}/test", headers=member["headers"])
        bucket_test = client.post(f"/api/v1/integrations/{bucket.get_json()['id']}/test", headers=member["headers"])

    assert mail_test.get_json()["last_test_ok"] is True
    assert bucket_test.get_json()["last_test_ok"] is True
    assert s3.requests[0]["method"] == "HEAD"
    assert s3.requests[0]["path"] == "/reports"
    assert s3.requests[0]["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIA1/")


def test_pages_connect_and_never_show_secret(app, client, auth, member):
    auth.signin(member["email"])

    created = client.post(
        "/integrations/new/slack", data={"name": "team", "webhook_url": f"https://hooks.example.com/{SECRET}"}
    )
    listing = client.get("/integrations")
    integration_id = _stored(app)["id"]
    edit = client.get(f"/integrations/{integration_id}/edit")
    kept = client.post(f"/integrations/{integration_id}/edit", data={"name": "team2", "webhook_url": ""})

    assert created.status_code == 302
    assert b"team" in listing.data
    assert SECRET.encode() not in listing.data
    assert SECRET.encode() not in edit.data
    assert b"leave empty to keep it" in edit.data
    assert kept.status_code == 302
    with app.app_context():
        assert decrypt_secrets(_stored(app)["token"])["webhook_url"].endswith(SECRET)
        db.session.remove()


def test_secret_not_logged(app, client, member, caplog):
    caplog.set_level("DEBUG")

    _create(client, member)

    assert SECRET not in caplog.text
