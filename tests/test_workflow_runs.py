"""The run engine: DAG order, templates, conditions, retries, timeouts, delays, cancel and re-run."""

import time

import test_workflow_helpers
from test_workflow_helpers import (
    RecordingServer,
    create_workflow,
    definition,
    finish_run,
    json_response,
    load_run,
    run_inline,
    statuses,
    step,
    wait_for_status,
)

from app.extensions import db
from app.queue import get_queues
from app.workflows.models import WorkflowRun

member = test_workflow_helpers.member


def _execute(client, member, workflow_id, data=None):
    response = client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"input": data or {}}, headers=member["headers"]
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def test_transform_chain_through_worker(app, client, member):
    document = definition(
        step("pick", "transform", {"input": "{{ trigger.files }}", "operations": [{"filter": "item.size > 10"}]}),
        step(
            "shape",
            "transform",
            {
                "input": "{{ steps.pick.output.items }}",
                "operations": [{"rename": {"name": "path"}}, {"map": {"label": "file {{ item.path }}"}}],
            },
            depends_on=["pick"],
        ),
        step("count", "transform", {"input": {"total": "{{ steps.shape.output.count }}"}}, depends_on=["shape"]),
    )
    workflow = create_workflow(client, member, document)
    files = [{"name": "a.csv", "size": 5}, {"name": "b.csv", "size": 50}, {"name": "c.csv", "size": 500}]

    run_id = _execute(client, member, workflow["id"], {"files": files})
    status = finish_run(app, run_id)

    run = load_run(app, run_id)
    assert status == "succeeded"
    assert [attempt["step"] for attempt in run["attempts"]] == ["pick", "shape", "count"]
    assert run["attempts"][1]["output"]["items"] == [
        {"path": "b.csv", "size": 50, "label": "file b.csv"},
        {"path": "c.csv", "size": 500, "label": "file c.csv"},
    ]
    assert run["attempts"][2]["output"] == {"total": 2}
    assert run["version"] == 1


def test_run_records_version(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {"input": {"v": 1}})))
    client.put(
        f"/api/v1/workflows/{workflow['id']}",
        json={"definition": definition(step("a", "transform", {"input": {"v": 2}}))},
        headers=member["headers"],
    )

    run_id = _execute(client, member, workflow["id"])
    finish_run(app, run_id)

    run = load_run(app, run_id)
    assert run["version"] == 2
    assert run["attempts"][0]["output"] == {"v": 2}


def test_condition_skips_other_branch(app, client, member):
    document = definition(
        step(
            "check",
            "condition",
            {"if": "trigger.size > 100 and trigger.path endswith '.csv'", "then": ["big"], "else": ["small"]},
        ),
        step("big", "transform", {"input": {"kind": "big"}}, depends_on=["check"]),
        step("small", "transform", {"input": {"kind": "small"}}, depends_on=["check"]),
        step("after_small", "transform", {"input": {}}, depends_on=["small"]),
        step("join", "transform", {"input": {"done": True}}, depends_on=["big", "small"]),
    )
    workflow = create_workflow(client, member, document)

    run_id = _execute(client, member, workflow["id"], {"size": 500, "path": "data/x.csv"})
    finish_run(app, run_id)

    run = load_run(app, run_id)
    assert run["status"] == "succeeded"
    assert statuses(run) == {
        "check": "succeeded",
        "big": "succeeded",
        "small": "skipped",
        "after_small": "skipped",
        "join": "succeeded",
    }
    assert "else branch of check" in next(a["log"] for a in run["attempts"] if a["step"] == "small")


def test_failed_step_stops_run(app, client, member):
    document = definition(
        step("bad", "transform", {"input": [1, "a"], "operations": [{"filter": "item > 0"}]}),
        step("never", "transform", {}, depends_on=["bad"]),
    )
    workflow = create_workflow(client, member, document)

    run_id = _execute(client, member, workflow["id"])
    status = finish_run(app, run_id)

    run = load_run(app, run_id)
    assert status == "failed"
    assert "Step bad failed" in run["error"]
    assert "cannot compare str 'a' with int 0" in run["attempts"][0]["error"]
    assert "never" not in statuses(run)


def test_continue_on_failure(app, client, member):
    document = definition(
        step("bad", "transform", {"input": [1, "a"], "operations": [{"filter": "item > 0"}]}, on_failure="continue"),
        step("next", "transform", {"input": {"status": "{{ steps.bad.status }}"}}, depends_on=["bad"]),
    )
    workflow = create_workflow(client, member, document)

    run_id = _execute(client, member, workflow["id"])
    status = finish_run(app, run_id)

    run = load_run(app, run_id)
    assert status == "succeeded"
    assert statuses(run) == {"bad": "failed", "next": "succeeded"}
    assert run["attempts"][1]["output"] == {"status": "failed"}


def test_retries_with_exponential_backoff(app, client, member):
    answers = iter([500, 503, 200])

    with RecordingServer(lambda request: json_response({"n": 1}, next(answers))) as server:
        app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
        document = definition(
            step("call", "http_request", {"url": server.url + "/flaky"}, retries=2, retry_backoff_seconds=0.2)
        )
        workflow = create_workflow(client, member, document)

        status = run_inline(app, workflow["id"], member["org_id"])

    run = load_run(app, status and _last_run_id(app))
    attempts = run["attempts"]
    assert status == "succeeded"
    assert [attempt["status"] for attempt in attempts] == ["failed", "failed", "succeeded"]
    assert [attempt["number"] for attempt in attempts] == [1, 2, 3]
    assert "HTTP 500" in attempts[0]["error"]
    first_gap = (attempts[1]["started_at"] - attempts[0]["started_at"]).total_seconds()
    second_gap = (attempts[2]["started_at"] - attempts[1]["started_at"]).total_seconds()
    assert first_gap >= 0.2
    assert second_gap >= 0.4
    assert len(server.requests) == 3


def test_retries_exhausted_fail_run(app, client, member):
    with RecordingServer(lambda request: json_response({}, 500)) as server:
        app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
        document = definition(step("call", "http_request", {"url": server.url}, retries=1, retry_backoff_seconds=0))
        workflow = create_workflow(client, member, document)

        status = run_inline(app, workflow["id"], member["org_id"])

    run = load_run(app, _last_run_id(app))
    assert status == "failed"
    assert len(run["attempts"]) == 2
    assert "HTTP 500" in run["error"]


def test_timeout_fails_step(app, client, member):
    def slow(request):
        time.sleep(1.5)
        return json_response({})

    with RecordingServer(slow) as server:
        app.config["OUTBOUND_ALLOW_HOSTS"] = "127.0.0.1"
        document = definition(step("call", "http_request", {"url": server.url}, timeout_seconds=0.3))
        workflow = create_workflow(client, member, document)

        status = run_inline(app, workflow["id"], member["org_id"])

    run = load_run(app, _last_run_id(app))
    assert status == "failed"
    assert run["attempts"][0]["error"].startswith("timeout")
    assert "timeout" in run["error"]


def test_delay_waits_without_worker(app, client, member):
    document = definition(
        step("wait", "delay", {"seconds": 0.5}),
        step("after", "transform", {"input": {"ok": True}}, depends_on=["wait"]),
    )
    workflow = create_workflow(client, member, document)

    run_id = _execute(client, member, workflow["id"])
    parked = wait_for_status(app, run_id, ("waiting",))
    status = finish_run(app, run_id)

    assert parked == "waiting"
    assert status == "succeeded"
    run = load_run(app, run_id)
    assert statuses(run) == {"wait": "succeeded", "after": "succeeded"}
    assert "waited until" in run["attempts"][0]["log"]


def test_delay_run_parks_as_waiting(app, client, member):
    document = definition(step("wait", "delay", {"seconds": 3600}))
    workflow = create_workflow(client, member, document)

    run_id = _execute(client, member, workflow["id"])
    wait_for_status(app, run_id, ("waiting",))

    run = load_run(app, run_id)
    assert run["attempts"][0]["status"] == "running"
    assert get_queues(app).wait_until_idle(timeout=5)


def test_cancel_waiting_run(app, client, member):
    workflow = create_workflow(client, member, definition(step("wait", "delay", {"seconds": 3600})))
    run_id = _execute(client, member, workflow["id"])
    wait_for_status(app, run_id, ("waiting",))

    response = client.post(f"/api/v1/runs/{run_id}/cancel", headers=member["headers"])
    again = client.post(f"/api/v1/runs/{run_id}/cancel", headers=member["headers"])

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert again.status_code == 409
    assert load_run(app, run_id)["attempts"][0]["error"] == "cancelled"


def test_rerun_from_failed_step(app, client, member):
    document = definition(
        step("first", "transform", {"input": {"n": "{{ trigger.n }}"}}),
        step(
            "check",
            "transform",
            {"input": [{"n": "{{ steps.first.output.n }}"}], "operations": [{"filter": "item.n > 'x'"}]},
            depends_on=["first"],
        ),
    )
    workflow = create_workflow(client, member, document)
    run_id = _execute(client, member, workflow["id"], {"n": 5})
    assert finish_run(app, run_id) == "failed"

    response = client.post(f"/api/v1/runs/{run_id}/rerun", json={"start": "failed_step"}, headers=member["headers"])
    new_id = response.get_json()["id"]
    finish_run(app, new_id)

    rerun = load_run(app, new_id)
    assert response.status_code == 202
    assert response.get_json()["rerun_from_step"] == "check"
    assert rerun["attempts"][0]["step"] == "first"
    assert rerun["attempts"][0]["log"].startswith(f"Copied from run {run_id}")
    assert rerun["attempts"][1]["step"] == "check"
    assert rerun["status"] == "failed"


def test_rerun_from_start(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {"input": {"n": "{{ trigger.n }}"}})))
    run_id = _execute(client, member, workflow["id"], {"n": 3})
    finish_run(app, run_id)

    response = client.post(f"/api/v1/runs/{run_id}/rerun", json={}, headers=member["headers"])
    new_id = response.get_json()["id"]
    finish_run(app, new_id)

    rerun = load_run(app, new_id)
    assert rerun["status"] == "succeeded"
    assert rerun["input"] == {"n": 3}
    assert rerun["attempts"][0]["output"] == {"n": 3}


def test_run_enqueued_only_after_commit(app, member, client):
    from app.workflows import runs as run_service

    workflow = create_workflow(client, member, definition(step("a", "transform", {})))

    with app.app_context():
        run_service.execute_manually(member["org_id"], workflow["id"], member["id"])
        pending = len(db.session.info.get("floyo_pending_jobs", []))
        queued_before_commit = sum(queue.count for queue in get_queues(app).queues.values())
        db.session.rollback()
        stored = db.session.query(WorkflowRun).count()

    assert pending == 1
    assert queued_before_commit == 0
    assert stored == 0
    assert sum(queue.count for queue in get_queues(app).queues.values()) == 0


def test_run_list_filters_and_cursor(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {})))
    run_ids = [_execute(client, member, workflow["id"]) for _ in range(5)]
    for run_id in run_ids:
        finish_run(app, run_id)

    first = client.get("/api/v1/runs?limit=2&status=succeeded", headers=member["headers"]).get_json()
    second = client.get(
        f"/api/v1/runs?limit=2&status=succeeded&cursor={first['next_cursor']}", headers=member["headers"]
    ).get_json()
    none = client.get("/api/v1/runs?status=failed", headers=member["headers"]).get_json()
    bad = client.get("/api/v1/runs?status=exploded", headers=member["headers"])

    assert [run["id"] for run in first["data"]] == run_ids[::-1][:2]
    assert [run["id"] for run in second["data"]] == run_ids[::-1][2:4]
    assert none["data"] == []
    assert bad.status_code == 422
    assert "status" in bad.get_json()["error"]["message"]


def test_get_run_with_attempts(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {"input": {"x": 1}})))
    run_id = _execute(client, member, workflow["id"])
    finish_run(app, run_id)

    body = client.get(f"/api/v1/runs/{run_id}", headers=member["headers"]).get_json()

    assert body["status"] == "succeeded"
    assert body["attempts"][0]["output"] == {"x": 1}
    assert body["attempts"][0]["status"] == "succeeded"


def _last_run_id(app):
    with app.app_context():
        run_id = db.session.scalar(db.select(db.func.max(WorkflowRun.id)))
        db.session.remove()
    return run_id
