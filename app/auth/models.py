"""Users, their server-side sessions, their API keys and the single-use tokens of account emails."""

from flask_login import UserMixin

from app.db_types import UTCDateTime
from app.extensions import db
from app.timeutil import utcnow


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), nullable=False, unique=True)
    password_hash = db.Column(db.String(256), nullable=False)
    name = db.Column(db.String(120), nullable=False, default="")
    is_admin = db.Column(db.Boolean, nullable=False, default=False)
    active = db.Column(db.Boolean, nullable=False, default=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    # Set when the user opens a link sent to `email` (a verification link or an email-change confirmation).
    email_verified_at = db.Column(UTCDateTime)
    # The organization chosen last, so that a new sign-in starts there instead of the personal one.
    # No foreign key: on SQLite adding one rebuilds the users table, and `current_org` ignores an
    # id the user is no longer a member of.
    last_org_id = db.Column(db.Integer)
    # Two-factor sign-in (TOTP). Secrets are Fernet tokens (app.integrations.crypto). The pending
    # secret is the one being enrolled, and it becomes `totp_secret_encrypted` after a correct code.
    totp_secret_encrypted = db.Column(db.Text)
    totp_pending_secret_encrypted = db.Column(db.Text)
    two_factor_enabled_at = db.Column(UTCDateTime)
    # The TOTP time step (Unix time // 30) of the last accepted code. Codes of that step or an
    # earlier one are rejected, so a code cannot be replayed within its window.
    totp_last_used_step = db.Column(db.BigInteger)

    memberships = db.relationship("Membership", back_populates="user", cascade="all, delete-orphan")

    # Set by the session loader: Flask-Login keeps `get_id()` in the cookie, and for Floyo that is
    # the server-side session's key, so revoking the session row signs the cookie out.
    session_key = None
    user_session = None

    @property
    def is_active(self):
        return self.active

    @property
    def two_factor_enabled(self):
        return self.two_factor_enabled_at is not None

    def get_id(self):
        return self.session_key


class UserSession(db.Model):
    """A signed-in browser. The cookie carries the key; the table keeps only its hash."""

    __tablename__ = "user_sessions"

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    key_hash = db.Column(db.String(64), nullable=False, unique=True)
    user_agent = db.Column(db.String(300), nullable=False, default="")
    ip_address = db.Column(db.String(64), nullable=False, default="")
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at = db.Column(UTCDateTime)
    # True between a correct password and a correct second-factor code: the session loader
    # returns no user for a pending session, so it signs nothing in.
    two_factor_pending = db.Column(db.Boolean, nullable=False, default=False, server_default=db.false())

    user = db.relationship("User")


class BackupCode(db.Model):
    """A single-use two-factor backup code, stored as a salted SHA-256 hash."""

    __tablename__ = "two_factor_backup_codes"

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    code_hash = db.Column(db.String(64), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    used_at = db.Column(UTCDateTime)


class ApiKey(db.Model):
    """A key for the JSON API. Shown once; stored as a SHA-256 hash beside a visible prefix."""

    __tablename__ = "api_keys"

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    name = db.Column(db.String(100), nullable=False)
    prefix = db.Column(db.String(32), nullable=False, unique=True)
    key_hash = db.Column(db.String(64), nullable=False, unique=True)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    # Comma-separated subset of read, write and admin, in that order (see `app.auth.scopes`).
    scopes = db.Column(db.String(32), nullable=False, default="read,write", server_default="read,write")
    last_used_at = db.Column(UTCDateTime)
    # None means the key never expires.
    expires_at = db.Column(UTCDateTime)
    revoked_at = db.Column(UTCDateTime)

    user = db.relationship("User")
    organization = db.relationship("Organization")

    @property
    def is_revoked(self):
        return self.revoked_at is not None

    @property
    def scope_list(self):
        return [scope for scope in (self.scopes or "").split(",") if scope]

    def has_scope(self, scope):
        return scope in self.scope_list

    def is_expired(self, now=None):
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


class AccountToken(db.Model):
    """A single-use token sent by email: verify an address, reset the password or confirm a new email.

    Only the SHA-256 hash of the token is stored. `email` is the address the link was sent to,
    which for an email change is the new address.
    """

    __tablename__ = "account_tokens"

    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    purpose = db.Column(db.String(32), nullable=False)
    token_hash = db.Column(db.String(64), nullable=False, unique=True)
    email = db.Column(db.String(254), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = db.Column(UTCDateTime, nullable=False)
    used_at = db.Column(UTCDateTime)

    user = db.relationship("User")
