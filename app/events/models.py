"""Usage events and the git imports that produce them."""

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow

EVENT_TYPES = (
    "file_opened",
    "file_created",
    "file_modified",
    "file_deleted",
    "file_moved",
    "command_executed",
    "tool_used",
)
SOURCES = ("agent", "git", "api", "web")

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = db.BigInteger().with_variant(db.Integer(), "sqlite")


class Event(db.Model):
    __tablename__ = "events"
    __table_args__ = (
        # A resend with the same client id stores nothing new. NULL ids never collide.
        db.UniqueConstraint("org_id", "event_id"),
        db.Index("ix_events_org_occurred", "org_id", "occurred_at", "id"),
    )

    id = db.Column(BigId, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    type = db.Column(db.String(32), nullable=False)
    path = db.Column(db.String(1024), nullable=False)
    tool = db.Column(db.String(100), nullable=False, default="")
    occurred_at = db.Column(UTCDateTime, nullable=False)
    session = db.Column(db.String(200))
    event_id = db.Column(db.String(200))
    # "metadata" is reserved on declarative models, so the attribute is `meta`.
    meta = db.Column("metadata", JSONDocument, nullable=False, default=dict)
    source = db.Column(db.String(16), nullable=False)
    received_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class GitImport(db.Model):
    """One import of a git history, run as a background job that reports progress."""

    __tablename__ = "git_imports"

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    filename = db.Column(db.String(255), nullable=False)
    # The uploaded log, kept in the database so that a worker on another host can read it;
    # cleared once the import has finished.
    content = db.deferred(db.Column(db.LargeBinary))
    # queued, running, succeeded or failed.
    status = db.Column(db.String(16), nullable=False, default="queued")
    total_commits = db.Column(db.Integer, nullable=False, default=0)
    processed_commits = db.Column(db.Integer, nullable=False, default=0)
    events_created = db.Column(db.Integer, nullable=False, default=0)
    error = db.Column(db.Text)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    started_at = db.Column(UTCDateTime)
    finished_at = db.Column(UTCDateTime)
    # Refreshed while the job runs, so a job whose worker died can be told from a slow one.
    heartbeat_at = db.Column(UTCDateTime)

    @property
    def finished(self):
        return self.status in ("succeeded", "failed")

    @property
    def percent(self):
        if self.status == "succeeded":
            return 100
        if not self.total_commits:
            return 0
        return min(100, int(self.processed_commits * 100 / self.total_commits))
