"""Triggers: incoming webhook, event match (once per event) and schedules with two schedulers."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import test_workflow_helpers
from test_workflow_helpers import create_workflow, definition, finish_run, load_run, step

from app.extensions import db
from app.workflows.models import Workflow, WorkflowRun

member = test_workflow_helpers.member
ROOT = Path(__file__).resolve().parent.parent
ECHO = step("echo", "transform", {"input": {"path": "{{ trigger.path }}"}})


def _runs(app, workflow_id):
    with app.app_context():
        rows = db.session.scalars(
            db.select(WorkflowRun).where(WorkflowRun.workflow_id == workflow_id).order_by(WorkflowRun.id)
        ).all()
        result = [
            {"id": run.id, "trigger": run.trigger_type, "input": run.input, "scheduled_for": run.scheduled_for}
            for run in rows
        ]
        db.session.remove()
    return result


def test_incoming_webhook_starts_run(app, client, member):
    workflow = create_workflow(client, member, definition(ECHO, trigger={"type": "webhook"}))
    path = workflow["webhook_url"].split("localhost", 1)[1]

    response = client.post(path, json={"path": "in/report.csv"})
    run_id = response.get_json()["run_id"]
    finish_run(app, run_id)

    assert response.status_code == 202
    run = load_run(app, run_id)
    assert run["input"] == {"path": "in/report.csv"}
    assert run["attempts"][0]["output"] == {"path": "in/report.csv"}


def test_rotated_webhook_secret_stops_old_url(app, client, member):
    workflow = create_workflow(client, member, definition(ECHO, trigger={"type": "webhook"}))
    old_path = workflow["webhook_url"].split("localhost", 1)[1]

    rotated = client.post(f"/api/v1/workflows/{workflow['id']}/webhook-secret", headers=member["headers"]).get_json()
    old = client.post(old_path, json={})
    new = client.post(rotated["webhook_url"].split("localhost", 1)[1], data="plain text")

    assert old.status_code == 404
    assert new.status_code == 202
    assert _runs(app, workflow["id"])[0]["input"] == {"body": "plain text"}


def test_event_match_runs_once_per_event(app, client, member, wait_for_jobs):
    trigger = {"type": "event_match", "event_type": "file_modified", "path_glob": "data/*.csv"}
    workflow = create_workflow(client, member, definition(ECHO, trigger=trigger))
    events = [
        {"type": "file_modified", "path": "data/sales.csv", "occurred_at": "2025-02-13T09:00:00Z", "event_id": "e1"},
        {"type": "file_modified", "path": "data/costs.csv", "occurred_at": "2025-02-13T09:01:00Z", "event_id": "e2"},
        {"type": "file_modified", "path": "notes/todo.md", "occurred_at": "2025-02-13T09:02:00Z", "event_id": "e3"},
        {"type": "file_opened", "path": "data/sales.csv", "occurred_at": "2025-02-13T09:03:00Z", "event_id": "e4"},
    ]

    first = client.post("/api/v1/events/batch", json={"events": events}, headers=member["headers"])
    wait_for_jobs()
    again = client.post("/api/v1/events/batch", json={"events": events[:2]}, headers=member["headers"])
    wait_for_jobs()
    from app.events.models import Event
    from app.workflows.triggers import start_matching_runs

    with app.app_context():
        event_ids = db.session.scalars(db.select(Event.id).where(Event.org_id == member["org_id"])).all()
        repeated = start_matching_runs(member["org_id"], event_ids)
        db.session.remove()

    runs = _runs(app, workflow["id"])
    assert first.status_code == 200
    assert again.status_code == 200
    assert sorted(run["input"]["path"] for run in runs) == ["data/costs.csv", "data/sales.csv"]
    assert {run["trigger"] for run in runs} == {"event_match"}
    assert repeated == 0


def test_event_recorded_by_workflow_does_not_trigger(app, client, member, wait_for_jobs):
    trigger = {"type": "event_match", "event_type": "tool_used", "path_glob": "*"}
    loop = step("again", "record_event", {"type": "tool_used", "path": "loop.txt"})
    workflow = create_workflow(client, member, definition(loop, trigger=trigger))
    event = {"type": "tool_used", "path": "start.txt", "occurred_at": "2025-02-13T09:00:00Z"}

    client.post("/api/v1/events", json=event, headers=member["headers"])
    wait_for_jobs()
    runs = _runs(app, workflow["id"])
    finish_run(app, runs[0]["id"])
    wait_for_jobs()

    assert len(_runs(app, workflow["id"])) == 1


def test_schedule_fires_once_with_two_schedulers(app, client, member, tmp_path):
    trigger = {"type": "schedule", "cron": "0 0 1 1 *", "timezone": "Europe/Berlin"}
    workflow = create_workflow(client, member, definition(ECHO, trigger=trigger))
    with app.app_context():
        stored = db.session.get(Workflow, workflow["id"])
        stored.schedule_checked_until = datetime(2000, 1, 1, tzinfo=UTC)
        db.session.commit()
        database_url = app.config["SQLALCHEMY_DATABASE_URI"]
        db.session.remove()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": app.config["REDIS_URL"],
        "INSTANCE_PATH": str(tmp_path / "scheduler"),
        "SECRET_KEY": "test-secret",
    }
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "floyo", "scheduler", "--once"]

    processes = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    runs = _runs(app, workflow["id"])
    year = datetime.now(UTC).year
    assert len(runs) == 1
    assert runs[0]["trigger"] == "schedule"
    assert runs[0]["scheduled_for"] == datetime(year - 1, 12, 31, 23, 0, tzinfo=UTC) or runs[0][
        "scheduled_for"
    ] == datetime(year, 12, 31, 23, 0, tzinfo=UTC)


def test_schedule_does_not_fire_twice(app, client, member):
    from app.workflows.triggers import fire_due_schedules

    trigger = {"type": "schedule", "cron": "0 0 1 1 *", "timezone": "UTC"}
    workflow = create_workflow(client, member, definition(ECHO, trigger=trigger))
    with app.app_context():
        stored = db.session.get(Workflow, workflow["id"])
        stored.schedule_checked_until = datetime(2000, 1, 1, tzinfo=UTC)
        db.session.commit()
        fired = [fire_due_schedules(), fire_due_schedules()]
        db.session.remove()

    assert fired == [1, 0]
    assert len(_runs(app, workflow["id"])) == 1


def test_new_schedule_waits_for_next_time(app, client, member):
    from app.workflows.triggers import fire_due_schedules

    trigger = {"type": "schedule", "cron": "0 0 1 1 *", "timezone": "UTC"}
    workflow = create_workflow(client, member, definition(ECHO, trigger=trigger))

    with app.app_context():
        fired = fire_due_schedules()
        db.session.remove()

    assert fired == 0
    assert _runs(app, workflow["id"]) == []
