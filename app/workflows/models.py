"""Workflows, their immutable versions, runs and the attempts of each step."""

from app.db_types import JSONDocument, UTCDateTime
from app.events.models import BigId
from app.extensions import db
from app.timeutil import utcnow

# `skipped`: a scheduled, event-match or webhook run that was not executed because the plan's
# monthly run limit was reached. Its error contains the reason.
RUN_STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled", "skipped")
ACTIVE_RUN_STATUSES = ("queued", "running", "waiting")
FINISHED_RUN_STATUSES = ("succeeded", "failed", "cancelled", "skipped")
TRIGGER_TYPES = ("manual", "schedule", "webhook", "event_match")
# `sending` marks an attempt of a step that sends something while the request is in flight, so a
# recovery after a dead worker can tell "may have been sent" from "never started".
ATTEMPT_STATUSES = ("running", "sending", "succeeded", "failed", "skipped")


class Workflow(db.Model):
    __tablename__ = "workflows"
    __table_args__ = (
        db.Index("ix_workflows_org_name", "org_id", "name"),
        # The ingest path asks "does this organization have any event-match workflow?" on every batch.
        db.Index("ix_workflows_org_trigger", "org_id", "trigger_type"),
    )

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    name = db.Column(db.String(200), nullable=False)
    description = db.Column(db.Text, nullable=False, default="")
    trigger_type = db.Column(db.String(16), nullable=False)
    # The definition of the latest version, copied here so that lists and triggers read one row.
    definition = db.Column(JSONDocument, nullable=False)
    version_number = db.Column(db.Integer, nullable=False, default=1)
    current_version_id = db.Column(db.Integer)
    enabled = db.Column(db.Boolean, nullable=False, default=True)
    # The secret part of the incoming webhook URL; rotated on request.
    webhook_token = db.Column(db.String(64), unique=True)
    # Schedule triggers: due times up to this instant have been considered.
    schedule_checked_until = db.Column(UTCDateTime)
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class WorkflowVersion(db.Model):
    """One saved definition. Rows are never updated; a restore saves a new version."""

    __tablename__ = "workflow_versions"
    __table_args__ = (db.UniqueConstraint("workflow_id", "number"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    workflow_id = db.Column(db.Integer, db.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False)
    number = db.Column(db.Integer, nullable=False)
    definition = db.Column(JSONDocument, nullable=False)
    note = db.Column(db.String(500), nullable=False, default="")
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    created_by = db.relationship("User")


class WorkflowRun(db.Model):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        # A schedule fires once per due time and an event starts a workflow once, even when two
        # schedulers or two ingest requests race; NULLs never collide.
        db.UniqueConstraint("workflow_id", "scheduled_for", name="uq_workflow_runs_scheduled_for"),
        db.UniqueConstraint("workflow_id", "trigger_event_id", name="uq_workflow_runs_trigger_event"),
        # Run lists page by id, newest first, within an organization and optionally one workflow.
        db.Index("ix_workflow_runs_org_id", "org_id", "id"),
        db.Index("ix_workflow_runs_workflow_id", "workflow_id", "id"),
        db.Index("ix_workflow_runs_org_status_id", "org_id", "status", "id"),
        db.Index("ix_workflow_runs_org_created", "org_id", "created_at"),
        # The scheduler's sweeps: runs to wake up, runs whose lease ran out.
        db.Index("ix_workflow_runs_status_wake", "status", "wake_at"),
        db.Index("ix_workflow_runs_status_lease", "status", "lease_until"),
        db.Index("ix_workflow_runs_status_queued", "status", "queued_at"),
    )

    id = db.Column(BigId, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    workflow_id = db.Column(db.Integer, db.ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False)
    version_id = db.Column(db.Integer, db.ForeignKey("workflow_versions.id", ondelete="CASCADE"), nullable=False)
    version_number = db.Column(db.Integer, nullable=False)
    status = db.Column(db.String(16), nullable=False, default="queued")
    trigger_type = db.Column(db.String(16), nullable=False)
    input = db.Column(JSONDocument, nullable=False, default=dict)
    error = db.Column(db.Text)
    scheduled_for = db.Column(UTCDateTime)
    trigger_event_id = db.Column(db.BigInteger().with_variant(db.Integer(), "sqlite"))
    # Re-runs: the run this one repeats, and the step it starts from (None: from the start).
    rerun_of_id = db.Column(BigId, db.ForeignKey("workflow_runs.id", ondelete="SET NULL"))
    rerun_from_step = db.Column(db.String(64))
    cancel_requested = db.Column(db.Boolean, nullable=False, default=False)
    # A waiting run (delay or retry backoff) is queued again by the scheduler at wake_at.
    wake_at = db.Column(UTCDateTime)
    # A running run whose lease has passed lost its worker; the recovery sweep takes it over.
    lease_until = db.Column(UTCDateTime)
    # When the run was last put on the queue; a queued run whose job was lost is enqueued again.
    queued_at = db.Column(UTCDateTime)
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    started_at = db.Column(UTCDateTime)
    finished_at = db.Column(UTCDateTime)

    workflow = db.relationship("Workflow")
    version = db.relationship("WorkflowVersion")
    attempts = db.relationship(
        "StepAttempt", order_by="StepAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def active(self):
        return self.status in ACTIVE_RUN_STATUSES

    @property
    def duration_seconds(self):
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class StepAttempt(db.Model):
    """One attempt of one step in a run; a retried step has one row per attempt."""

    __tablename__ = "workflow_step_attempts"
    __table_args__ = (db.Index("ix_workflow_step_attempts_run", "run_id", "id"),)

    id = db.Column(BigId, primary_key=True)
    run_id = db.Column(BigId, db.ForeignKey("workflow_runs.id", ondelete="CASCADE"), nullable=False)
    step_id = db.Column(db.String(64), nullable=False)
    step_type = db.Column(db.String(32), nullable=False)
    number = db.Column(db.Integer, nullable=False, default=1)
    status = db.Column(db.String(16), nullable=False, default="running")
    # A failed attempt that another attempt follows (retries left, or interrupted before sending).
    will_retry = db.Column(db.Boolean, nullable=False, default=False)
    input = db.Column(JSONDocument)
    output = db.Column(JSONDocument)
    log = db.Column(db.Text, nullable=False, default="")
    error = db.Column(db.Text)
    started_at = db.Column(UTCDateTime)
    finished_at = db.Column(UTCDateTime)
