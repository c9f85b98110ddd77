"""Connections to outside services, with their secrets encrypted at rest."""

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow


class Integration(db.Model):
    __tablename__ = "integrations"
    __table_args__ = (db.UniqueConstraint("org_id", "name"),)

    id = db.Column(db.Integer, primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    # Steps refer to an integration by this name.
    name = db.Column(db.String(100), nullable=False)
    kind = db.Column(db.String(32), nullable=False)
    # Settings that are not secret, shown on the page and in the API.
    settings = db.Column(JSONDocument, nullable=False, default=dict)
    # A Fernet token of the JSON object of secret settings; see app.integrations.crypto.
    secrets_token = db.Column(db.Text, nullable=False, default="")
    # Names of the secret settings that have a value, so pages can say "set" without decrypting.
    secret_names = db.Column(JSONDocument, nullable=False, default=list)
    last_tested_at = db.Column(UTCDateTime)
    last_test_ok = db.Column(db.Boolean)
    last_test_message = db.Column(db.String(500))
    created_by_id = db.Column(db.Integer, db.ForeignKey("users.id", ondelete="SET NULL"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
