"""The run engine: executes a run's steps in dependency order inside one RQ job.

A run's job claims the run (queued → running) with a conditional update, so two jobs for the same
run never both execute it. Steps run one at a time in a topological order of the DAG. A delay or
a retry backoff never sleeps in the worker: the run is parked as "waiting" with `wake_at`, and the
scheduler queues it again when that time comes. The job then resumes from the stored attempts.

Robustness: before a step starts, the run's lease is extended past the step's timeout. A worker
that dies leaves the lease to expire; the scheduler's recovery sweep queues the run again, and
this engine resumes it. An attempt found "running" was interrupted and is tried again; an attempt
found "sending" (http_request, webhook, notify) may have reached its target, so it is failed with
"interrupted; not resent" and never repeated.
"""

import logging
import time
from datetime import datetime, timedelta

from flask import current_app

from app.extensions import db
from app.timeutil import isoformat, utcnow
from app.webhooks import outgoing
from app.workflows.expressions import ExpressionError, render
from app.workflows.models import StepAttempt, WorkflowRun, WorkflowVersion
from app.workflows.schemas import SENDING_STEP_TYPES
from app.workflows.steps import HANDLERS, PURE_STEP_TYPES, StepContext, StepFailed

logger = logging.getLogger(__name__)

INTERRUPTED_NOT_RESENT = "interrupted; not resent"
# Pure steps are saved in one commit with what follows them, unless this many seconds have passed.
PURE_COMMIT_SECONDS = 0.5
CLAIM_LEASE_SECONDS = 60


def execute_run(run_id):
    """Claim the run and execute it until it ends or waits; a run that is not queued is left alone.

    Returns the run's status afterwards, or None when it was not claimed. The claim returns the
    run's row and its version's definition, so a run of pure steps costs a handful of statements:
    the throughput of the workers depends on it.
    """
    now = utcnow()
    grace = current_app.config["RUN_RECOVERY_SECONDS"]
    table = WorkflowRun.__table__
    versions = WorkflowVersion.__table__
    connection = db.session.connection()
    # PostgreSQL returns the definition with the claim (UPDATE ... FROM); SQLite's RETURNING
    # cannot name another table, so there it is read with a second statement.
    joined = connection.dialect.name == "postgresql"
    statement = (
        db.update(table)
        .where(table.c.id == run_id, table.c.status == "queued", table.c.cancel_requested.is_(False))
        .values(
            status="running",
            started_at=db.func.coalesce(table.c.started_at, now),
            lease_until=now + timedelta(seconds=grace + CLAIM_LEASE_SECONDS),
            wake_at=None,
        )
        .returning(
            table.c.id,
            table.c.org_id,
            table.c.workflow_id,
            table.c.version_id,
            table.c.version_number,
            table.c.trigger_type,
            table.c.input,
            table.c.created_by_id,
            table.c.started_at,
            table.c.rerun_from_step,
            *([versions.c.definition] if joined else []),
        )
    )
    if joined:
        statement = statement.where(versions.c.id == table.c.version_id)
    row = connection.execute(statement).first()
    if row is None:
        db.session.rollback()
        logger.info("run not claimed run=%s (not queued, or cancelled)", run_id)
        return None
    # The claim is committed with the first step that has to be saved on its own (any step that
    # is not pure, a wait, or the end of the run). A run of pure steps is then one transaction:
    # if the worker dies before its commit, the run is simply still queued and is enqueued again.
    # A run that started before (resumed after a wait or a recovery) or copies attempts of an
    # earlier run (a re-run from a failed step) has attempts to read; a fresh run has none.
    resumed = row.started_at != now or row.rerun_from_step is not None
    if joined:
        definition = row.definition
    else:
        definition = connection.execute(
            db.select(versions.c.definition).where(versions.c.id == row.version_id)
        ).scalar()
    engine = Engine(row, definition, resumed)
    engine.proceed()
    return engine.status


def topological_order(steps):
    """Step ids in an order where each step follows its dependencies; ties keep definition order."""
    remaining = {step["id"]: set(step.get("depends_on") or []) for step in steps}
    order = []
    while remaining:
        ready = [step["id"] for step in steps if step["id"] in remaining and not remaining[step["id"]]]
        if not ready:
            raise ValueError("the steps form a cycle")
        for step_id in ready:
            del remaining[step_id]
            order.append(step_id)
        for dependencies in remaining.values():
            dependencies.difference_update(ready)
    return order


def render_config(step, values):
    """Fill in the templates of a step's config; transform operations and conditions are evaluated later."""
    config = step.get("config") or {}
    if step["type"] == "transform":
        return {**config, "input": render(config.get("input", "{{ trigger }}"), values)}
    if step["type"] == "condition":
        return dict(config)
    return render(config, values)


class Engine:
    def __init__(self, run, definition, resumed=True):
        self.run = run
        self.status = "running"
        self.steps = {step["id"]: step for step in definition["steps"]}
        self.order = topological_order(definition["steps"])
        self.attempts = {}
        if resumed:
            stored = db.session.scalars(
                db.select(StepAttempt).where(StepAttempt.run_id == run.id).order_by(StepAttempt.id)
            )
            for attempt in stored:
                self.attempts.setdefault(attempt.step_id, []).append(attempt)
        self.grace = current_app.config["RUN_RECOVERY_SECONDS"]
        self.last_commit = time.monotonic()

    # State of the run, from its attempts.

    def latest(self, step_id):
        attempts = self.attempts.get(step_id)
        return attempts[-1] if attempts else None

    def is_done(self, step_id):
        attempt = self.latest(step_id)
        if attempt is None:
            return False
        return attempt.status in ("succeeded", "skipped") or (attempt.status == "failed" and not attempt.will_retry)

    def values(self):
        steps = {}
        for step_id in self.order:
            attempt = self.latest(step_id)
            if attempt is not None:
                steps[step_id] = {"output": attempt.output, "status": attempt.status}
        run = self.run
        return {
            "trigger": run.input or {},
            "steps": steps,
            "run": {"id": run.id, "workflow_id": run.workflow_id, "version": run.version_number},
        }

    # The loop.

    def proceed(self):
        while True:
            step_id = self._next_step()
            if step_id is None:
                self._finish()
                return
            outcome = self._advance(self.steps[step_id])
            if outcome == "wait":
                return
            if outcome == "stop":
                return

    def _next_step(self):
        for step_id in self.order:
            if self.is_done(step_id):
                continue
            dependencies = self.steps[step_id].get("depends_on") or []
            if all(self.is_done(dependency) for dependency in dependencies):
                return step_id
        return None

    def _advance(self, step):
        """Move one step forward: skip it, resume it, or start its next attempt."""
        attempt = self.latest(step["id"])
        if attempt is not None and attempt.status in ("running", "sending"):
            return self._resume_attempt(step, attempt)
        skip_reason = self._skip_reason(step)
        if skip_reason:
            self._add_attempt(step, status="skipped", log=skip_reason, finished=True)
            return "continue"
        number = attempt.number + 1 if attempt is not None else 1
        if step["type"] == "delay":
            return self._start_delay(step, number)
        return self._execute(step, number)

    def _skip_reason(self, step):
        dependencies = step.get("depends_on") or []
        for dependency in dependencies:
            parent = self.steps[dependency]
            attempt = self.latest(dependency)
            if parent["type"] == "condition" and attempt.status == "succeeded":
                not_taken = "else" if (attempt.output or {}).get("result") else "then"
                if step["id"] in (parent["config"].get(not_taken) or []):
                    return f"skipped: on the {not_taken} branch of {dependency}, which was not taken"
        if dependencies and all(self.latest(dependency).status == "skipped" for dependency in dependencies):
            return "skipped: every step it depends on was skipped"
        return None

    def _resume_attempt(self, step, attempt):
        """Handle an attempt left unfinished: a waiting delay, or one interrupted by a dead worker."""
        now = utcnow()
        if step["type"] == "delay" and attempt.status == "running":
            until = datetime.fromisoformat((attempt.output or {})["until"])
            if until > now:
                return self._wait(until)
            attempt.status = "succeeded"
            attempt.finished_at = now
            attempt.log += f"\nwaited until {isoformat(until)}"
            return "continue"
        attempt.finished_at = now
        attempt.status = "failed"
        if step["type"] in SENDING_STEP_TYPES:
            attempt.error = INTERRUPTED_NOT_RESENT
            attempt.will_retry = False
            attempt.log += "\nThe worker stopped while this step was sending; it is not sent again."
            logger.warning("step interrupted while sending run=%s step=%s", self.run.id, step["id"])
            self._commit()
            return self._after_failure(step, attempt)
        attempt.error = "interrupted: the worker stopped during this step"
        attempt.will_retry = True
        attempt.log += "\nThe worker stopped during this step; it is tried again."
        logger.warning("step interrupted run=%s step=%s; trying again", self.run.id, step["id"])
        self._commit()
        return "continue"

    def _start_delay(self, step, number):
        config = render_config(step, self.values())
        now = utcnow()
        if config.get("until") is not None:
            try:
                until = datetime.fromisoformat(str(config["until"]))
            except ValueError:
                attempt = self._add_attempt(step, number=number, status="failed", finished=True, config=config)
                attempt.error = f"until {config['until']!r} is not an ISO 8601 time"
                return self._after_failure(step, attempt)
            if until.tzinfo is None:
                from datetime import UTC

                until = until.replace(tzinfo=UTC)
        else:
            until = now + timedelta(seconds=float(config["seconds"]))
        attempt = self._add_attempt(step, number=number, status="running", config=config)
        attempt.output = {"until": isoformat(until)}
        attempt.log = f"waiting until {isoformat(until)}"
        if until <= now:
            attempt.status = "succeeded"
            attempt.finished_at = now
            return "continue"
        return self._wait(until)

    def _add_attempt(self, step, *, number=1, status, log="", finished=False, config=None):
        now = utcnow()
        attempt = StepAttempt(
            run_id=self.run.id,
            step_id=step["id"],
            step_type=step["type"],
            number=number,
            status=status,
            input=config,
            log=log,
            started_at=now,
            finished_at=now if finished else None,
            will_retry=False,
        )
        db.session.add(attempt)
        self.attempts.setdefault(step["id"], []).append(attempt)
        return attempt

    def _execute(self, step, number):
        values = self.values()
        pure = step["type"] in PURE_STEP_TYPES
        sending = step["type"] in SENDING_STEP_TYPES
        try:
            config = render_config(step, values)
        except ExpressionError as error:
            attempt = self._add_attempt(step, number=number, status="failed", finished=True)
            attempt.error = f"invalid template: {error}"
            return self._after_failure(step, attempt)
        attempt = self._add_attempt(step, number=number, status="sending" if sending else "running", config=config)
        if not pure:
            # The attempt and a lease longer than the step's timeout are saved before anything is
            # sent, so a recovery knows this attempt may have reached its target.
            if self._cancel_requested():
                return self._finish_cancelled(attempt)
            timeout = float(step.get("timeout_seconds", 30))
            self._update_run(lease_until=utcnow() + timedelta(seconds=timeout + self.grace))
            self._commit()
        context = StepContext(
            org_id=self.run.org_id,
            user_id=self.run.created_by_id,
            run_id=self.run.id,
            step=step,
            config=config,
            values=values,
            timeout=float(step.get("timeout_seconds", 30)),
            attempt_number=number,
        )
        started = time.monotonic()
        error = None
        try:
            output = HANDLERS[step["type"]](context)
            if pure and time.monotonic() - started > context.timeout:
                raise StepFailed(f"timeout: the step took longer than {context.timeout:g} seconds", "timeout")
        except StepFailed as failure:
            error = str(failure)
        except Exception as failure:  # a bug in a step must fail the step, not the worker
            logger.exception("step raised run=%s step=%s", self.run.id, step["id"])
            error = f"internal error: {type(failure).__name__}: {failure}"
        attempt.log = "\n".join(context.lines)
        attempt.finished_at = utcnow()
        if error is not None:
            attempt.status = "failed"
            attempt.error = error
            return self._after_failure(step, attempt)
        attempt.status = "succeeded"
        attempt.output = output
        if not pure or time.monotonic() - self.last_commit > PURE_COMMIT_SECONDS:
            self._commit()
        return "continue"

    def _after_failure(self, step, attempt):
        retries = int(step.get("retries", 0))
        if attempt.error != INTERRUPTED_NOT_RESENT and attempt.number <= retries:
            attempt.will_retry = True
            backoff = float(step.get("retry_backoff_seconds", 1)) * 2 ** (attempt.number - 1)
            attempt.log += f"\nfailed ({attempt.error}); retry {attempt.number} of {retries} in {backoff:g} s"
            logger.info("step failed run=%s step=%s attempt=%s; retrying", self.run.id, step["id"], attempt.number)
            if backoff > 0:
                return self._wait(utcnow() + timedelta(seconds=backoff))
            self._commit()
            return "continue"
        logger.info(
            "step failed run=%s step=%s attempt=%s error=%s", self.run.id, step["id"], attempt.number, attempt.error
        )
        if step.get("on_failure", "stop") == "continue":
            attempt.log += "\nfailed; the run continues (on_failure: continue)"
            self._commit()
            return "continue"
        self._finish(failed_step=step["id"], error=attempt.error)
        return "stop"

    # Saving and ending.

    def _commit(self):
        db.session.commit()
        self.last_commit = time.monotonic()

    def _cancel_requested(self):
        return bool(db.session.scalar(db.select(WorkflowRun.cancel_requested).where(WorkflowRun.id == self.run.id)))

    def _update_run(self, condition=None, **values):
        """Change the run's row with one UPDATE, only while it is still running; returns the row count."""
        table = WorkflowRun.__table__
        statement = db.update(table).where(table.c.id == self.run.id, table.c.status == "running")
        if condition is not None:
            statement = statement.where(condition)
        db.session.flush()
        return db.session.connection().execute(statement.values(**values)).rowcount

    def _wait(self, until):
        self._update_run(status="waiting", wake_at=until, lease_until=None)
        self._commit()
        self.status = "waiting"
        logger.info("run waiting run=%s until=%s", self.run.id, isoformat(until))
        return "wait"

    def _finish_cancelled(self, attempt=None):
        if attempt is not None:
            attempt.status = "failed"
            attempt.error = "cancelled"
            attempt.finished_at = utcnow()
        self._set_final("cancelled", "Cancelled by a user.")
        return "stop"

    def _finish(self, failed_step=None, error=None):
        if failed_step is not None:
            self._set_final("failed", f"Step {failed_step} failed: {error}")
            return
        self._set_final("succeeded", None)

    def _set_final(self, status, error):
        """End the run. A success requested to cancel in the meantime ends as cancelled."""
        table = WorkflowRun.__table__
        values = {"status": status, "error": error}
        if status == "succeeded":
            cancelled = table.c.cancel_requested.is_(True)
            values = {
                "status": db.case((cancelled, "cancelled"), else_="succeeded"),
                "error": db.case((cancelled, "Cancelled by a user."), else_=None),
            }
        statement = (
            db.update(table)
            .where(table.c.id == self.run.id, table.c.status == "running")
            .values(finished_at=utcnow(), lease_until=None, wake_at=None, **values)
            .returning(table.c.status)
        )
        db.session.flush()
        final = db.session.connection().execute(statement).scalar()
        if final is not None:
            # The outgoing webhooks of the run's end commit with it and are sent after the commit.
            outgoing.emit(self.run.org_id, f"workflow_run.{final}", outgoing.run_payload(self.run, final))
        status = final or status
        self._commit()
        self.status = status
        logger.info("run finished run=%s workflow=%s status=%s", self.run.id, self.run.workflow_id, status)
