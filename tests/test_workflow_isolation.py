"""One organization can never see, run, change or trigger another's workflows, runs or integrations."""

import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, finish_run, step

from app.extensions import db
from app.integrations.models import Integration
from app.workflows.models import Workflow, WorkflowRun

member = test_workflow_helpers.member
other_member = test_workflow_helpers.other_member


def _owned_objects(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    run = client.post(f"/api/v1/workflows/{workflow['id']}/execute", headers=member["headers"]).get_json()
    finish_run(app, run["id"])
    integration = client.post(
        "/api/v1/integrations",
        json={"name": "team", "kind": "slack", "settings": {"webhook_url": "https://hooks.example.com/x"}},
        headers=member["headers"],
    ).get_json()
    return workflow["id"], run["id"], integration["id"]


def _state(app):
    with app.app_context():
        state = (
            [(w.name, w.version_number, w.enabled) for w in db.session.scalars(db.select(Workflow))],
            [(r.id, r.status) for r in db.session.scalars(db.select(WorkflowRun).order_by(WorkflowRun.id))],
            [(i.name, i.last_tested_at) for i in db.session.scalars(db.select(Integration))],
        )
        db.session.remove()
    return state


def test_api_isolation(app, client, member, other_member):
    workflow_id, run_id, integration_id = _owned_objects(app, client, member)
    before = _state(app)
    headers = other_member["headers"]
    new_definition = {"definition": definition(step("b", "transform", {}))}

    requests = [
        ("get", f"/api/v1/workflows/{workflow_id}", None),
        ("put", f"/api/v1/workflows/{workflow_id}", new_definition),
        ("delete", f"/api/v1/workflows/{workflow_id}", None),
        ("get", f"/api/v1/workflows/{workflow_id}/versions", None),
        ("get", f"/api/v1/workflows/{workflow_id}/versions/1", None),
        ("post", f"/api/v1/workflows/{workflow_id}/versions/1/restore", None),
        ("post", f"/api/v1/workflows/{workflow_id}/execute", {}),
        ("post", f"/api/v1/workflows/{workflow_id}/webhook-secret", None),
        ("get", f"/api/v1/runs/{run_id}", None),
        ("post", f"/api/v1/runs/{run_id}/cancel", None),
        ("post", f"/api/v1/runs/{run_id}/rerun", {}),
        ("get", f"/api/v1/integrations/{integration_id}", None),
        ("patch", f"/api/v1/integrations/{integration_id}", {"settings": {}}),
        ("delete", f"/api/v1/integrations/{integration_id}", None),
        ("post", f"/api/v1/integrations/{integration_id}/test", None),
    ]
    for method, path, body in requests:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code == 404, (method, path, response.status_code)

    assert client.get("/api/v1/workflows", headers=headers).get_json()["data"] == []
    assert client.get("/api/v1/runs", headers=headers).get_json()["data"] == []
    assert client.get(f"/api/v1/runs?workflow_id={workflow_id}", headers=headers).get_json()["data"] == []
    assert client.get("/api/v1/integrations", headers=headers).get_json()["data"] == []
    assert _state(app) == before


def test_page_isolation(app, client, auth, member, other_member):
    workflow_id, run_id, integration_id = _owned_objects(app, client, member)
    before = _state(app)
    auth.signin(other_member["email"])

    pages = [
        ("get", f"/workflows/{workflow_id}"),
        ("get", f"/workflows/{workflow_id}/edit"),
        ("post", f"/workflows/{workflow_id}/edit"),
        ("get", f"/workflows/{workflow_id}/versions"),
        ("post", f"/workflows/{workflow_id}/versions/1/restore"),
        ("get", f"/workflows/{workflow_id}/export"),
        ("post", f"/workflows/{workflow_id}/run"),
        ("post", f"/workflows/{workflow_id}/delete"),
        ("post", f"/workflows/{workflow_id}/enabled"),
        ("post", f"/workflows/{workflow_id}/webhook-secret"),
        ("get", f"/workflows/runs/{run_id}"),
        ("post", f"/workflows/runs/{run_id}/cancel"),
        ("post", f"/workflows/runs/{run_id}/rerun"),
        ("get", f"/integrations/{integration_id}/edit"),
        ("post", f"/integrations/{integration_id}/edit"),
        ("post", f"/integrations/{integration_id}/test"),
        ("post", f"/integrations/{integration_id}/delete"),
    ]
    for method, path in pages:
        response = getattr(client, method)(path)
        assert response.status_code == 404, (method, path, response.status_code)

    listing = client.get("/workflows")
    runs = client.get(f"/workflows/runs?workflow={workflow_id}")
    integrations = client.get("/integrations")
    assert b"Test workflow" not in listing.data
    assert f"#{run_id}".encode() not in runs.data
    assert b"team" not in integrations.data
    assert _state(app) == before


def test_suggestion_of_other_org_not_found(app, client, auth, member, other_member):
    from app.insights.models import Pattern, Suggestion

    with app.app_context():
        pattern = Pattern(org_id=member["org_id"], kind="sequence", key="k", data={})
        db.session.add(pattern)
        db.session.flush()
        suggestion = Suggestion(
            org_id=member["org_id"], pattern_id=pattern.id, kind="sequence", title="t", workflow_draft={}
        )
        db.session.add(suggestion)
        db.session.commit()
        suggestion_id = suggestion.id
        db.session.remove()
    auth.signin(other_member["email"])

    response = client.get(f"/workflows/new?suggestion={suggestion_id}")

    assert response.status_code == 404
