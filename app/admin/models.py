"""The audit log: who did what to which object, when and from where."""

from sqlalchemy import event

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow


class AuditEntry(db.Model):
    """One recorded action. Rows are only ever inserted: the app raises on an update or a delete."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        db.Index("ix_audit_entries_created", "created_at", "id"),
        db.Index("ix_audit_entries_target", "target_type", "target_id", "id"),
        db.Index("ix_audit_entries_actor", "actor_id", "id"),
        db.Index("ix_audit_entries_org", "org_id", "id"),
    )

    id = db.Column(db.Integer, primary_key=True)
    # The organization the action concerns, if any; kept (as NULL) when it is deleted.
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="SET NULL"))
    # Who acted: NULL for the system (a job, the CLI) or a deleted user, whose email stays in actor_email.
    actor_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    actor_email = db.Column(db.String(254), nullable=False, default="")
    # A dotted name such as "user.deactivated" or "maintenance.started".
    action = db.Column(db.String(64), nullable=False)
    target_type = db.Column(db.String(32), nullable=False, default="")
    target_id = db.Column(db.String(64), nullable=False, default="")
    details = db.Column(JSONDocument, nullable=False, default=dict)
    ip_address = db.Column(db.String(64), nullable=False, default="")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


@event.listens_for(AuditEntry, "before_update")
def _reject_update(_mapper, _connection, entry):
    raise RuntimeError(f"audit entry {entry.id} is append-only and cannot be changed")


@event.listens_for(AuditEntry, "before_delete")
def _reject_delete(_mapper, _connection, entry):
    raise RuntimeError(f"audit entry {entry.id} is append-only and cannot be deleted")
