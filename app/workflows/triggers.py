"""Triggers other than the manual one: incoming webhooks, event matches and schedules."""

import fnmatch
import logging
import zoneinfo
from datetime import UTC, datetime

from croniter import croniter
from sqlalchemy.exc import IntegrityError

from app.errors import NotFound
from app.extensions import db
from app.queue import enqueue_after_commit
from app.timeutil import utcnow
from app.workflows.models import Workflow
from app.workflows.runs import create_run

logger = logging.getLogger(__name__)


def receive_webhook(token, data):
    """Start the workflow whose incoming webhook URL carries `token`, with the request body as input."""
    workflow = None
    if token:
        workflow = db.session.scalar(
            db.select(Workflow).where(Workflow.webhook_token == token, Workflow.trigger_type == "webhook")
        )
    if workflow is None or not workflow.enabled:
        raise NotFound("No enabled workflow has this webhook URL; copy the URL again from the workflow page.")
    return create_run(workflow, "webhook", data)


def match_new_events(org_id, event_ids):
    """Queue matching of newly stored events against event-match workflows, after the ingest commits.

    Called by the event ingest for every accepted batch, so it costs one indexed query when the
    organization has no enabled event-match workflow.
    """
    if not event_ids:
        return False
    has_any = db.session.scalar(
        db.select(Workflow.id)
        .where(Workflow.org_id == org_id, Workflow.trigger_type == "event_match", Workflow.enabled.is_(True))
        .limit(1)
    )
    if has_any is None:
        return False
    from app.workflows.jobs import match_events_job

    enqueue_after_commit(match_events_job, org_id, [int(event_id) for event_id in event_ids])
    return True


def start_matching_runs(org_id, event_ids):
    """Create one run per (workflow, matching event); a repeated match is stopped by the unique constraint."""
    from app.events.models import Event

    workflows = db.session.scalars(
        db.select(Workflow).where(
            Workflow.org_id == org_id, Workflow.trigger_type == "event_match", Workflow.enabled.is_(True)
        )
    ).all()
    if not workflows or not event_ids:
        return 0
    events = db.session.scalars(db.select(Event).where(Event.org_id == org_id, Event.id.in_(event_ids))).all()
    started = 0
    for event in events:
        if (event.meta or {}).get("workflow_run_id") is not None:
            continue  # recorded by a workflow; matching it could loop for ever
        for workflow in workflows:
            trigger = workflow.definition["trigger"]
            if event.type != trigger["event_type"] or not fnmatch.fnmatchcase(event.path, trigger["path_glob"]):
                continue
            run = _start_once(workflow, event)
            if run is not None and run.status == "queued":
                started += 1
    db.session.commit()
    logger.info("event match org=%s events=%s runs started=%s", org_id, len(events), started)
    return started


def _start_once(workflow, event):
    """Create the run of `workflow` for `event`; returns it, or None when the event already started one."""
    from app.timeutil import isoformat

    data = {
        "event_id": event.id,
        "type": event.type,
        "path": event.path,
        "tool": event.tool,
        "occurred_at": isoformat(event.occurred_at),
        "session": event.session,
        "metadata": event.meta or {},
    }
    try:
        with db.session.begin_nested():
            return create_run(workflow, "event_match", data, trigger_event_id=event.id)
    except IntegrityError:
        return None


def due_time(workflow, now):
    """The latest due time of a schedule in (schedule_checked_until, now], or None.

    NOTE: after a scheduler outage only the latest missed time fires, not every one of them.
    """
    trigger = workflow.definition["trigger"]
    zone = zoneinfo.ZoneInfo(trigger.get("timezone") or "UTC")
    since = workflow.schedule_checked_until or workflow.created_at
    iterator = croniter(trigger["cron"], now.astimezone(zone))
    latest = iterator.get_prev(datetime).astimezone(UTC)
    if latest <= since:
        return None
    return latest


def fire_due_schedules(now=None):
    """Start a run for every schedule that came due; returns how many runs were started (not skipped).

    Two schedulers may run this at once: the unique (workflow_id, scheduled_for) constraint lets
    exactly one of them insert each run.
    """
    now = now or utcnow()
    workflows = db.session.scalars(
        db.select(Workflow).where(Workflow.trigger_type == "schedule", Workflow.enabled.is_(True))
    ).all()
    started = 0
    for workflow in workflows:
        due = due_time(workflow, now)
        if due is None:
            continue
        try:
            with db.session.begin_nested():
                run = create_run(workflow, "schedule", {"scheduled_for": due.isoformat()}, scheduled_for=due)
            if run.status == "queued":
                started += 1
        except IntegrityError:
            logger.info("schedule already fired workflow=%s due=%s", workflow.id, due.isoformat())
        workflow.schedule_checked_until = now
        db.session.commit()
    return started
