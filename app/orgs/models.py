"""Organizations and who belongs to them."""

from app.db_types import UTCDateTime
from app.extensions import db
from app.timeutil import utcnow

ROLES = ("owner", "admin", "member", "viewer")


class Organization(db.Model):
    __tablename__ = "organizations"

    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(120), nullable=False)
    # The organization made for a user at sign-up; it cannot be left or shared away.
    personal = db.Column(db.Boolean, nullable=False, default=False)
    # Members without two-factor sign-in are sent to enrolment and their API calls get 403.
    require_two_factor = db.Column(db.Boolean, nullable=False, default=False, server_default=db.false())
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    memberships = db.relationship("Membership", back_populates="organization", cascade="all, delete-orphan")
    # Read-only: the billing service owns the row. Loaded with the memberships on every page.
    billing_account = db.relationship("BillingAccount", uselist=False, viewonly=True)


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (db.UniqueConstraint("org_id", "user_id"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    role = db.Column(db.String(16), nullable=False, default="member")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)

    organization = db.relationship("Organization", back_populates="memberships")
    user = db.relationship("User", back_populates="memberships")


class Invitation(db.Model):
    """An invitation to join an organization, sent by email as a single-use link.

    The link carries a random token; only its SHA-256 hash is stored. An invitation is pending
    until it is accepted, revoked or past `expires_at`.
    """

    __tablename__ = "invitations"
    __table_args__ = (db.Index("ix_invitations_org_id", "org_id", "id"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    email = db.Column(db.String(254), nullable=False)
    role = db.Column(db.String(16), nullable=False)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    invited_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False)
    accepted_at = db.Column(UTCDateTime)
    accepted_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at = db.Column(UTCDateTime)

    organization = db.relationship("Organization")
    invited_by = db.relationship("User", foreign_keys=[invited_by_id])

    def status(self, now):
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "pending"
