"""Roles in an organization on every route, API key scopes and expiry.

The role matrix is data-driven: `MUTATING` maps each endpoint that changes data to the request
that exercises it, and `UNGATED` lists the endpoints that change data without an organization
role, each with its reason. A new POST, PUT, PATCH or DELETE endpoint must appear in one of them,
or `test_every_mutating_endpoint_is_declared` fails and names it.
"""

import io
import re
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import url_for

from app.admin.models import AuditEntry
from app.auth import service as auth_service
from app.auth.models import ApiKey
from app.extensions import db
from app.orgs.access import ROLE_RANK
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow

ROLES_LOW_TO_HIGH = ("viewer", "member", "admin", "owner")
MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
MISSING_ID = 999_999

# Endpoints that change data without an organization role, each with the reason.
UNGATED = {
    "auth.signin": "public: starts a session",
    "auth.signup": "public: creates an account",
    "auth.signout": "self-service: ends the caller's own session",
    "auth.revoke_session": "self-service: the caller's own browser sessions, not organization data",
    "auth.revoke_other_sessions": "self-service: the caller's own browser sessions",
    "orgs.create": "self-service: any signed-in user may create an organization and owns it",
    "orgs.switch": "self-service: checks that the caller is a member of the chosen organization",
    "orgs.leave": "self-service: the caller's own membership; the service keeps an owner",
    "orgs.accept_invitation": "authenticated by the invitation token and the caller's email",
    "auth.signin_two_factor": "public: the second sign-in step, for the caller's pending session",
    "auth.cancel_two_factor_signin": "public: drops the caller's own pending session",
    "auth.enable_two_factor": "self-service: the caller's own account",
    "auth.disable_two_factor": "self-service: the caller's own account",
    "auth.regenerate_backup_codes": "self-service: the caller's own account",
    "auth.forgot_password": "public: sends a reset link; answers the same for unknown emails",
    "auth.reset_password": "public: authenticated by the single-use token in the URL",
    "auth.resend_verification": "self-service: the caller's own email address",
    "auth.change_password": "self-service: the caller's own account",
    "auth.change_email": "self-service: the caller's own account",
    "auth.delete_account": "self-service: the caller's own account; guards organizations they own",
    "api.receive_stripe_webhook": "public: authenticated by the Stripe-Signature header",
    "api.receive_provider_webhook": "public: authenticated by the provider's signature",
    "api.receive_workflow_webhook": "public: authenticated by the secret token in the URL",
}
# Site admin routes keep their own is_admin check (404 for everyone else) instead of a role.
SITE_ADMIN_PREFIXES = ("admin.", "api.admin_")
# GET endpoints that read no organization data, or belong to the site admin.
UNGATED_READS = {
    "static": "public assets",
    "auth.signin": "public",
    "auth.signup": "public",
    "orgs.create": "self-service: the form to create an organization",
    "orgs.invitation": "authenticated by the invitation token in the URL",
    "api.list_orgs": "self-service: the caller's own memberships",
    "auth.signin_two_factor": "public: the second sign-in step",
    "auth.two_factor_settings": "self-service: the caller's own account",
    "auth.forgot_password": "public",
    "auth.reset_password": "public: authenticated by the token in the URL",
    "auth.verify_email": "public: authenticated by the token in the URL",
    "auth.confirm_email_change": "authenticated by the token in the URL",
    "auth.account_settings": "self-service: the caller's own account",
    "monitoring.healthz": "public health check",
    "monitoring.readyz": "public readiness check",
    "monitoring.prometheus_metrics": "metrics, protected by its own token setting",
    "monitoring.page": "site admin page",
    "api.api_cache": "site admin API",
    "api.api_database": "site admin API",
    "api.api_metrics": "site admin API",
    "api.openapi_document": "public API description",
}


@dataclass
class Call:
    """How to request one endpoint in the matrix.

    `args` maps URL arguments to a key of the `world` objects, or to a literal value. `api` calls go
    with the role's API key; others with the role's signed-in browser session.
    """

    args: dict = field(default_factory=dict)
    json: dict | None = None
    data: dict | None = None
    files: bool = False


# Endpoints in these tests subscribe only to this event, which no test triggers, so no delivery is sent.
QUIET_EVENTS = ["billing.payment_failed"]


def _workflow_definition(name="Role check"):
    return {"name": name, "trigger": {"type": "manual"}, "steps": [{"id": "a", "type": "transform", "config": {}}]}


def _event(path="src/app.py"):
    return {"type": "file_opened", "path": path, "tool": "editor", "occurred_at": "2024-05-01T09:00:00+00:00"}


# Every endpoint that changes data and needs a role. The lead adds endpoints of other branches here.
MUTATING = {
    # Analytics and analysis
    "analytics.export_to_files": Call(data={"format": "csv"}),
    "api.run_analysis": Call(json={}),
    # Events
    "api.create_event": Call(json=_event()),
    "api.create_event_batch": Call(json={"events": [_event("src/batch.py")]}),
    "events.import_upload": Call(data={}),
    # Suggestions
    "api.accept_suggestion": Call(args={"suggestion_id": MISSING_ID}, json={}),
    "api.dismiss_suggestion": Call(args={"suggestion_id": MISSING_ID}, json={}),
    "insights.accept": Call(args={"suggestion_id": MISSING_ID}),
    "insights.dismiss": Call(args={"suggestion_id": MISSING_ID}),
    # Workflows and runs
    "api.create_workflow": Call(json={"definition": _workflow_definition("Created by role")}),
    "api.update_workflow": Call(args={"workflow_id": "workflow"}, json={"definition": _workflow_definition("Edited")}),
    "api.execute_workflow": Call(args={"workflow_id": "workflow"}, json={}),
    "api.restore_version": Call(args={"workflow_id": "workflow", "number": 1}, json={}),
    "api.rotate_webhook_secret": Call(args={"workflow_id": "workflow"}, json={}),
    "api.delete_workflow": Call(args={"workflow_id": "doomed_workflow"}),
    "api.cancel_run": Call(args={"run_id": "run"}, json={}),
    "api.rerun": Call(args={"run_id": "run"}, json={}),
    "workflows.create": Call(data={"name": "Page workflow"}),
    "workflows.update": Call(args={"workflow_id": "workflow"}, data={"name": "Edited on page"}),
    "workflows.import_file": Call(data={}),
    "workflows.delete": Call(args={"workflow_id": "page_doomed_workflow"}),
    "workflows.set_enabled": Call(args={"workflow_id": "workflow"}, data={"enabled": "0"}),
    "workflows.rotate_webhook_secret": Call(args={"workflow_id": "workflow"}),
    "workflows.run_now": Call(args={"workflow_id": "workflow"}),
    "workflows.restore": Call(args={"workflow_id": "workflow", "number": 1}),
    "workflows.cancel_run": Call(args={"run_id": "run"}),
    "workflows.rerun": Call(args={"run_id": "run"}),
    # Files
    "api.upload_files": Call(files=True),
    "api.update_file": Call(args={"file_id": "file"}, json={"name": "renamed.txt"}),
    "api.delete_file": Call(args={"file_id": "doomed_file"}),
    "api.restore_file": Call(args={"file_id": "file"}, json={}),
    "files.upload": Call(files=True),
    "files.create_folder": Call(data={"name": "reports"}),
    "files.rename": Call(args={"file_id": "file"}, data={"name": "renamed-on-page.txt"}),
    "files.move": Call(args={"file_id": "file"}, data={"folder_id": ""}),
    "files.delete": Call(args={"file_id": "page_doomed_file"}),
    "files.restore": Call(args={"file_id": "file"}),
    "files.delete_folder": Call(args={"folder_id": MISSING_ID}),
    "files.empty_trash": Call(),
    # Integrations (admin)
    "api.create_integration": Call(
        json={"name": "hooks", "kind": "slack", "settings": {"webhook_url": "http://127.0.0.1:9/slack"}}
    ),
    "api.update_integration": Call(args={"integration_id": "integration"}, json={"name": "renamed"}),
    "api.test_integration": Call(args={"integration_id": MISSING_ID}, json={}),
    "api.delete_integration": Call(args={"integration_id": "doomed_integration"}),
    "integrations.new": Call(args={"kind_name": "slack"}, data={"name": "page", "webhook_url": "http://127.0.0.1:9/s"}),
    "integrations.edit": Call(args={"integration_id": "integration"}, data={"name": "edited"}),
    "integrations.test": Call(args={"integration_id": MISSING_ID}),
    "integrations.delete": Call(args={"integration_id": "page_doomed_integration"}),
    # Webhooks (admin)
    "api.create_webhook_endpoint": Call(json={"url": "http://127.0.0.1:9/created", "events": QUIET_EVENTS}),
    "api.delete_webhook_endpoint": Call(args={"endpoint_id": "doomed_endpoint"}),
    "api.enable_webhook_endpoint": Call(args={"endpoint_id": "endpoint"}, json={}),
    "api.replay_webhook_delivery": Call(args={"delivery_id": MISSING_ID}, json={}),
    "api.resend_outgoing_delivery": Call(args={"delivery_id": MISSING_ID}, json={}),
    "webhooks.create_endpoint": Call(data={"url": "http://127.0.0.1:9/page", "events": QUIET_EVENTS}),
    "webhooks.delete_endpoint": Call(args={"endpoint_id": "page_doomed_endpoint"}),
    "webhooks.enable_endpoint": Call(args={"endpoint_id": "endpoint"}),
    "webhooks.replay": Call(args={"delivery_id": MISSING_ID}),
    "webhooks.resend": Call(args={"delivery_id": MISSING_ID}),
    # API keys (own keys for everyone; the service limits scopes to the role)
    "auth.create_api_key": Call(data={"name": "page key", "scopes": ["read"], "scopes_offered": "1"}),
    "auth.revoke_api_key": Call(args={"key_id": MISSING_ID}),
    "api.create_api_key": Call(json={"name": "api key", "scopes": ["read"]}),
    "api.revoke_api_key": Call(args={"key_id": MISSING_ID}),
    # Two-factor policy of the organization (admin); without two-factor of their own, admins get 409.
    "auth.set_organization_two_factor": Call(data={"require_two_factor": "y"}),
    # Organizations and members. Ids of members that do not exist and a wrong confirmation name keep
    # the team intact for the roles that come later.
    "orgs.rename": Call(data={"name": "Team renamed"}),
    "orgs.invite": Call(data={"email": "invitee@team.example.com", "role": "member"}),
    "orgs.revoke_invitation": Call(args={"invitation_id": MISSING_ID}),
    "orgs.change_role": Call(args={"user_id": MISSING_ID}, data={"role": "viewer"}),
    "orgs.remove_member": Call(args={"user_id": MISSING_ID}),
    "orgs.transfer": Call(data={"user_id": str(MISSING_ID)}),
    "orgs.delete": Call(data={"confirm_name": "not the name"}),
    "api.rename_current_org": Call(json={"name": "Team renamed by API"}),
    "api.create_current_invitation": Call(json={"email": "api-invitee@team.example.com", "role": "member"}),
    "api.revoke_current_invitation": Call(args={"invitation_id": MISSING_ID}),
    "api.update_member": Call(args={"user_id": MISSING_ID}, json={"role": "viewer"}),
    "api.delete_member": Call(args={"user_id": MISSING_ID}),
    # Billing (owner)
    "billing.checkout": Call(data={"plan": "pro", "interval": "monthly"}),
    "billing.portal": Call(),
}

# Tables whose columns change on every authenticated request, left out of "nothing changed".
VOLATILE_COLUMNS = {("api_keys", "last_used_at"), ("user_sessions", "last_seen_at")}


def _is_api(endpoint):
    return endpoint.startswith("api.")


def _required_role(app, endpoint):
    return getattr(app.view_functions[endpoint], "floyo_required_role", None)


def _snapshot():
    """Return every row of every table, without the volatile columns, to compare before and after."""
    state = {}
    for table in db.metadata.sorted_tables:
        columns = [column for column in table.columns if (table.name, column.name) not in VOLATILE_COLUMNS]
        rows = db.session.execute(sa.select(*columns)).all()
        state[table.name] = sorted(repr(tuple(row)) for row in rows)
    db.session.rollback()
    return state


@pytest.fixture
def team(app, client, make_user):
    """An organization with an owner, admin, member and viewer, each with a key and a signed-in client.

    Returns {"org_id", "users": {role: user}, "keys": {role: raw key}, "clients": {role: client}}.
    Keys carry every scope their role allows.
    """
    app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
    users = {role: make_user(email=f"{role}@team.example.com") for role in ROLES_LOW_TO_HIGH}
    with app.app_context():
        org = Organization(name="Team")
        db.session.add(org)
        db.session.flush()
        for role, user in users.items():
            db.session.add(Membership(org_id=org.id, user_id=user["id"], role=role))
        db.session.commit()
        org_id = org.id

    keys = {}
    scopes_of_role = {"viewer": ("read",), "member": ("read", "write")}
    for role, user in users.items():
        with app.app_context():
            account = auth_service.find_user_by_email(user["email"])
            scopes = scopes_of_role.get(role, ("read", "write", "admin"))
            keys[role], _ = auth_service.create_api_key(account, org_id, f"{role} key", scopes=scopes)
            db.session.commit()

    clients = {}
    for role, user in users.items():
        browser = app.test_client()
        response = browser.post("/signin", data={"email": user["email"], "password": user["password"]})
        assert response.status_code == 302, f"{role} could not sign in"
        with browser.session_transaction() as session:
            session["org_id"] = org_id
        clients[role] = browser
    return {"org_id": org_id, "users": users, "keys": keys, "clients": clients}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def _create_objects(client, key, prefix=""):
    """Create a workflow, run, file, integration and webhook endpoint through the API with `key`."""
    headers = bearer(key)
    objects = {}

    def workflow(name):
        response = client.post(
            "/api/v1/workflows", json={"definition": _workflow_definition(prefix + name)}, headers=headers
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def upload(name):
        response = client.post(
            "/api/v1/files/upload",
            data={"file": (io.BytesIO(b"hello roles"), name)},
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["data"][0]["id"]

    def integration(name):
        response = client.post(
            "/api/v1/integrations",
            json={"name": prefix + name, "kind": "slack", "settings": {"webhook_url": "http://127.0.0.1:9/slack"}},
            headers=headers,
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def endpoint(path):
        response = client.post(
            "/api/v1/webhooks/endpoints",
            json={"url": f"http://127.0.0.1:9/{prefix}{path}", "events": QUIET_EVENTS},
            headers=headers,
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    objects["workflow"] = workflow("main")
    objects["doomed_workflow"] = workflow("doomed")
    objects["page_doomed_workflow"] = workflow("page doomed")
    run = client.post(f"/api/v1/workflows/{objects['workflow']}/execute", json={}, headers=headers)
    assert run.status_code == 202, run.get_json()
    objects["run"] = run.get_json()["id"]
    objects["file"] = upload(f"{prefix}main.txt")
    objects["doomed_file"] = upload(f"{prefix}doomed.txt")
    objects["page_doomed_file"] = upload(f"{prefix}page-doomed.txt")
    objects["integration"] = integration("main")
    objects["doomed_integration"] = integration("doomed")
    objects["page_doomed_integration"] = integration("page-doomed")
    objects["endpoint"] = endpoint("main")
    objects["doomed_endpoint"] = endpoint("doomed")
    objects["page_doomed_endpoint"] = endpoint("page-doomed")
    event = client.post("/api/v1/events", json=_event(f"{prefix}src/main.py"), headers=headers)
    assert event.status_code in (200, 201), event.get_json()
    objects["event"] = event.get_json()["id"]
    return objects


def _send(app, team, endpoint, role, world):
    call = MUTATING[endpoint]
    arguments = {name: world.get(value, value) for name, value in call.args.items()}
    with app.test_request_context():
        path = url_for(endpoint, **arguments)
    method = next(iter(sorted(set(app.url_map._rules_by_endpoint[endpoint][0].methods) & MUTATING_METHODS)))
    client = team["clients"][role]
    options = {"method": method}
    if _is_api(endpoint):
        options["headers"] = bearer(team["keys"][role])
    if call.files:
        options["data"] = {"file": (io.BytesIO(b"role check"), f"{role}-upload.txt")}
        options["content_type"] = "multipart/form-data"
    elif call.json is not None:
        options["json"] = call.json
    elif call.data is not None:
        options["data"] = call.data
    return client.open(path, **options)


def test_every_mutating_endpoint_is_declared(app):
    undeclared = []
    ungated_but_in_table = []
    for rule in app.url_map.iter_rules():
        if not rule.methods & MUTATING_METHODS or rule.endpoint.startswith(SITE_ADMIN_PREFIXES):
            continue
        role = _required_role(app, rule.endpoint)
        if rule.endpoint in UNGATED:
            if role is not None:
                ungated_but_in_table.append(rule.endpoint)
            continue
        if role is None or rule.endpoint not in MUTATING:
            undeclared.append(f"{rule.endpoint} ({rule.rule}, role {role})")

    assert not undeclared, (
        "These endpoints change data but lack @role_required or an entry in MUTATING "
        f"(or UNGATED with a reason): {', '.join(sorted(undeclared))}"
    )
    assert not ungated_but_in_table, f"UNGATED lists endpoints that have a role: {ungated_but_in_table}"


def test_every_org_read_has_a_role(app):
    missing = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint.startswith(SITE_ADMIN_PREFIXES):
            continue
        if rule.endpoint in UNGATED_READS or _required_role(app, rule.endpoint) is not None:
            continue
        missing.append(f"{rule.endpoint} ({rule.rule})")

    assert not missing, f"These GET endpoints read without @role_required: {', '.join(sorted(missing))}"


def test_table_lists_only_existing_endpoints(app):
    unknown = sorted(set(MUTATING) - set(app.view_functions))

    assert not unknown, f"MUTATING lists endpoints that do not exist: {unknown}"


def test_role_matrix(app, client, team, wait_for_jobs):
    world = _create_objects(client, team["keys"]["owner"])
    wait_for_jobs()
    failures = []

    for endpoint in sorted(MUTATING):
        required = _required_role(app, endpoint)
        for role in ROLES_LOW_TO_HIGH:
            allowed = ROLE_RANK[role] >= ROLE_RANK[required]
            if not allowed:
                wait_for_jobs()
                with app.app_context():
                    before = _snapshot()
            response = _send(app, team, endpoint, role, world)
            if allowed:
                if response.status_code == 403 or response.status_code >= 500:
                    failures.append(f"{endpoint} as {role} (needs {required}): {response.status_code}")
                continue
            if response.status_code != 403:
                failures.append(f"{endpoint} as {role} (needs {required}): {response.status_code}, expected 403")
                continue
            wait_for_jobs()
            with app.app_context():
                after = _snapshot()
            changed = [table for table in before if before[table] != after[table]]
            if changed:
                failures.append(f"{endpoint} as {role}: 403 but tables changed: {changed}")

    assert not failures, "\n".join(failures)


def test_viewer_reads_but_cannot_write(client, team):
    headers = bearer(team["keys"]["viewer"])

    listed = client.get("/api/v1/workflows", headers=headers)
    created = client.post("/api/v1/workflows", json={"definition": _workflow_definition()}, headers=headers)
    page = team["clients"]["viewer"].get("/workflows")

    assert listed.status_code == 200
    assert page.status_code == 200
    assert created.status_code == 403


def test_member_builds_but_cannot_manage_integrations(app, client, team):
    headers = bearer(team["keys"]["member"])

    created = client.post("/api/v1/workflows", json={"definition": _workflow_definition("Member")}, headers=headers)
    integration = client.post(
        "/api/v1/integrations",
        json={"name": "x", "kind": "slack", "settings": {"webhook_url": "http://127.0.0.1:9/x"}},
        headers=headers,
    )

    assert created.status_code == 201
    assert integration.status_code == 403
    assert "admin role" in integration.get_json()["error"]["message"]


def test_member_page_forbidden_for_viewer(app, team):
    viewer = team["clients"]["viewer"]

    response = viewer.post("/workflows/new", data={"name": "nope"})
    page = viewer.get("/workflows/new")

    assert response.status_code == 403
    assert page.status_code == 403


def test_owner_only_billing(team):
    admin = team["clients"]["admin"].post("/billing/checkout", data={"plan": "pro"})
    owner = team["clients"]["owner"].post("/billing/checkout", data={"plan": "pro"})

    assert admin.status_code == 403
    assert owner.status_code != 403


# Each entry: (object key from _create_objects, request method, path template). Requests send
# WORKFLOW_BODY, which is valid where a body is needed, so a 404 cannot come from validation.
WORKFLOW_BODY = {"definition": _workflow_definition("Foreign edit")}
FOREIGN_OBJECT_ROUTES = [
    ("workflow", "GET", "/api/v1/workflows/{id}"),
    ("workflow", "PUT", "/api/v1/workflows/{id}"),
    ("workflow", "DELETE", "/api/v1/workflows/{id}"),
    ("workflow", "POST", "/api/v1/workflows/{id}/execute"),
    ("workflow", "GET", "/workflows/{id}"),
    ("workflow", "POST", "/workflows/{id}/delete"),
    ("run", "GET", "/api/v1/runs/{id}"),
    ("run", "POST", "/api/v1/runs/{id}/cancel"),
    ("run", "GET", "/workflows/runs/{id}"),
    ("file", "GET", "/api/v1/files/{id}"),
    ("file", "DELETE", "/api/v1/files/{id}"),
    ("file", "GET", "/files/{id}"),
    ("file", "GET", "/files/{id}/download"),
    ("integration", "GET", "/api/v1/integrations/{id}"),
    ("integration", "PATCH", "/api/v1/integrations/{id}"),
    ("integration", "DELETE", "/api/v1/integrations/{id}"),
    ("integration", "POST", "/integrations/{id}/delete"),
    ("event", "GET", "/api/v1/events/{id}"),
    ("endpoint", "DELETE", "/api/v1/webhooks/endpoints/{id}"),
    ("endpoint", "GET", "/api/v1/webhooks/endpoints/{id}/deliveries"),
    ("endpoint", "POST", "/webhooks/endpoints/{id}/delete"),
    ("key", "DELETE", "/api/v1/api-keys/{id}"),
    ("key", "POST", "/settings/api-keys/{id}/revoke"),
]


def test_other_org_gets_404(app, client, team, make_user, make_api_key, wait_for_jobs):
    world = _create_objects(client, team["keys"]["owner"])
    with app.app_context():
        world["key"] = db.session.scalar(db.select(ApiKey.id).where(ApiKey.org_id == team["org_id"]))
    wait_for_jobs()
    stranger = make_user(email="stranger@example.com")
    stranger_key = make_api_key(stranger)
    browser = app.test_client()
    browser.post("/signin", data={"email": stranger["email"], "password": stranger["password"]})
    failures = []

    for name, method, template in FOREIGN_OBJECT_ROUTES:
        path = template.format(id=world[name])
        if path.startswith("/api/"):
            response = client.open(path, method=method, json=WORKFLOW_BODY, headers=bearer(stranger_key))
        else:
            response = browser.open(path, method=method)
        if response.status_code != 404:
            failures.append(f"{method} {path}: {response.status_code}")

    assert not failures, "another organization's objects must be 404:\n" + "\n".join(failures)
    with app.app_context():
        assert db.session.get(ApiKey, world["key"]).revoked_at is None


def test_read_only_key_cannot_write(client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user, scopes=("read",))

    read = client.get("/api/v1/workflows", headers=bearer(key))
    write = client.post("/api/v1/events", json=_event(), headers=bearer(key))

    assert read.status_code == 200
    assert write.status_code == 403
    error = write.get_json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "write scope" in error["message"]


def test_write_key_cannot_use_admin_route(client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user, scopes=("read", "write"))

    response = client.post(
        "/api/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/x", "events": QUIET_EVENTS}, headers=bearer(key)
    )

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    assert "admin scope" in response.get_json()["error"]["message"]


def test_expired_key_gets_401(app, client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    with app.app_context():
        stored = db.session.scalar(db.select(ApiKey))
        stored.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()

    response = client.get("/api/v1/me", headers=bearer(key))

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_expired"
    assert "expired" in response.get_json()["error"]["message"]


def test_revoked_key_gets_401(app, client, make_user, make_api_key):
    user = make_user()
    key = make_api_key(user)
    other = make_api_key(user, name="other")
    prefix = "_".join(key.split("_")[:2])
    with app.app_context():
        key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.prefix == prefix))

    revoked = client.delete(f"/api/v1/api-keys/{key_id}", headers=bearer(other))
    response = client.get("/api/v1/me", headers=bearer(key))

    assert revoked.status_code == 204
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"


def test_key_follows_current_role(app, client, team):
    key = team["keys"]["admin"]
    endpoint = {"url": "http://127.0.0.1:9/demoted", "events": QUIET_EVENTS}
    with app.app_context():
        membership = db.session.scalar(
            db.select(Membership).where(
                Membership.user_id == team["users"]["admin"]["id"], Membership.org_id == team["org_id"]
            )
        )
        membership.role = "member"
        db.session.commit()
        membership_id = membership.id

    demoted = client.post("/api/v1/webhooks/endpoints", json=endpoint, headers=bearer(key))
    with app.app_context():
        db.session.delete(db.session.get(Membership, membership_id))
        db.session.commit()
    departed = client.get("/api/v1/me", headers=bearer(key))

    assert demoted.status_code == 403
    assert "admin role" in demoted.get_json()["error"]["message"]
    assert departed.status_code == 401


def test_api_key_crud_and_audit(app, client, team):
    owner_headers = bearer(team["keys"]["owner"])

    created = client.post(
        "/api/v1/api-keys", json={"name": "ci", "scopes": ["read"], "expires_in_days": 30}, headers=owner_headers
    )
    body = created.get_json()
    listed = client.get("/api/v1/api-keys", headers=owner_headers).get_json()["data"]
    used = client.get("/api/v1/me", headers=bearer(body["key"]))
    revoked = client.delete(f"/api/v1/api-keys/{body['id']}", headers=owner_headers)
    after = client.get("/api/v1/me", headers=bearer(body["key"]))

    assert created.status_code == 201
    assert body["scopes"] == ["read"]
    assert body["expires_at"] is not None
    assert body["key"].startswith(body["prefix"])
    assert [item["name"] for item in listed] == ["ci", "owner key"]
    assert all("key" not in item for item in listed)
    assert used.status_code == 200
    assert revoked.status_code == 204
    assert after.status_code == 401
    with app.app_context():
        entries = db.session.scalars(db.select(AuditEntry).order_by(AuditEntry.id)).all()
        by_action = {entry.action: entry for entry in entries if entry.action.startswith("api_key.")}
        assert by_action["api_key.created"].details["scopes"] == ["read"]
        assert by_action["api_key.created"].org_id == team["org_id"]
        assert by_action["api_key.revoked"].target_id == str(body["id"])
        for entry in entries:
            assert body["key"] not in repr(entry.details)
        assert db.session.get(ApiKey, body["id"]).last_used_at is not None


def test_api_key_creation_needs_admin_scope(app, client, make_user, make_api_key):
    owner = make_user()
    write_key = make_api_key(owner, scopes=("read", "write"))

    response = client.post("/api/v1/api-keys", json={"name": "more"}, headers=bearer(write_key))

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    assert "admin scope" in response.get_json()["error"]["message"]
    with app.app_context():
        assert db.session.scalar(db.select(sa.func.count()).select_from(ApiKey)) == 1


def test_api_key_creation_needs_admin_role(client, team):
    response = client.post("/api/v1/api-keys", json={"name": "more"}, headers=bearer(team["keys"]["member"]))

    assert response.status_code == 403
    assert "admin role" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": "soon"}, "expires_in_days"),
        ({"name": "x", "extra": 1}, "extra"),
    ],
)
def test_api_key_creation_rejects_bad_input(app, client, team, body, field_name):
    response = client.post("/api/v1/api-keys", json=body, headers=bearer(team["keys"]["owner"]))

    assert response.status_code == 422
    assert field_name in repr(response.get_json()["error"])
    with app.app_context():
        assert db.session.scalar(db.select(sa.func.count()).select_from(ApiKey)) == 4


def test_admin_lists_and_revokes_every_key(app, client, team):
    admin_headers = bearer(team["keys"]["admin"])
    member_headers = bearer(team["keys"]["member"])
    with app.app_context():
        member_key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.user_id == team["users"]["member"]["id"]))

    everyone = client.get("/api/v1/api-keys?all=1", headers=admin_headers).get_json()["data"]
    member_all = client.get("/api/v1/api-keys?all=1", headers=member_headers)
    revoked = client.delete(f"/api/v1/api-keys/{member_key_id}", headers=admin_headers)
    member_after = client.get("/api/v1/me", headers=member_headers)

    assert len(everyone) == 4
    assert member_all.status_code == 403
    assert revoked.status_code == 204
    assert member_after.status_code == 401


def test_key_scopes_capped_by_role(app, team):
    member = team["clients"]["member"]

    member.post("/settings/api-keys", data={"name": "too much", "scopes": ["read", "admin"], "scopes_offered": "1"})
    page = member.get("/settings").get_data(as_text=True)

    assert "allows keys with the scopes read, write" in page
    with app.app_context():
        assert db.session.scalar(db.select(ApiKey).where(ApiKey.name == "too much")) is None


def test_settings_page_creates_scoped_expiring_key(app, team):
    viewer = team["clients"]["viewer"]

    viewer.post(
        "/settings/api-keys",
        data={"name": "reader", "scopes": ["read"], "expires_in_days": "90", "scopes_offered": "1"},
    )
    page = viewer.get("/settings").get_data(as_text=True)

    assert re.search(r'id="new-api-key">floyo_', page)
    with app.app_context():
        stored = db.session.scalar(db.select(ApiKey).where(ApiKey.name == "reader"))
        assert stored.scopes == "read"
        days = (stored.expires_at - utcnow()).days
        assert 89 <= days <= 90


def test_settings_form_offers_role_scopes(team):
    viewer_page = team["clients"]["viewer"].get("/settings").get_data(as_text=True)
    admin_page = team["clients"]["admin"].get("/settings").get_data(as_text=True)

    assert 'value="admin"' not in viewer_page
    assert 'value="write"' not in viewer_page
    assert 'value="admin"' in admin_page
    assert "member@team.example.com" in admin_page
    assert "member@team.example.com" not in viewer_page


def test_cli_create_api_key_scopes(app, make_user):
    user = make_user(email="ops@roles.example.com")
    runner = app.test_cli_runner()

    created = runner.invoke(args=["floyo", "create-api-key", "--email", user["email"], "--scopes", "read"])
    rejected = runner.invoke(args=["floyo", "create-api-key", "--email", user["email"], "--scopes", "read,root"])

    assert created.exit_code == 0, created.output
    assert created.output.strip().splitlines()[-1].startswith("floyo_")
    assert rejected.exit_code != 0
    assert "Unknown API key scope root" in rejected.output
    with app.app_context():
        assert db.session.scalars(db.select(ApiKey.scopes)).all() == ["read"]


def test_pages_hide_actions_the_role_lacks(team):
    viewer, member, admin = (team["clients"][role] for role in ("viewer", "member", "admin"))

    viewer_workflows = viewer.get("/workflows").get_data(as_text=True)
    member_workflows = member.get("/workflows").get_data(as_text=True)
    viewer_files = viewer.get("/files").get_data(as_text=True)
    member_files = member.get("/files").get_data(as_text=True)
    member_integrations = member.get("/integrations").get_data(as_text=True)
    admin_integrations = admin.get("/integrations").get_data(as_text=True)

    assert "New workflow" not in viewer_workflows
    assert "/workflows/import" not in viewer_workflows
    assert "New workflow" in member_workflows
    assert "/workflows/import" in member_workflows
    assert 'id="upload-form"' not in viewer_files
    assert 'id="upload-form"' in member_files
    assert "/integrations/new/" not in member_integrations
    assert "Admins and owners of this organization connect integrations." in member_integrations
    assert "/integrations/new/" in admin_integrations
