"""The rollup job is enqueued for every committed batch, however ingest and the job interleave."""

from app.analytics import rollups
from app.analytics.models import PendingRollup
from app.events.models import Event
from app.extensions import db
from app.queue import get_queues
from app.timeutil import isoformat, utcnow


def pending_count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(PendingRollup.id)))


def test_batch_committed_after_job_start_is_added(app, client, make_user, make_api_key, wait_for_jobs):
    user = make_user()
    headers = {"Authorization": f"Bearer {make_api_key(user)}"}
    event = {"type": "file_opened", "path": "notes.md", "tool": "vim", "occurred_at": isoformat(utcnow())}
    assert client.post("/api/v1/events", json=event, headers=headers).status_code in (200, 201)
    wait_for_jobs()
    flag = rollups.QUEUED_KEY.format(org_id=user["org_id"])
    connection = get_queues(app).connection

    with app.app_context():
        # A job is queued, so a batch stored now relies on that job.
        connection.set(flag, 1)
        event_id = db.session.scalar(db.select(Event.id))
        rollups.queue_batch(user["org_id"], [event_id])
        # The job starts before this transaction commits: it deletes the flag, reads what is
        # pending (not yet this batch) and ends.
        connection.delete(flag)
        db.session.commit()
    wait_for_jobs()

    assert pending_count(app) == 0
    assert connection.exists(flag) == 0
