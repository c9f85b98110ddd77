"""The queues in the console and the admin API: counts, workers, failed jobs, requeue and delete."""

import time

import pytest
import sqlalchemy as sa
from rq.job import Job
from rq.results import Result

from app.admin import queues as admin_queues
from app.admin.models import AuditEntry
from app.extensions import db
from app.queue import QUEUE_NAMES, get_queues


@pytest.fixture(autouse=True)
def empty_failed_registries(app):
    """Start and end with no failed jobs: the full mode's Redis keeps RQ's keys between tests."""
    with app.app_context():
        for name in QUEUE_NAMES:
            admin_queues.delete_all(name)
    yield
    with app.app_context():
        for name in QUEUE_NAMES:
            admin_queues.delete_all(name)


@pytest.fixture
def admin_headers(make_user, make_api_key):
    admin = make_user(email="admin@example.com", is_admin=True)
    return {"Authorization": f"Bearer {make_api_key(admin)}"}


@pytest.fixture
def signed_in_admin(client, auth, make_user):
    admin = make_user(email="admin@example.com", is_admin=True)
    auth.signin(admin["email"])
    return admin


def _fail_jobs(app, wait_for_jobs, count, queue="default"):
    """Run `count` jobs that raise (math.sqrt of a negative number) in the real workers; return their ids."""
    queues = get_queues(app)
    ids = [queues.enqueue("math.sqrt", -index - 1, queue=queue).id for index in range(count)]
    wait_for_jobs()
    # A worker process that has just started builds the app between taking a job off the queue and
    # marking it started, so the queue can look idle while a job is still to run.
    registry = queues.queues[queue].failed_job_registry
    deadline = time.monotonic() + 30
    while registry.count < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return ids


def _add_failed(app, count, queue="default"):
    """Put `count` failed jobs straight into the failed registry, as a worker would leave them."""
    queues = get_queues(app)
    registry = queues.queues[queue].failed_job_registry
    ids = []
    with queues.connection.pipeline() as pipeline:
        for index in range(count):
            job = Job.create(
                "math.sqrt", args=(-1,), connection=queues.connection, origin=queue, id=f"failed-{index:04d}"
            )
            error = f"Traceback (most recent call last):\nValueError: math domain error {index}"
            job.save(pipeline=pipeline)
            registry.add(job, ttl=3600, exc_string=error, pipeline=pipeline)
            Result.create_failure(job, ttl=3600, exc_string=error, pipeline=pipeline)
            ids.append(job.id)
        pipeline.execute()
    return ids


def test_api_counts_and_workers(client, admin_headers, wait_for_jobs):
    _fail_jobs(client.application, wait_for_jobs, 2)

    body = client.get("/api/v1/admin/queues", headers=admin_headers).get_json()

    default = next(queue for queue in body["queues"] if queue["name"] == "default")
    assert default["failed"] == 2
    assert default["queued"] == 0
    assert {"started", "scheduled", "deferred"} <= set(default)
    assert body["workers"], "the embedded worker or the rq worker processes are registered"
    assert all("default" in worker["queues"] for worker in body["workers"])


def test_api_failed_jobs_show_error(client, admin_headers, wait_for_jobs):
    [job_id] = _fail_jobs(client.application, wait_for_jobs, 1)

    body = client.get("/api/v1/admin/queues/default/failed", headers=admin_headers).get_json()

    [job] = body["data"]
    assert job["id"] == job_id
    assert job["function"] == "math.sqrt"
    assert "ValueError: math domain error" in job["error"]
    assert body["total"] == 1


def test_api_failed_jobs_paginate(client, admin_headers):
    ids = _add_failed(client.application, 120)

    first = client.get("/api/v1/admin/queues/default/failed?limit=50", headers=admin_headers).get_json()
    seen = [job["id"] for job in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"/api/v1/admin/queues/default/failed?limit=50&cursor={cursor}", headers=admin_headers)
        seen += [job["id"] for job in page.get_json()["data"]]
        cursor = page.get_json()["next_cursor"]

    assert first["total"] == 120
    assert len(first["data"]) == 50
    assert sorted(seen) == sorted(ids)


def test_api_requeue_one(client, admin_headers, wait_for_jobs):
    [job_id] = _fail_jobs(client.application, wait_for_jobs, 1)

    response = client.post(f"/api/v1/admin/queues/default/failed/{job_id}/requeue", headers=admin_headers)
    wait_for_jobs()

    assert response.status_code == 200
    registry = get_queues(client.application).queues["default"].failed_job_registry
    # It ran again and failed again: still one entry, and the job was executed twice in all.
    assert registry.get_job_ids() == [job_id]
    with client.application.app_context():
        entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "job.requeued"))
    assert entry.target_id == job_id
    assert entry.details == {"queue": "default"}


def test_api_delete_one(client, admin_headers):
    ids = _add_failed(client.application, 3)

    response = client.delete(f"/api/v1/admin/queues/default/failed/{ids[0]}", headers=admin_headers)
    again = client.delete(f"/api/v1/admin/queues/default/failed/{ids[0]}", headers=admin_headers)

    assert response.status_code == 200
    assert again.status_code == 404
    queues = get_queues(client.application)
    assert sorted(queues.queues["default"].failed_job_registry.get_job_ids()) == ids[1:]
    assert not queues.connection.exists(Job.key_for(ids[0]))


def test_api_requeue_all(client, admin_headers, wait_for_jobs, monkeypatch):
    monkeypatch.setattr(admin_queues, "BULK_CHUNK", 7)
    ids = _add_failed(client.application, 20, queue="analysis")

    response = client.post("/api/v1/admin/queues/analysis/failed/requeue", headers=admin_headers)
    wait_for_jobs()

    assert response.get_json() == {"count": 20}
    queues = get_queues(client.application)
    # The workers ran every job again; each failed again with the error of a real run.
    assert sorted(queues.queues["analysis"].failed_job_registry.get_job_ids()) == ids
    for job in Job.fetch_many(ids, connection=queues.connection):
        assert job.latest_result().exc_string.strip().endswith("ValueError: math domain error")


def test_api_delete_all(client, admin_headers, monkeypatch):
    monkeypatch.setattr(admin_queues, "BULK_CHUNK", 7)
    ids = _add_failed(client.application, 20)

    response = client.delete("/api/v1/admin/queues/default/failed", headers=admin_headers)

    assert response.get_json() == {"count": 20}
    queues = get_queues(client.application)
    assert queues.queues["default"].failed_job_registry.count == 0
    assert not any(queues.connection.exists(Job.key_for(job_id)) for job_id in ids)


def test_api_unknown_queue_is_404(client, admin_headers):
    response = client.get("/api/v1/admin/queues/nope/failed", headers=admin_headers)

    assert response.status_code == 404
    assert "default, analysis" in response.get_json()["error"]["message"]


def test_api_unknown_job_is_404(client, admin_headers):
    response = client.post("/api/v1/admin/queues/default/failed/missing/requeue", headers=admin_headers)

    assert response.status_code == 404


def test_pages_list_and_act_on_failed_jobs(client, signed_in_admin, monkeypatch):
    monkeypatch.setattr(admin_queues, "FAILED_PAGE_SIZE", 2)
    ids = _add_failed(client.application, 3)

    overview = client.get("/admin/queues")
    first = client.get("/admin/queues/default/failed")
    second = client.get("/admin/queues/default/failed?page=2")
    deleted = client.post(f"/admin/queues/default/failed/{ids[0]}/delete")
    cleared = client.post("/admin/queues/default/failed/delete")

    assert overview.status_code == 200
    assert b"math domain error" in first.data
    assert b"Page 1 of 2" in first.data
    assert second.data.count(b"<td><code>failed-") == 1
    assert first.data.count(b"<td><code>failed-") == 2
    assert deleted.status_code == 302
    assert cleared.status_code == 302
    assert get_queues(client.application).queues["default"].failed_job_registry.count == 0
