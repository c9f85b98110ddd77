"""The scheduler: fires schedules, wakes waiting runs, recovers runs of dead workers, prunes old runs.

Full mode runs it as its own process (`flask floyo scheduler`); the embedded mode runs it on a
thread next to the embedded worker. Every task is safe with two schedulers at once: each change
is a conditional update or an insert guarded by a unique constraint.
"""

import logging
import threading
import time
from datetime import timedelta

from flask import current_app

from app.extensions import db
from app.timeutil import utcnow
from app.webhooks.outgoing import enqueue_due_deliveries
from app.workflows.models import FINISHED_RUN_STATUSES, StepAttempt, WorkflowRun
from app.workflows.runs import enqueue_run
from app.workflows.triggers import fire_due_schedules

logger = logging.getLogger(__name__)

BATCH = 200
PRUNE_EVERY_SECONDS = 3600


def wake_waiting_runs(now=None):
    """Queue again the runs whose delay or retry backoff has passed."""
    now = now or utcnow()
    ids = db.session.scalars(
        db.select(WorkflowRun.id)
        .where(WorkflowRun.status == "waiting", WorkflowRun.wake_at <= now)
        .order_by(WorkflowRun.wake_at)
        .limit(BATCH)
    ).all()
    return _requeue(ids, db.and_(WorkflowRun.status == "waiting", WorkflowRun.wake_at <= now), "woken")


def recover_stalled_runs(now=None):
    """Queue again the running runs whose lease has passed: their worker stopped (or was killed).

    The engine resumes such a run from its stored attempts; see app.workflows.runner.
    """
    now = now or utcnow()
    ids = db.session.scalars(
        db.select(WorkflowRun.id)
        .where(WorkflowRun.status == "running", WorkflowRun.lease_until < now)
        .order_by(WorkflowRun.lease_until)
        .limit(BATCH)
    ).all()
    return _requeue(ids, db.and_(WorkflowRun.status == "running", WorkflowRun.lease_until < now), "recovered")


def requeue_lost_runs(now=None):
    """Enqueue again queued runs whose job seems lost (an in-memory queue after a restart, a dropped enqueue).

    A run waits in the queue this long at most before it is enqueued again; a duplicate job is
    harmless because the engine claims a run with a conditional update.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=current_app.config["RUN_RECOVERY_SECONDS"] * 10)
    runs = db.session.scalars(
        db.select(WorkflowRun).where(WorkflowRun.status == "queued", WorkflowRun.queued_at < cutoff).limit(BATCH)
    ).all()
    for run in runs:
        logger.warning("queued run re-enqueued run=%s queued_at=%s", run.id, run.queued_at)
        enqueue_run(run)
    db.session.commit()
    return len(runs)


def _requeue(ids, condition, verb):
    count = 0
    for run_id in ids:
        changed = db.session.execute(
            db.update(WorkflowRun)
            .where(WorkflowRun.id == run_id, condition)
            .values(status="queued", lease_until=None, wake_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            run = db.session.get(WorkflowRun, run_id)
            enqueue_run(run)
            count += 1
            if verb == "recovered":
                logger.warning("run recovered after its worker stopped run=%s", run_id)
    db.session.commit()
    return count


def prune_old_runs(now=None, batch=5000):
    """Delete runs (and their attempts) created more than WORKFLOW_RUN_RETENTION_DAYS ago; returns the count."""
    now = now or utcnow()
    cutoff = now - timedelta(days=current_app.config["WORKFLOW_RUN_RETENTION_DAYS"])
    total = 0
    while True:
        ids = db.session.scalars(
            db.select(WorkflowRun.id)
            .where(WorkflowRun.created_at < cutoff, WorkflowRun.status.in_(FINISHED_RUN_STATUSES))
            .limit(batch)
        ).all()
        if not ids:
            break
        db.session.execute(db.delete(StepAttempt).where(StepAttempt.run_id.in_(ids)))
        db.session.execute(db.update(WorkflowRun).where(WorkflowRun.rerun_of_id.in_(ids)).values(rerun_of_id=None))
        db.session.execute(db.delete(WorkflowRun).where(WorkflowRun.id.in_(ids)))
        db.session.commit()
        total += len(ids)
    if total:
        logger.info("pruned runs count=%s older_than=%s", total, cutoff.isoformat())
    return total


class Scheduler:
    """One scheduler loop; `tick()` does one round of every task."""

    def __init__(self, app):
        self.app = app
        self.stopping = threading.Event()
        self.last_prune = 0.0

    def tick(self):
        with self.app.app_context():
            try:
                fired = fire_due_schedules()
                woken = wake_waiting_runs()
                recovered = recover_stalled_runs()
                requeued = requeue_lost_runs()
                enqueue_due_deliveries()
                if time.monotonic() - self.last_prune > PRUNE_EVERY_SECONDS:
                    prune_old_runs()
                    self.last_prune = time.monotonic()
            except Exception:
                db.session.rollback()
                logger.exception("scheduler tick failed")
                return None
            finally:
                db.session.remove()
        return {"fired": fired, "woken": woken, "recovered": recovered, "requeued": requeued}

    def run_forever(self):
        interval = self.app.config["SCHEDULER_INTERVAL_SECONDS"]
        logger.info("scheduler started interval=%ss", interval)
        while not self.stopping.is_set():
            self.tick()
            self.stopping.wait(interval)
        logger.info("scheduler stopped")

    def stop(self):
        self.stopping.set()


class EmbeddedScheduler:
    """The scheduler on a daemon thread beside the embedded worker; started and stopped with it.

    Tests drive the scheduler with `Scheduler.tick()` instead, so the thread stays off when the app
    is in testing mode unless EMBEDDED_SCHEDULER is set.
    """

    def __init__(self, app):
        self.app = app
        self.scheduler = None
        self.thread = None

    def start(self):
        if not self.app.config.get("EMBEDDED_SCHEDULER", not self.app.testing):
            return
        if self.thread is not None and self.thread.is_alive():
            return
        self.scheduler = Scheduler(self.app)
        self.thread = threading.Thread(target=self.scheduler.run_forever, name="floyo-scheduler", daemon=True)
        self.thread.start()

    def stop(self):
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.scheduler = None
        self.thread = None


def init_app(app):
    """Run the scheduler beside the embedded worker (full mode runs `flask floyo scheduler` instead)."""
    from app.queue import get_queues

    queues = get_queues(app)
    if queues.embedded:
        queues.embedded_services.append(EmbeddedScheduler(app))
