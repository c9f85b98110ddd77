"""Runs: creating and enqueueing them, listing, cancelling and re-running."""

import json
import logging
from datetime import datetime

from app.billing.limits import count_run
from app.errors import Conflict, NotFound, ValidationError
from app.extensions import db
from app.queue import enqueue_after_commit
from app.timeutil import utcnow
from app.workflows.models import ACTIVE_RUN_STATUSES, RUN_STATUSES, TRIGGER_TYPES, StepAttempt, WorkflowRun
from app.workflows.schemas import ancestor_map
from app.workflows.service import get_workflow

logger = logging.getLogger(__name__)

MAX_INPUT_BYTES = 256 * 1024
RUN_QUEUE = "default"


def enqueue_run(run):
    """Queue the run's job once the current transaction commits, so the worker finds the row."""
    from app.workflows.jobs import execute_run_job

    run.queued_at = utcnow()
    enqueue_after_commit(execute_run_job, run.id, queue=RUN_QUEUE)


def check_input(data):
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationError(
            'The run input must be a JSON object, such as {"path": "data/sales.csv"}.',
            [{"field": "input", "message": "must be a JSON object"}],
        )
    if len(json.dumps(data)) > MAX_INPUT_BYTES:
        raise ValidationError(f"The run input is larger than {MAX_INPUT_BYTES} bytes; send less data.")
    return data


def create_run(workflow, trigger_type, data=None, user_id=None, scheduled_for=None, trigger_event_id=None):
    """Add a queued run of the workflow's current version and enqueue it after commit.

    Past the plan's monthly run limit a manual run raises LimitExceeded, and a run of any other
    trigger is stored as "skipped" with the reason in its error and is not enqueued.
    """
    data = check_input(data)
    skip_reason = count_run(workflow.org_id, trigger_type)
    run = WorkflowRun(
        org_id=workflow.org_id,
        workflow_id=workflow.id,
        version_id=workflow.current_version_id,
        version_number=workflow.version_number,
        status="queued",
        trigger_type=trigger_type,
        input=data,
        scheduled_for=scheduled_for,
        trigger_event_id=trigger_event_id,
        created_by_id=user_id,
    )
    if skip_reason is not None:
        run.status = "skipped"
        run.error = skip_reason
        run.created_at = run.finished_at = utcnow()
    db.session.add(run)
    db.session.flush()
    if skip_reason is not None:
        logger.info(
            "run skipped org=%s workflow=%s run=%s trigger=%s", workflow.org_id, workflow.id, run.id, trigger_type
        )
        return run
    enqueue_run(run)
    logger.info("run created org=%s workflow=%s run=%s trigger=%s", workflow.org_id, workflow.id, run.id, trigger_type)
    return run


def execute_manually(org_id, workflow_id, user_id, data=None):
    workflow = get_workflow(org_id, workflow_id)
    return create_run(workflow, "manual", data, user_id=user_id)


def get_run(org_id, run_id):
    run = db.session.scalar(db.select(WorkflowRun).where(WorkflowRun.org_id == org_id, WorkflowRun.id == run_id))
    if run is None:
        raise NotFound(f"Run {run_id} was not found in this organization.")
    return run


def parse_filters(status=None, trigger=None, since=None, until=None):
    """Check run-list filters and return them typed; raise ValidationError naming the bad one."""
    problems = []
    if status and status not in RUN_STATUSES:
        problems.append({"field": "status", "message": f"use one of {', '.join(RUN_STATUSES)}"})
    if trigger and trigger not in TRIGGER_TYPES:
        problems.append({"field": "trigger", "message": f"use one of {', '.join(TRIGGER_TYPES)}"})
    times = {}
    for name, raw in (("since", since), ("until", until)):
        if not raw:
            continue
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            problems.append({"field": name, "message": "use a date (2025-02-13) or an ISO 8601 time with an offset"})
            continue
        if value.tzinfo is None:
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        times[name] = value
    if problems:
        raise ValidationError(f"Invalid run filter: {problems[0]['field']}: {problems[0]['message']}.", problems)
    return {
        "status": status or None,
        "trigger": trigger or None,
        "since": times.get("since"),
        "until": times.get("until"),
    }


def list_runs(org_id, workflow_id=None, filters=None, limit=50, before_id=None):
    """Runs newest first, up to limit + 1 rows so the caller can tell whether another page exists.

    Paging by id (the cursor is the last id shown) keeps every page an index range scan on
    (org_id, id) or (workflow_id, id), however many runs there are.
    """
    filters = filters or {}
    query = db.select(WorkflowRun).where(WorkflowRun.org_id == org_id)
    if workflow_id is not None:
        query = query.where(WorkflowRun.workflow_id == workflow_id)
    if filters.get("status"):
        query = query.where(WorkflowRun.status == filters["status"])
    if filters.get("trigger"):
        query = query.where(WorkflowRun.trigger_type == filters["trigger"])
    if filters.get("since"):
        query = query.where(WorkflowRun.created_at >= filters["since"])
    if filters.get("until"):
        query = query.where(WorkflowRun.created_at < filters["until"])
    if before_id is not None:
        query = query.where(WorkflowRun.id < before_id)
    return db.session.scalars(query.order_by(WorkflowRun.id.desc()).limit(limit + 1)).all()


def cancel_run(org_id, run_id):
    """Cancel a queued or waiting run at once; ask a running one to stop before its next step."""
    run = get_run(org_id, run_id)
    if run.status not in ACTIVE_RUN_STATUSES:
        raise Conflict(
            f"Run {run.id} has already finished ({run.status}); only queued or running runs can be cancelled."
        )
    now = utcnow()
    stopped = db.session.execute(
        db.update(WorkflowRun)
        .where(WorkflowRun.id == run.id, WorkflowRun.status.in_(("queued", "waiting")))
        .values(status="cancelled", finished_at=now, wake_at=None, cancel_requested=True, error="Cancelled by a user.")
        .execution_options(synchronize_session=False)
    ).rowcount
    if stopped:
        db.session.execute(
            db.update(StepAttempt)
            .where(StepAttempt.run_id == run.id, StepAttempt.status == "running")
            .values(status="failed", error="cancelled", finished_at=now)
            .execution_options(synchronize_session=False)
        )
    else:
        run.cancel_requested = True
    db.session.expire(run)
    logger.info("run cancel requested org=%s run=%s", org_id, run.id)
    return run


def final_attempts(run):
    """The last attempt of each step, by step id."""
    latest = {}
    for attempt in run.attempts:
        latest[attempt.step_id] = attempt
    return latest


def failed_step(run):
    """The id of the step that failed the run, or None."""
    for attempt in reversed(run.attempts):
        if attempt.status == "failed" and not attempt.will_retry:
            return attempt.step_id
    return None


def rerun(org_id, run_id, user_id, from_failed_step=False):
    """Start a new run of the same version and input, from the start or from the failed step.

    From the failed step, the steps that are neither that step nor after it keep their outputs:
    their last attempts are copied into the new run.
    """
    original = get_run(org_id, run_id)
    if original.active:
        raise Conflict(f"Run {original.id} is still {original.status}; wait for it to end or cancel it first.")
    # A re-run is a person's request like a manual run, so past the monthly limit it is rejected.
    count_run(org_id, "manual")
    run = WorkflowRun(
        org_id=org_id,
        workflow_id=original.workflow_id,
        version_id=original.version_id,
        version_number=original.version_number,
        status="queued",
        trigger_type=original.trigger_type,
        input=original.input,
        rerun_of_id=original.id,
        created_by_id=user_id,
    )
    start_step = None
    if from_failed_step:
        start_step = failed_step(original)
        if start_step is None:
            raise Conflict(f"Run {original.id} has no failed step; re-run it from the start.")
        run.rerun_from_step = start_step
    db.session.add(run)
    db.session.flush()
    if start_step is not None:
        _copy_attempts_before(original, run, start_step)
    enqueue_run(run)
    logger.info("run re-run org=%s run=%s from=%s step=%s", org_id, run.id, original.id, start_step)
    return run


def _copy_attempts_before(original, run, start_step):
    from app.workflows.schemas import Step

    steps = [Step.model_validate(step) for step in original.version.definition["steps"]]
    ancestors = ancestor_map(steps)
    redo = {start_step} | {step.id for step in steps if start_step in ancestors[step.id]}
    for step_id, attempt in final_attempts(original).items():
        if step_id in redo or attempt.status not in ("succeeded", "skipped", "failed"):
            continue
        db.session.add(
            StepAttempt(
                run_id=run.id,
                step_id=step_id,
                step_type=attempt.step_type,
                number=1,
                status=attempt.status,
                input=attempt.input,
                output=attempt.output,
                log=f"Copied from run {original.id}.\n{attempt.log}",
                error=attempt.error,
                started_at=attempt.started_at,
                finished_at=attempt.finished_at,
            )
        )
