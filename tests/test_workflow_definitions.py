"""Definition validation, versions, diff, restore, export and import through the API."""

import json

import pytest
import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, step

from app.extensions import db
from app.queue import get_queues
from app.workflows.models import Workflow, WorkflowRun, WorkflowVersion

TRANSFORM = step("shape", "transform", {"input": "{{ trigger }}", "operations": [{"pick": ["path"]}]})

member = test_workflow_helpers.member


def _counts(app):
    with app.app_context():
        counts = (
            db.session.query(Workflow).count(),
            db.session.query(WorkflowVersion).count(),
            db.session.query(WorkflowRun).count(),
        )
        db.session.remove()
    return counts


def _jobs(app):
    return sum(queue.count for queue in get_queues(app).queues.values())


INVALID = [
    pytest.param(
        definition(
            step("a", "transform", {}, depends_on=["b"]),
            step("b", "transform", {}, depends_on=["a"]),
        ),
        "depends_on",
        "cycle: a → b → a",
        id="cycle",
    ),
    pytest.param(
        definition(step("a", "transform", {}, depends_on=["ghost"])),
        "steps[0] (a).depends_on",
        "unknown step 'ghost'",
        id="unknown-dependency",
    ),
    pytest.param(
        {"name": "No trigger", "steps": [TRANSFORM]},
        "trigger",
        "a trigger is required",
        id="missing-trigger",
    ),
    pytest.param(
        definition(TRANSFORM, step("send", "teleport", {})),
        "steps[1] (send).type",
        "unknown step type 'teleport'",
        id="unknown-step-type",
    ),
    pytest.param(
        definition(step("a", "http_request", {"method": "POST"})),
        "steps[0] (a).config.url",
        "is required",
        id="missing-url",
    ),
    pytest.param(
        definition(step("a", "transform", {"input": "{{ steps.b.output }}"}), step("b", "transform", {})),
        "steps[0] (a).config",
        "does not depend on it",
        id="reference-to-non-dependency",
    ),
    pytest.param(
        definition(step("a", "condition", {"if": "trigger.size >"})),
        "steps[0] (a).config.if",
        "ends where a value was expected",
        id="bad-expression",
    ),
    pytest.param(
        definition(TRANSFORM, trigger={"type": "schedule", "cron": "every day", "timezone": "UTC"}),
        "trigger.schedule.cron",
        "five-field cron",
        id="bad-cron",
    ),
    pytest.param(
        definition(TRANSFORM, trigger={"type": "schedule", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}),
        "trigger.schedule.timezone",
        "IANA time zone",
        id="bad-timezone",
    ),
]


@pytest.mark.parametrize(("document", "field", "message"), INVALID)
def test_invalid_definition_rejected(app, client, member, document, field, message):
    response = client.post("/api/v1/workflows", json={"definition": document}, headers=member["headers"])

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert any(field in item["field"] and message in item["message"] for item in error["details"]), error["details"]
    assert _counts(app) == (0, 0, 0)
    assert _jobs(app) == 0


def test_invalid_update_keeps_version(app, client, member):
    workflow = create_workflow(client, member, definition(TRANSFORM))
    broken = definition(step("a", "transform", {}, depends_on=["a"]))

    response = client.put(f"/api/v1/workflows/{workflow['id']}", json={"definition": broken}, headers=member["headers"])

    assert response.status_code == 422
    assert "depends on itself" in response.get_json()["error"]["message"]
    assert _counts(app) == (1, 1, 0)


def test_every_save_makes_a_version(app, client, member):
    workflow = create_workflow(client, member, definition(TRANSFORM), note="first")
    changed = definition(TRANSFORM, name="Renamed")

    response = client.put(
        f"/api/v1/workflows/{workflow['id']}", json={"definition": changed, "note": "rename"}, headers=member["headers"]
    )
    versions = client.get(f"/api/v1/workflows/{workflow['id']}/versions", headers=member["headers"]).get_json()["data"]

    assert response.status_code == 200
    assert response.get_json()["version"] == 2
    assert [version["number"] for version in versions] == [2, 1]
    assert [version["note"] for version in versions] == ["rename", "first"]
    assert versions[0]["created_by"] == member["email"]
    first = client.get(f"/api/v1/workflows/{workflow['id']}/versions/1", headers=member["headers"]).get_json()
    assert first["definition"]["name"] == "Test workflow"


def test_restore_saves_new_version(app, client, member):
    workflow = create_workflow(client, member, definition(TRANSFORM))
    client.put(
        f"/api/v1/workflows/{workflow['id']}",
        json={"definition": definition(TRANSFORM, name="Second")},
        headers=member["headers"],
    )

    response = client.post(f"/api/v1/workflows/{workflow['id']}/versions/1/restore", headers=member["headers"])

    assert response.status_code == 200
    restored = response.get_json()
    assert restored["version"] == 3
    assert restored["name"] == "Test workflow"
    versions = client.get(f"/api/v1/workflows/{workflow['id']}/versions", headers=member["headers"]).get_json()["data"]
    assert versions[0]["note"] == "Restored version 1"


def test_diff_shows_changed_lines(app, member, client):
    from app.workflows import service

    workflow = create_workflow(client, member, definition(TRANSFORM))
    client.put(
        f"/api/v1/workflows/{workflow['id']}",
        json={"definition": definition(TRANSFORM, name="Second")},
        headers=member["headers"],
    )

    with app.app_context():
        lines = service.diff_versions(member["org_id"], workflow["id"], 1, 2)

    assert '-  "name": "Test workflow",' in lines
    assert '+  "name": "Second",' in lines


def test_defaults_filled_in(app, client, member):
    workflow = create_workflow(client, member, definition(TRANSFORM))

    saved = workflow["definition"]["steps"][0]
    assert saved["timeout_seconds"] == 30
    assert saved["retries"] == 0
    assert saved["on_failure"] == "stop"
    assert saved["config"] == TRANSFORM["config"]


def test_suggestion_draft_format_is_valid():
    from app.workflows.schemas import validate_definition

    with open("docs/workflow-format.md") as handle:
        text = handle.read()
    example = json.loads(text.split("```json", 1)[1].split("```", 1)[0])

    document = validate_definition(example)

    assert [item["id"] for item in document["steps"]] == ["build", "tell"]


def test_webhook_trigger_gets_secret_url(app, client, member):
    workflow = create_workflow(client, member, definition(TRANSFORM, trigger={"type": "webhook"}))

    rotated = client.post(f"/api/v1/workflows/{workflow['id']}/webhook-secret", headers=member["headers"]).get_json()

    assert "/api/v1/hooks/workflows/" in workflow["webhook_url"]
    assert rotated["webhook_url"] != workflow["webhook_url"]
