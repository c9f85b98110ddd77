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

import functools
import logging
import time
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from app.db_types import UTCDateTime
from app.extensions import db
from app.timeutil import isoformat, utcnow
from app.webhooks import outgoing
from app.webhooks.models import WebhookEndpoint
from app.workflows.compiled import compiled_definition
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
    run's row, a fingerprint of its version and whether the organization has an enabled outgoing
    webhook endpoint. A run of pure steps on PostgreSQL, of a version this process has run before
    and without endpoints, then costs four round trips: BEGIN, the claim, one statement that saves
    the attempts and ends the run, and COMMIT. The throughput of the workers depends on it.
    """
    try:
        row, claimed_at = _claim(run_id)
    except DBAPIError as error:
        # The workers skip the pool's pre-ping, so a connection that the server closed while it
        # sat in the pool fails here, at the first statement, before anything was changed.
        db.session.rollback()
        if not error.connection_invalidated:
            raise
        logger.warning("database connection lost before claiming run=%s; claiming again", run_id)
        row, claimed_at = _claim(run_id)
    if row is None:
        db.session.rollback()
        logger.info("run not claimed run=%s (not queued, or cancelled)", run_id)
        return None
    # The claim is committed with the first step that has to be saved on its own (any step that
    # is not pure, a wait, or the end of the run). A run of pure steps is then one transaction:
    # if the worker dies before its commit, the run is simply still queued and is enqueued again.
    # A run that started before (resumed after a wait or a recovery) or copies attempts of an
    # earlier run (a re-run from a failed step) has attempts to read; a fresh run has none.
    resumed = row.started_at != claimed_at or row.rerun_from_step is not None
    definition = compiled_definition(row.version_id, row.version_created_at)
    engine = Engine(row, definition, resumed)
    engine.proceed()
    return engine.status


def _claim(run_id):
    """Move the run from queued to running; return its row (None when it is not queued) and the time."""
    now = utcnow()
    grace = current_app.config["RUN_RECOVERY_SECONDS"]
    row = db.session.execute(
        _claim_statement(),
        {"run_id": run_id, "now": now, "lease_until": now + timedelta(seconds=grace + CLAIM_LEASE_SECONDS)},
    ).first()
    return row, now


@functools.cache
def _claim_statement():
    """Build the claiming UPDATE once per process, with bound parameters for its values."""
    table = WorkflowRun.__table__
    versions = WorkflowVersion.__table__
    endpoints = WebhookEndpoint.__table__
    now = db.bindparam("now", type_=UTCDateTime)
    # Scalar subqueries in RETURNING work on PostgreSQL and SQLite alike, which an UPDATE ... FROM
    # does not: SQLite's RETURNING cannot name the FROM table.
    version_created_at = db.select(versions.c.created_at).where(versions.c.id == table.c.version_id).scalar_subquery()
    has_endpoints = db.exists().where(endpoints.c.org_id == table.c.org_id, endpoints.c.enabled.is_(True))
    return (
        db.update(table)
        .where(table.c.id == db.bindparam("run_id"), table.c.status == "queued", table.c.cancel_requested.is_(False))
        .values(
            status="running",
            started_at=db.func.coalesce(table.c.started_at, now),
            lease_until=db.bindparam("lease_until", type_=UTCDateTime),
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
            version_created_at.label("version_created_at"),
            has_endpoints.label("has_webhook_endpoints"),
        )
    )


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
        self.steps = definition.steps
        self.order = definition.order
        self.attempts = {}
        # Attempts not yet added to the session: they are saved with the next commit, or on
        # PostgreSQL in the statement that ends the run.
        self.unsaved = []
        # False until the first commit: the whole run so far is one transaction with its claim.
        self.committed = False
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
        self.unsaved.append(attempt)
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
        self._add_unsaved()
        db.session.commit()
        self.committed = True
        self.last_commit = time.monotonic()

    def _add_unsaved(self):
        if self.unsaved:
            db.session.add_all(self.unsaved)
            self.unsaved = []

    def _cancel_requested(self):
        return bool(db.session.scalar(db.select(WorkflowRun.cancel_requested).where(WorkflowRun.id == self.run.id)))

    def _update_run(self, condition=None, **values):
        """Change the run's row with one UPDATE, only while it is still running; returns the row count."""
        table = WorkflowRun.__table__
        statement = db.update(table).where(table.c.id == self.run.id, table.c.status == "running")
        if condition is not None:
            statement = statement.where(condition)
        self._add_unsaved()
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
        connection = db.session.connection()
        parameters = {"run_id": self.run.id, "finished_at": utcnow(), "status": status, "error": error}
        if self.unsaved and connection.dialect.name == "postgresql":
            # One round trip: the attempts are inserted by a CTE of the UPDATE that ends the run.
            # A run that has committed nothing yet ran only pure steps, which _final_statement
            # may commit asynchronously.
            parameters["attempts"] = [_attempt_document(attempt) for attempt in self.unsaved]
            self.unsaved = []
            asynchronous = not self.committed and current_app.config["WORKFLOW_ASYNC_COMMIT"]
            statement = _final_statement(status == "succeeded", True, asynchronous)
        else:
            self._add_unsaved()
            statement = _final_statement(status == "succeeded", False, False)
        db.session.flush()
        final = connection.execute(statement, parameters).scalar()
        # A run that ends in its claiming transaction relies on the claim's check for an enabled
        # endpoint of the organization. A run that committed before reads the endpoints again.
        if final is not None and (self.committed or self.run.has_webhook_endpoints):
            # The outgoing webhooks of the run's end commit with it and are sent after the commit.
            outgoing.emit(self.run.org_id, f"workflow_run.{final}", outgoing.run_payload(self.run, final))
        status = final or status
        self._commit()
        self.status = status
        logger.info("run finished run=%s workflow=%s status=%s", self.run.id, self.run.workflow_id, status)


ATTEMPT_COLUMNS = (
    ("run_id", BigInteger),
    ("step_id", Text),
    ("step_type", Text),
    ("number", Integer),
    ("status", Text),
    ("will_retry", Boolean),
    ("input", JSONB),
    ("output", JSONB),
    ("log", Text),
    ("error", Text),
    ("started_at", DateTime(timezone=True)),
    ("finished_at", DateTime(timezone=True)),
)


def _attempt_document(attempt):
    document = {name: getattr(attempt, name) for name, _ in ATTEMPT_COLUMNS}
    for name in ("started_at", "finished_at"):
        if document[name] is not None:
            document[name] = document[name].isoformat()
    return document


@functools.cache
def _final_statement(succeeded, with_attempts, asynchronous):
    """Build the UPDATE that ends a run, once per process for each combination of arguments.

    A success requested to cancel in the meantime ends as cancelled. `with_attempts` (PostgreSQL
    only) adds a CTE that inserts the attempts given as one JSON array in the `attempts`
    parameter, so the statement text is the same however many steps the run has.

    `asynchronous` sets synchronous_commit off for the transaction, so its commit does not wait
    for the WAL flush. It is only used for a run that ran in its claiming transaction, which means
    it ran only pure steps. A database crash can then lose the most recent of such commits, as
    "Asynchronous Commit" in the PostgreSQL manual describes. Those runs are back to "queued", and
    the scheduler enqueues them again after ten times RUN_RECOVERY_SECONDS, to the same result.
    An outgoing webhook about such a run is sent only after the delivery's own claim has committed
    synchronously, and that flushes the run's commit first.
    """
    table = WorkflowRun.__table__
    if succeeded:
        cancelled = table.c.cancel_requested.is_(True)
        values = {
            "status": db.case((cancelled, "cancelled"), else_="succeeded"),
            "error": db.case((cancelled, "Cancelled by a user."), else_=None),
        }
    else:
        values = {"status": db.bindparam("status"), "error": db.bindparam("error")}
    statement = (
        db.update(table)
        .where(table.c.id == db.bindparam("run_id"), table.c.status == "running")
        .values(finished_at=db.bindparam("finished_at", type_=UTCDateTime), lease_until=None, wake_at=None, **values)
        .returning(table.c.status)
    )
    if with_attempts:
        records = (
            db.func.jsonb_to_recordset(db.bindparam("attempts", type_=JSONB))
            .table_valued(*(db.column(name, type_) for name, type_ in ATTEMPT_COLUMNS))
            .render_derived(with_types=True)
        )
        names = [name for name, _ in ATTEMPT_COLUMNS]
        insert = db.insert(StepAttempt.__table__).from_select(names, db.select(*records.c))
        statement = statement.add_cte(insert.cte("saved_attempts"))
    if asynchronous:
        statement = statement.returning(db.func.set_config("synchronous_commit", "off", True))
    return statement
