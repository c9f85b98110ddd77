"""Plan limits on workflow runs: manual runs are rejected, automatic runs are recorded as skipped."""

from datetime import UTC, datetime

import pytest
import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, finish_run, step

from app.billing.limits import current_period
from app.billing.models import UsageCounter
from app.events.models import Event
from app.extensions import db
from app.workflows.models import Workflow, WorkflowRun
from app.workflows.triggers import fire_due_schedules, start_matching_runs

member = test_workflow_helpers.member
other_member = test_workflow_helpers.other_member
ECHO = step("echo", "transform", {"input": {"path": "{{ trigger.path }}"}})
SCHEDULE = {"type": "schedule", "cron": "0 0 1 1 *", "timezone": "UTC"}
LIMIT_REASON = "Monthly run limit of 2 on the Free plan reached; upgrade in Billing."


@pytest.fixture
def limited_app(app):
    """The app with billing switched on (limits enforced) and a Free plan of two runs a month."""
    app.config["STRIPE_SECRET_KEY"] = "sk_test_run_limits"
    app.config["BILLING_PLANS"]["free"]["limits"]["runs_per_month"] = 2
    return app


def use_runs(app, org_id, count):
    """Set the organization's runs this month, as if `count` runs had been started."""
    with app.app_context():
        db.session.merge(UsageCounter(org_id=org_id, metric="runs_per_month", period=current_period(), count=count))
        db.session.commit()
        db.session.remove()


def runs_used(app, org_id):
    with app.app_context():
        used = db.session.scalar(
            db.select(UsageCounter.count).where(
                UsageCounter.org_id == org_id,
                UsageCounter.metric == "runs_per_month",
                UsageCounter.period == current_period(),
            )
        )
        db.session.remove()
    return used


def stored_runs(app, workflow_id):
    with app.app_context():
        runs = db.session.scalars(
            db.select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id).order_by(WorkflowRun.id)
        ).all()
        rows = [
            {
                "id": run.id,
                "status": run.status,
                "error": run.error,
                "trigger": run.trigger_type,
                "input": run.input,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "attempts": len(run.attempts),
            }
            for run in runs
        ]
        db.session.remove()
    return rows


def make_schedule_due(app, workflow_id):
    with app.app_context():
        db.session.get(Workflow, workflow_id).schedule_checked_until = datetime(2000, 1, 1, tzinfo=UTC)
        db.session.commit()
        db.session.remove()


def fire_schedules(app):
    with app.app_context():
        fired = fire_due_schedules()
        db.session.remove()
    return fired


def test_scheduled_run_past_limit_is_skipped(limited_app, client, member, wait_for_jobs):
    workflow = create_workflow(client, member, definition(ECHO, trigger=SCHEDULE))
    make_schedule_due(limited_app, workflow["id"])
    use_runs(limited_app, member["org_id"], 2)

    fired = fire_schedules(limited_app)
    wait_for_jobs()

    [run] = stored_runs(limited_app, workflow["id"])
    assert fired == 0
    assert run["status"] == "skipped"
    assert run["trigger"] == "schedule"
    assert run["error"] == LIMIT_REASON
    assert run["finished_at"] is not None
    assert run["finished_at"] >= run["created_at"]
    assert run["attempts"] == 0
    assert runs_used(limited_app, member["org_id"]) == 2


def test_scheduled_run_within_limit_runs(limited_app, client, member):
    workflow = create_workflow(client, member, definition(ECHO, trigger=SCHEDULE))
    make_schedule_due(limited_app, workflow["id"])
    use_runs(limited_app, member["org_id"], 1)

    fired = fire_schedules(limited_app)
    [run] = stored_runs(limited_app, workflow["id"])
    status = finish_run(limited_app, run["id"])

    assert fired == 1
    assert status == "succeeded"
    assert runs_used(limited_app, member["org_id"]) == 2


def test_event_runs_past_limit_are_skipped(limited_app, client, member):
    trigger = {"type": "event_match", "event_type": "file_modified", "path_glob": "data/*.csv"}
    workflow = create_workflow(client, member, definition(ECHO, trigger=trigger))
    use_runs(limited_app, member["org_id"], 1)
    with limited_app.app_context():
        events = [
            Event(
                org_id=member["org_id"],
                user_id=member["id"],
                type="file_modified",
                path=path,
                occurred_at=datetime(2025, 2, 13, 9, minute, tzinfo=UTC),
                source="api",
            )
            for minute, path in enumerate(["data/sales.csv", "data/costs.csv"])
        ]
        db.session.add_all(events)
        db.session.commit()
        event_ids = [event.id for event in events]
        db.session.remove()

    with limited_app.app_context():
        started = start_matching_runs(member["org_id"], event_ids)
        db.session.remove()

    runs = stored_runs(limited_app, workflow["id"])
    assert started == 1
    assert [run["input"]["path"] for run in runs] == ["data/sales.csv", "data/costs.csv"]
    assert runs[0]["status"] != "skipped"
    assert runs[1]["status"] == "skipped"
    assert runs[1]["error"] == LIMIT_REASON
    assert runs_used(limited_app, member["org_id"]) == 2


def test_webhook_past_limit_returns_402(limited_app, client, member, wait_for_jobs):
    workflow = create_workflow(client, member, definition(ECHO, trigger={"type": "webhook"}))
    path = workflow["webhook_url"].split("localhost", 1)[1]
    use_runs(limited_app, member["org_id"], 2)

    response = client.post(path, json={"path": "in/report.csv"})
    wait_for_jobs()

    error = response.get_json()["error"]
    [run] = stored_runs(limited_app, workflow["id"])
    assert response.status_code == 402
    assert error["code"] == "plan_limit_reached"
    assert error["message"] == LIMIT_REASON
    assert error["details"]["run_id"] == run["id"]
    assert error["details"]["status"] == "skipped"
    assert run["status"] == "skipped"
    assert run["input"] == {"path": "in/report.csv"}
    assert run["attempts"] == 0
    assert runs_used(limited_app, member["org_id"]) == 2


def test_webhook_run_within_limit_is_queued(limited_app, client, member):
    workflow = create_workflow(client, member, definition(ECHO, trigger={"type": "webhook"}))
    path = workflow["webhook_url"].split("localhost", 1)[1]
    use_runs(limited_app, member["org_id"], 1)

    response = client.post(path, json={"path": "in/report.csv"})
    status = finish_run(limited_app, response.get_json()["run_id"])

    assert response.status_code == 202
    assert response.get_json()["status"] == "queued"
    assert status == "succeeded"
    assert runs_used(limited_app, member["org_id"]) == 2


def test_manual_run_past_limit_stores_nothing(limited_app, client, member):
    workflow = create_workflow(client, member, definition(ECHO))
    use_runs(limited_app, member["org_id"], 2)

    response = client.post(f"/api/v1/workflows/{workflow['id']}/execute", json={}, headers=member["headers"])

    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "plan_limit_reached"
    assert "workflow runs this month" in response.get_json()["error"]["message"]
    assert stored_runs(limited_app, workflow["id"]) == []
    assert runs_used(limited_app, member["org_id"]) == 2


def test_rerun_past_limit_rejected(limited_app, client, member):
    workflow = create_workflow(client, member, definition(ECHO))
    use_runs(limited_app, member["org_id"], 1)
    started = client.post(f"/api/v1/workflows/{workflow['id']}/execute", json={}, headers=member["headers"])
    run_id = started.get_json()["id"]
    finish_run(limited_app, run_id)

    rerun = client.post(f"/api/v1/runs/{run_id}/rerun", json={}, headers=member["headers"])

    assert started.status_code == 202
    assert rerun.status_code == 402
    assert rerun.get_json()["error"]["code"] == "plan_limit_reached"
    assert len(stored_runs(limited_app, workflow["id"])) == 1


def test_no_limit_without_billing(app, client, member):
    app.config["BILLING_PLANS"]["free"]["limits"]["runs_per_month"] = 2
    workflow = create_workflow(client, member, definition(ECHO, trigger=SCHEDULE))
    make_schedule_due(app, workflow["id"])
    use_runs(app, member["org_id"], 5)

    fired = fire_schedules(app)
    [run] = stored_runs(app, workflow["id"])

    assert fired == 1
    assert finish_run(app, run["id"]) == "succeeded"
    assert runs_used(app, member["org_id"]) == 6


def test_skipped_run_shown_with_reason(limited_app, client, member, auth):
    workflow = create_workflow(client, member, definition(ECHO, trigger=SCHEDULE))
    make_schedule_due(limited_app, workflow["id"])
    use_runs(limited_app, member["org_id"], 2)
    fire_schedules(limited_app)
    [run] = stored_runs(limited_app, workflow["id"])
    auth.signin(member["email"])

    workflow_page = client.get(f"/workflows/{workflow['id']}")
    run_page = client.get(f"/workflows/runs/{run['id']}")
    listed = client.get("/api/v1/runs?status=skipped", headers=member["headers"])

    assert workflow_page.status_code == 200
    assert b"The latest run was skipped: " + LIMIT_REASON.encode() in workflow_page.data
    assert b'href="/billing"' in workflow_page.data
    assert run_page.status_code == 200
    assert LIMIT_REASON.encode() in run_page.data
    assert b"No step ran: the run was skipped." in run_page.data
    assert listed.status_code == 200
    assert [item["id"] for item in listed.get_json()["data"]] == [run["id"]]


def test_skipped_run_of_other_org_not_found(limited_app, client, member, other_member):
    workflow = create_workflow(client, member, definition(ECHO, trigger=SCHEDULE))
    make_schedule_due(limited_app, workflow["id"])
    use_runs(limited_app, member["org_id"], 2)
    fire_schedules(limited_app)
    [run] = stored_runs(limited_app, workflow["id"])

    response = client.get(f"/api/v1/runs/{run['id']}", headers=other_member["headers"])
    listed = client.get("/api/v1/runs?status=skipped", headers=other_member["headers"])

    assert response.status_code == 404
    assert listed.get_json()["data"] == []
