"""Jobs enqueued after commit wait for the outermost transaction, not a SAVEPOINT."""

import pytest

from app.extensions import db
from app.queue import enqueue_after_commit, get_queues
from app.timeutil import utcnow


@pytest.fixture
def enqueued(app, monkeypatch):
    """The functions handed to the queue, recorded instead of enqueued."""
    calls = []
    monkeypatch.setattr(get_queues(app), "enqueue", lambda func, *args, **kwargs: calls.append(func))
    return calls


def test_savepoint_release_enqueues_nothing(app, enqueued):
    with app.app_context():
        enqueue_after_commit(utcnow)
        with db.session.begin_nested():
            db.session.execute(db.text("SELECT 1"))
        after_savepoint = list(enqueued)
        db.session.commit()

    assert after_savepoint == []
    assert enqueued == [utcnow]


def test_savepoint_rollback_keeps_pending_jobs(app, enqueued):
    with app.app_context():
        enqueue_after_commit(utcnow)
        nested = db.session.begin_nested()
        db.session.execute(db.text("SELECT 1"))
        nested.rollback()
        db.session.commit()

    assert enqueued == [utcnow]


def test_rollback_drops_pending_jobs(app, enqueued):
    with app.app_context():
        enqueue_after_commit(utcnow)
        db.session.execute(db.text("SELECT 1"))
        db.session.rollback()
        db.session.commit()

    assert enqueued == []
