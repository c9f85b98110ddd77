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
