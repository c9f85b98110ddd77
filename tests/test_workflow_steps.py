"""Each step type against servers the test starts on 127.0.0.1, and the outbound address checks."""

import hashlib
import hmac
import json
import socket
import zipfile
from pathlib import Path

import pytest
import test_workflow_helpers
from test_workflow_helpers import (
    RecordingServer,
    SmtpServer,
    create_workflow,
    definition,
    json_response,
    load_run,
    run_inline,
    statuses,
    step,
)

from app.integrations import outbound

member = test_workflow_helpers.member


def _run(app, client, member, *steps, data=None):
    workflow = create_workflow(client, member, definition(*steps))
    status = run_inline(app, workflow["id"], member["org_id"], data, user_id=member["id"])
    from app.extensions import db
    from app.workflows.models import WorkflowRun

    with app.app_context():
        run_id = db.session.scalar(db.select(db.func.max(WorkflowRun.id)))
        db.session.remove()
    return status, load_run(app, run_id)


def _integration(client, member, name, kind, settings):
    response = client.post(
        "/api/v1/integrations", json={"name": name, "kind": kind, "settings": settings}, headers=member["headers"]
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def allow_local(app):
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"


@pytest.fixture
def no_connections(monkeypatch):
    """Record any attempt to open a connection; the address checks must reject before one."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("a connection was opened")

    monkeypatch.setattr(outbound, "_open_pool", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://0.0.0.0/",
    ],
)
def test_http_request_refuses_internal_addresses(app, client, member, no_connections, url):
    status, run = _run(app, client, member, step("call", "http_request", {"url": url}))

    assert status == "failed"
    assert "are not allowed" in run["attempts"][0]["error"]
    assert "OUTBOUND_ALLOW_HOSTS" in run["attempts"][0]["error"]
    assert no_connections == []


def test_http_request_refuses_redirect_to_internal(app, client, member):
    with RecordingServer(lambda request: (302, {"Location": "http://169.254.169.254/"}, b"")) as server:
        app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
        status, run = _run(app, client, member, step("call", "http_request", {"url": server.url + "/go"}))

    assert status == "failed"
    assert "169.254.169.254" in run["attempts"][0]["error"]
    assert len(server.requests) == 1


def test_allow_list_accepts_hosts_and_networks(app):
    with app.app_context():
        app.config["OUTBOUND_ALLOW_HOSTS"] = "localhost, 10.0.0.0/8"

        assert "127.0.0.1" in outbound.resolve_checked("localhost", 80)
        assert outbound.resolve_checked("10.1.2.3", 80) == ["10.1.2.3"]
        with pytest.raises(outbound.OutboundBlocked):
            outbound.resolve_checked("192.168.1.1", 80)


def test_http_request_with_templates(app, client, member, allow_local):
    with RecordingServer(lambda request: json_response({"id": 42, "echo": json.loads(request["body"])})) as server:
        status, run = _run(
            app,
            client,
            member,
            step("prepare", "transform", {"input": {"name": "{{ trigger.name }}"}}),
            step(
                "call",
                "http_request",
                {
                    "method": "POST",
                    "url": server.url + "/items/{{ trigger.name }}",
                    "headers": {"X-Trace": "run-{{ run.id }}"},
                    "body": {"name": "{{ steps.prepare.output.name }}", "size": "{{ trigger.size }}"},
                },
                depends_on=["prepare"],
            ),
            data={"name": "report", "size": 7},
        )

    request = server.requests[0]
    assert status == "succeeded"
    assert request["path"] == "/items/report"
    assert json.loads(request["body"]) == {"name": "report", "size": 7}
    assert request["headers"]["X-Trace"].startswith("run-")
    assert run["attempts"][1]["output"]["status"] == 200
    assert run["attempts"][1]["output"]["body"]["id"] == 42
    assert "POST" in run["attempts"][1]["log"]


def test_http_request_through_integration(app, client, member, allow_local):
    with RecordingServer() as server:
        _integration(client, member, "api", "http", {"base_url": server.url + "/v1", "bearer_token": "s3cr3t-token"})
        status, run = _run(app, client, member, step("call", "http_request", {"integration": "api", "url": "/ping"}))

    assert status == "succeeded"
    assert server.requests[0]["path"] == "/v1/ping"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer s3cr3t-token"
    assert "s3cr3t-token" not in json.dumps(run, default=str)


def test_webhook_signed_delivery(app, client, member, allow_local):
    with RecordingServer(lambda request: json_response({"received": True})) as server:
        _integration(client, member, "hooks", "http", {"base_url": server.url, "signing_secret": "whsec-test"})
        status, run = _run(
            app,
            client,
            member,
            step(
                "send",
                "webhook",
                {"integration": "hooks", "url": "/receive", "payload": {"path": "{{ trigger.path }}"}},
            ),
            data={"path": "data/sales.csv"},
        )

    request = server.requests[0]
    header = request["headers"]["Floyo-Signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(b"whsec-test", f"{parts['t']}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert status == "succeeded"
    assert json.loads(request["body"]) == {"path": "data/sales.csv"}
    assert hmac.compare_digest(parts["v1"], expected)
    assert request["headers"]["Floyo-Delivery"] == run["attempts"][0]["output"]["delivery"]
    assert "whsec-test" not in json.dumps(run, default=str)


def test_notify_email_through_smtp_integration(app, client, member, allow_local):
    with SmtpServer() as smtp:
        _integration(
            client,
            member,
            "mail",
            "smtp",
            {"host": "127.0.0.1", "port": smtp.port, "use_tls": False, "from_address": "floyo@example.com"},
        )
        status, run = _run(
            app,
            client,
            member,
            step(
                "tell",
                "notify",
                {
                    "channel": "email",
                    "integration": "mail",
                    "to": "me@example.com",
                    "subject": "Done {{ trigger.n }}",
                    "body": "Hello",
                },
            ),
            data={"n": 3},
        )

    assert status == "succeeded"
    assert smtp.messages[0]["to"] == ["<me@example.com>"]
    assert b"Subject: Done 3" in smtp.messages[0]["data"]
    assert run["attempts"][0]["output"]["to"] == ["me@example.com"]


def test_notify_email_console_backend(app, client, member):
    app.config["MAIL_BACKEND"] = "console"

    status, run = _run(
        app,
        client,
        member,
        step("tell", "notify", {"channel": "email", "to": ["a@example.com"], "subject": "Hi", "body": "Body"}),
    )

    assert status == "succeeded"
    assert "Subject: Hi" in run["attempts"][0]["log"]
    assert run["attempts"][0]["output"]["backend"] == "console"


def test_notify_slack(app, client, member, allow_local):
    with RecordingServer(lambda request: (200, {}, b"ok")) as server:
        _integration(client, member, "team", "slack", {"webhook_url": server.url + "/services/T0/B0/x"})
        status, run = _run(
            app,
            client,
            member,
            step("tell", "notify", {"channel": "slack", "integration": "team", "body": "Built {{ trigger.n }}"}),
            data={"n": 2},
        )

    assert status == "succeeded"
    assert json.loads(server.requests[0]["body"]) == {"text": "Built 2"}


def test_notify_unknown_integration_fails(app, client, member):
    status, run = _run(
        app, client, member, step("tell", "notify", {"channel": "slack", "integration": "nope", "body": "x"})
    )

    assert status == "failed"
    assert "No integration named 'nope'" in run["attempts"][0]["error"]


def test_file_write_copy_zip(app, client, member):
    status, run = _run(
        app,
        client,
        member,
        step("write", "file", {"action": "write", "path": "reports/{{ trigger.name }}.txt", "content": "hello"}),
        step(
            "copy",
            "file",
            {"action": "copy", "source": "{{ steps.write.output.path }}", "destination": "backup/r.txt"},
            depends_on=["write"],
        ),
        step(
            "zip",
            "file",
            {"action": "zip", "sources": ["reports", "backup/r.txt"], "destination": "out/all.zip"},
            depends_on=["copy"],
        ),
        data={"name": "weekly"},
    )

    root = Path(app.config["FILE_STORAGE_PATH"]) / str(member["org_id"]) / "workflows"
    assert status == "succeeded"
    assert (root / "reports/weekly.txt").read_text() == "hello"
    assert (root / "backup/r.txt").read_text() == "hello"
    with zipfile.ZipFile(root / "out/all.zip") as archive:
        assert sorted(archive.namelist()) == ["backup/r.txt", "reports/weekly.txt"]
    assert run["attempts"][2]["output"]["files"] == 2


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b"])
def test_file_rejects_paths_outside_area(app, client, member, path):
    status, run = _run(app, client, member, step("write", "file", {"action": "write", "path": path, "content": "x"}))

    assert status == "failed"
    assert "file area" in run["attempts"][0]["error"]


def test_record_event_adds_event(app, client, member):
    from app.events.models import Event
    from app.extensions import db

    status, run = _run(
        app,
        client,
        member,
        step("note", "record_event", {"type": "tool_used", "path": "{{ trigger.path }}", "tool": "floyo"}),
        data={"path": "x.py"},
    )

    with app.app_context():
        events = db.session.scalars(db.select(Event).where(Event.org_id == member["org_id"])).all()
        stored = [(event.type, event.path, event.meta.get("workflow_run_id")) for event in events]
        db.session.remove()
    assert status == "succeeded"
    assert len(stored) == 1
    assert stored[0][:2] == ("tool_used", "x.py")
    assert stored[0][2] is not None
    assert statuses(run) == {"note": "succeeded"}
