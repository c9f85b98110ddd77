"""Patterns found in events, the suggestions made from them and the analysis state."""

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow

PATTERN_KINDS = ("frequent_file", "frequent_type", "frequent_tool", "co_used", "sequence", "recurrence", "produced")
SUGGESTION_STATUSES = ("open", "accepted", "dismissed")


class Pattern(db.Model):
    """One pattern, stored once under a stable key and updated in place by each analysis."""

    __tablename__ = "patterns"
    __table_args__ = (
        db.UniqueConstraint("org_id", "kind", "key"),
        db.Index("ix_patterns_org_kind_score", "org_id", "kind", "score"),
    )

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    kind = db.Column(db.String(32), nullable=False)
    # A hash of what identifies the pattern (the two paths of a pair, the steps of a sequence).
    key = db.Column(db.String(64), nullable=False)
    # The headline number for ranking within a kind (a count, a degree, a support).
    score = db.Column(db.Float, nullable=False, default=0)
    data = db.Column(JSONDocument, nullable=False, default=dict)
    # False once an analysis no longer finds it; the row is kept so its suggestion keeps its history.
    current = db.Column(db.Boolean, nullable=False, default=True)
    first_found_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class Suggestion(db.Model):
    __tablename__ = "suggestions"

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    pattern_id = db.Column(db.Integer, db.ForeignKey("patterns.id", ondelete="CASCADE"), nullable=False, unique=True)
    kind = db.Column(db.String(32), nullable=False)
    title = db.Column(db.String(300), nullable=False)
    evidence = db.Column(JSONDocument, nullable=False, default=dict)
    minutes_saved_per_month = db.Column(db.Float, nullable=False, default=0)
    sample_code = db.Column(db.Text, nullable=False, default="")
    workflow_draft = db.Column(JSONDocument, nullable=False, default=dict)
    # Ranking score before feedback; the feedback weight by kind is applied when listing.
    score = db.Column(db.Float, nullable=False, default=0)
    status = db.Column(db.String(16), nullable=False, default="open")
    decided_at = db.Column(UTCDateTime)
    decided_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    pattern = db.relationship("Pattern")


class AnalysisState(db.Model):
    """Per organization: whether an analysis is queued, and how the last one went.

    `queued` coalesces requests: ingest sets it with a conditional update and enqueues a job only
    when it was unset, so a stream of batches starts one job, not one per batch.
    """

    __tablename__ = "analysis_states"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    queued = db.Column(db.Boolean, nullable=False, default=False)
    status = db.Column(db.String(16), nullable=False, default="never")
    requested_at = db.Column(UTCDateTime)
    started_at = db.Column(UTCDateTime)
    finished_at = db.Column(UTCDateTime)
    # "host:pid" of the process running the analysis, so that a run whose process died can be taken
    # over at once when the process was on this host, instead of after the job timeout.
    run_by = db.Column(db.String(200))
    events_analyzed = db.Column(db.Integer, nullable=False, default=0)
    sessions_analyzed = db.Column(db.Integer, nullable=False, default=0)
    error = db.Column(db.Text)
