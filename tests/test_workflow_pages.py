"""Workflow pages: editor through HTMX and plain forms, suggestions, versions, runs, export and import."""

import io
import json

import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, finish_run, step

from app.extensions import db
from app.workflows.models import Workflow

member = test_workflow_helpers.member
HTMX = {"HX-Request": "true"}


def _editor_form(document, action="save", **extra):
    """The editor's fields for a definition, as the browser would send them."""
    form = {
        "name": document["name"],
        "description": document.get("description", ""),
        "trigger_type": document["trigger"]["type"],
        "trigger_cron": document["trigger"].get("cron", ""),
        "trigger_timezone": document["trigger"].get("timezone", "UTC"),
        "trigger_event_type": document["trigger"].get("event_type", ""),
        "trigger_path_glob": document["trigger"].get("path_glob", "*"),
        "step_count": str(len(document["steps"])),
        "action": action,
    }
    for index, item in enumerate(document["steps"]):
        prefix = f"steps-{index}-"
        form[prefix + "id"] = item["id"]
        form[prefix + "type"] = item["type"]
        form[prefix + "depends_on"] = ", ".join(item.get("depends_on", []))
        form[prefix + "config"] = json.dumps(item.get("config", {}))
        form[prefix + "timeout_seconds"] = str(item.get("timeout_seconds", 30))
        form[prefix + "retries"] = str(item.get("retries", 0))
        form[prefix + "on_failure"] = item.get("on_failure", "stop")
    form.update(extra)
    return form


def _suggestion(app, org_id, draft):
    from app.insights.models import Pattern, Suggestion

    with app.app_context():
        pattern = Pattern(org_id=org_id, kind="sequence", key="k1", data={})
        db.session.add(pattern)
        db.session.flush()
        suggestion = Suggestion(
            org_id=org_id, pattern_id=pattern.id, kind="sequence", title="Rebuild the report", workflow_draft=draft
        )
        db.session.add(suggestion)
        db.session.commit()
        suggestion_id = suggestion.id
        db.session.remove()
    return suggestion_id


def test_list_page(app, client, auth, member):
    create_workflow(client, member, definition(step("a", "transform", {}), name="Nightly report"))
    auth.signin(member["email"])

    response = client.get("/workflows")

    assert response.status_code == 200
    assert b"Nightly report" in response.data


def test_create_from_suggestion_accepts_it(app, client, auth, member):
    draft = definition(step("shape", "transform", {"input": {"a": 1}}), name="From the suggestion")
    suggestion_id = _suggestion(app, member["org_id"], draft)
    auth.signin(member["email"])

    page = client.get(f"/workflows/new?suggestion={suggestion_id}")
    response = client.post("/workflows/new", data=_editor_form(draft, suggestion_id=str(suggestion_id)))

    from app.insights.models import Suggestion

    assert page.status_code == 200
    assert b"From the suggestion" in page.data
    assert response.status_code == 302
    with app.app_context():
        suggestion = db.session.get(Suggestion, suggestion_id)
        workflow = db.session.scalar(db.select(Workflow))
        assert suggestion.status == "accepted"
        assert suggestion.decided_by_id == member["id"]
        assert workflow.name == "From the suggestion"
        assert response.headers["Location"].endswith(f"/workflows/{workflow.id}")
        db.session.remove()


def test_editor_actions_through_htmx(app, client, auth, member):
    document = definition(step("first", "transform", {}), step("second", "transform", {}, depends_on=["first"]))
    auth.signin(member["email"])

    added = client.post("/workflows/new", data=_editor_form(document, "add", new_step_type="delay"), headers=HTMX)
    moved = client.post("/workflows/new", data=_editor_form(document, "down:0"), headers=HTMX)
    removed = client.post("/workflows/new", data=_editor_form(document, "remove:0"), headers=HTMX)

    assert added.status_code == 200
    assert b'<form id="editor"' in added.data
    assert b"<html" not in added.data
    assert b'value="delay_3"' in added.data
    assert moved.data.index(b'value="second"') < moved.data.index(b'value="first"')
    assert b'value="first"' not in removed.data.split(b"Raw JSON")[0]
    with app.app_context():
        assert db.session.query(Workflow).count() == 0
        db.session.remove()


def test_editor_raw_json_view(app, client, auth, member):
    document = definition(step("a", "transform", {}))
    replacement = definition(step("from_raw", "delay", {"seconds": 5}), name="Raw name")
    auth.signin(member["email"])

    response = client.post("/workflows/new", data=_editor_form(document, "raw", raw=json.dumps(replacement)))
    broken = client.post("/workflows/new", data=_editor_form(document, "raw", raw="{not json"))

    assert b'value="from_raw"' in response.data
    assert b'value="Raw name"' in response.data
    assert b"the JSON does not parse" in broken.data


def test_editor_save_invalid_shows_errors(app, client, auth, member):
    document = definition(step("a", "transform", {}, depends_on=["missing"]))
    auth.signin(member["email"])

    response = client.post("/workflows/new", data=_editor_form(document))

    assert response.status_code == 422
    assert b"depends on unknown step" in response.data
    with app.app_context():
        assert db.session.query(Workflow).count() == 0
        db.session.remove()


def test_editor_htmx_save_invalid_shows_message(app, client, auth, member):
    auth.signin(member["email"])

    response = client.post("/workflows/new", data=_editor_form(definition()), headers={"HX-Request": "true"})
    next_page = client.get("/workflows")

    # htmx swaps only 2xx responses, so the rejected save comes back as a fragment with its message.
    assert response.status_code == 200
    assert b'id="editor"' in response.data
    assert b"The workflow definition is invalid" in response.data
    assert b"The workflow definition is invalid" not in next_page.data
    with app.app_context():
        assert db.session.query(Workflow).count() == 0
        db.session.remove()


def test_edit_saves_version_and_restore(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    auth.signin(member["email"])

    saved = client.post(
        f"/workflows/{workflow['id']}/edit",
        data=_editor_form(definition(step("a", "transform", {}), name="Renamed"), note="rename it"),
    )
    versions = client.get(f"/workflows/{workflow['id']}/versions?old=1&new=2")
    restored = client.post(f"/workflows/{workflow['id']}/versions/1/restore")

    assert saved.status_code == 302
    assert b"rename it" in versions.data
    assert b"+  &#34;name&#34;: &#34;Renamed&#34;," in versions.data
    assert restored.status_code == 302
    with app.app_context():
        stored = db.session.get(Workflow, workflow["id"])
        assert (stored.version_number, stored.name) == (3, "Test workflow")
        db.session.remove()


def test_run_page_polls_until_done(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {"input": {"x": 1}})))
    auth.signin(member["email"])

    started = client.post(f"/workflows/{workflow['id']}/run", data={"input": '{"path": "a.txt"}'})
    run_id = int(started.headers["Location"].rsplit("/", 1)[1])
    finish_run(app, run_id)
    page = client.get(f"/workflows/runs/{run_id}")
    fragment = client.get(f"/workflows/runs/{run_id}", headers=HTMX)

    assert started.status_code == 302
    assert b'data-run-status="succeeded"' in page.data
    assert b"hx-trigger" not in fragment.data
    assert b"<html" not in fragment.data


def test_run_fragment_polls_while_active(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("wait", "delay", {"seconds": 3600})))
    auth.signin(member["email"])

    started = client.post(f"/workflows/{workflow['id']}/run", data={})
    run_id = int(started.headers["Location"].rsplit("/", 1)[1])
    fragment = client.get(f"/workflows/runs/{run_id}", headers=HTMX)
    cancelled = client.post(f"/workflows/runs/{run_id}/cancel", headers=HTMX)

    assert b'hx-trigger="every 1s"' in fragment.data
    assert cancelled.headers["HX-Redirect"] == f"/workflows/runs/{run_id}"


def test_run_input_must_be_json(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    auth.signin(member["email"])

    response = client.post(f"/workflows/{workflow['id']}/run", data={"input": "{oops"}, follow_redirects=True)

    assert b"The input is not valid JSON" in response.data


def test_runs_list_filters(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    auth.signin(member["email"])
    started = client.post(f"/workflows/{workflow['id']}/run", data={})
    finish_run(app, int(started.headers["Location"].rsplit("/", 1)[1]))

    succeeded = client.get("/workflows/runs?status=succeeded", headers=HTMX)
    failed = client.get("/workflows/runs?status=failed")
    invalid = client.get("/workflows/runs?since=yesterday")

    assert b"succeeded" in succeeded.data
    assert b"<html" not in succeeded.data
    assert b"No runs." in failed.data
    assert invalid.status_code == 422


def test_export_and_import(app, client, auth, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {}), trigger={"type": "webhook"}))
    auth.signin(member["email"])

    exported = client.get(f"/workflows/{workflow['id']}/export")
    imported = client.post(
        "/workflows/import",
        data={"file": (io.BytesIO(exported.data), "flow.json")},
        content_type="multipart/form-data",
    )
    broken = client.post(
        "/workflows/import",
        data={"file": (io.BytesIO(b"{}"), "empty.json")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )

    assert exported.headers["Content-Disposition"].startswith("attachment")
    assert json.loads(exported.data)["name"] == "Test workflow"
    assert b"hooks/workflows" not in exported.data
    assert imported.status_code == 302
    assert b"The workflow definition is invalid" in broken.data
    with app.app_context():
        assert db.session.query(Workflow).count() == 2
        db.session.remove()


def test_viewer_cannot_change(app, client, auth, member):
    from app.orgs.models import Membership

    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    with app.app_context():
        membership = db.session.scalar(db.select(Membership).where(Membership.user_id == member["id"]))
        membership.role = "viewer"
        db.session.commit()
        db.session.remove()
    auth.signin(member["email"])

    assert client.get(f"/workflows/{workflow['id']}").status_code == 200
    assert client.post(f"/workflows/{workflow['id']}/run", data={}).status_code == 403
    assert client.post(f"/workflows/{workflow['id']}/delete").status_code == 403
