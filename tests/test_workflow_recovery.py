"""A worker killed with SIGKILL in the middle of a run: the run is resumed or failed, never stuck,
and a step that was sending is not sent again."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import test_workflow_helpers
from rq import Queue
from test_workflow_helpers import (
    RecordingServer,
    create_workflow,
    definition,
    finish_run,
    json_response,
    load_run,
    statuses,
    step,
    wait_for_status,
)

from app.extensions import db
from app.timeutil import utcnow
from app.workflows import runs as run_service
from app.workflows.jobs import execute_run_job
from app.workflows.models import StepAttempt, WorkflowRun

member = test_workflow_helpers.member
ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("FLOYO_TEST_REDIS_URL") or "redis://127.0.0.1:6379/10"


@pytest.fixture
def real_redis():
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}; the SIGKILL test needs a real Redis and rq worker")
    return connection


@pytest.fixture
def hanging_server():
    """A server that records each request and holds it open until the test releases it."""
    release = threading.Event()

    def respond(request):
        release.wait(30)
        return json_response({"ok": True})

    with RecordingServer(respond) as server:
        yield server
        release.set()


def _start_worker(app, queue_name, tmp_path):
    environment = {
        **os.environ,
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": REDIS_URL,
        "INSTANCE_PATH": str(tmp_path / "worker"),
        "SECRET_KEY": "test-secret",
        "OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
        "RUN_RECOVERY_SECONDS": "1",
    }
    rq = str(Path(sys.executable).with_name("rq"))
    return subprocess.Popen(
        [rq, "worker", "-w", "app.queue.FloyoWorker", "--url", REDIS_URL, queue_name],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "worker.log", "w"),
    )


def _kill_during_send(app, client, member, real_redis, server, tmp_path, on_failure):
    document = definition(
        step("call", "http_request", {"url": server.url + "/slow"}, timeout_seconds=2, on_failure=on_failure),
        step("after", "transform", {"input": {"done": True}}, depends_on=["call"]),
    )
    workflow = create_workflow(client, member, document)
    with app.app_context():
        run = run_service.execute_manually(member["org_id"], workflow["id"], member["id"])
        db.session.info.pop("floyo_pending_jobs", None)
        db.session.commit()
        run_id = run.id
        db.session.remove()
    queue_name = f"workflow-recovery-{uuid.uuid4().hex[:8]}"
    worker = _start_worker(app, queue_name, tmp_path)
    try:
        Queue(queue_name, connection=real_redis).enqueue(execute_run_job, run_id)
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.requests, "the worker never sent the request"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        Queue(queue_name, connection=real_redis).delete(delete_jobs=True)
    left = load_run(app, run_id)
    status = finish_run(app, run_id, timeout=60)
    return run_id, left, status


def test_killed_worker_sending_step_continues(app, client, member, real_redis, hanging_server, tmp_path):
    run_id, left, status = _kill_during_send(app, client, member, real_redis, hanging_server, tmp_path, "continue")

    run = load_run(app, run_id)
    assert left["status"] == "running"
    assert left["attempts"][0]["status"] == "sending"
    assert status == "succeeded"
    assert statuses(run) == {"call": "failed", "after": "succeeded"}
    assert run["attempts"][0]["error"] == "interrupted; not resent"
    assert len(hanging_server.requests) == 1


def test_killed_worker_sending_step_fails_run(app, client, member, real_redis, hanging_server, tmp_path):
    run_id, left, status = _kill_during_send(app, client, member, real_redis, hanging_server, tmp_path, "stop")

    run = load_run(app, run_id)
    assert left["status"] == "running"
    assert status == "failed"
    assert "interrupted; not resent" in run["error"]
    assert [attempt["step"] for attempt in run["attempts"]] == ["call"]
    assert len(hanging_server.requests) == 1


def test_interrupted_pure_step_is_retried(app, client, member):
    document = definition(
        step("first", "transform", {"input": {"n": 1}}),
        step("second", "transform", {"input": {"n": "{{ steps.first.output.n }}"}}, depends_on=["first"]),
    )
    workflow = create_workflow(client, member, document)
    with app.app_context():
        run = run_service.execute_manually(member["org_id"], workflow["id"], member["id"])
        db.session.info.pop("floyo_pending_jobs", None)
        past = utcnow() - timedelta(seconds=5)
        run.status, run.started_at, run.lease_until = "running", past, past
        db.session.add(
            StepAttempt(run_id=run.id, step_id="first", step_type="transform", status="succeeded", output={"n": 1})
        )
        db.session.add(StepAttempt(run_id=run.id, step_id="second", step_type="transform", status="running"))
        db.session.commit()
        run_id = run.id
        db.session.remove()

    status = finish_run(app, run_id)

    run = load_run(app, run_id)
    assert status == "succeeded"
    assert [(a["step"], a["number"], a["status"]) for a in run["attempts"]] == [
        ("first", 1, "succeeded"),
        ("second", 1, "failed"),
        ("second", 2, "succeeded"),
    ]
    assert run["attempts"][1]["error"].startswith("interrupted")


def test_lost_queued_run_is_enqueued_again(app, client, member):
    workflow = create_workflow(client, member, definition(step("a", "transform", {"input": {"x": 1}})))
    with app.app_context():
        run = run_service.execute_manually(member["org_id"], workflow["id"], member["id"])
        db.session.info.pop("floyo_pending_jobs", None)
        run.queued_at = utcnow() - timedelta(hours=1)
        db.session.commit()
        run_id = run.id
        db.session.remove()

    status = finish_run(app, run_id)

    assert status == "succeeded"
    with app.app_context():
        assert db.session.get(WorkflowRun, run_id).status == "succeeded"
        db.session.remove()
    assert wait_for_status(app, run_id, ("succeeded",)) == "succeeded"
