"""Maintenance mode: a banner on every page, and writes rejected with 503 for everyone but site admins.

The switch is one Redis key, so every web process sees it (the embedded mode's in-process Redis
serves the single process there). Each request reads it with one GET; workers never read it and
keep running what was queued.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from flask import g, request
from flask_login import current_user

from app.errors import ValidationError
from app.queue import get_queues
from app.timeutil import isoformat, utcnow

logger = logging.getLogger(__name__)

KEY = "floyo:maintenance"
MAX_MESSAGE_LENGTH = 500
DEFAULT_MESSAGE = "Floyo is down for maintenance. Reading works; changes are paused until it is over."
# Retry-After when no end time was announced, or the announced end has passed.
DEFAULT_RETRY_AFTER_SECONDS = 300
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Paths that accept writes during maintenance: signing in and out (admins must be able to sign in
# to end it), and webhook deliveries, which providers would otherwise retry or give up on.
EXEMPT_PREFIXES = ("/signin", "/signout", "/api/v1/webhooks/")
# A Redis outage is logged at most this often per process, not once per request.
_ERROR_LOG_INTERVAL_SECONDS = 60
_last_error_logged = 0.0


@dataclass(frozen=True)
class MaintenanceState:
    message: str
    started_at: datetime
    ends_at: datetime | None
    started_by: str

    def retry_after(self, now=None):
        """Seconds a client should wait before retrying a write: until the announced end, at least one."""
        if self.ends_at is None:
            return DEFAULT_RETRY_AFTER_SECONDS
        remaining = int((self.ends_at - (now or utcnow())).total_seconds())
        return remaining if remaining > 0 else DEFAULT_RETRY_AFTER_SECONDS

    def to_json(self):
        return {
            "enabled": True,
            "message": self.message,
            "started_at": isoformat(self.started_at),
            "ends_at": isoformat(self.ends_at),
            "started_by": self.started_by,
        }


def get_state():
    """Return the MaintenanceState when maintenance mode is on, else None (also when Redis is unreachable)."""
    try:
        raw = get_queues().connection.get(KEY)
    except redis.RedisError as error:
        _log_redis_error(error)
        return None
    if raw is None:
        return None
    data = json.loads(raw)
    return MaintenanceState(
        message=data["message"],
        started_at=datetime.fromisoformat(data["started_at"]),
        ends_at=datetime.fromisoformat(data["ends_at"]) if data.get("ends_at") else None,
        started_by=data.get("started_by", ""),
    )


def parse_end_time(text):
    """Parse an ISO 8601 end time; a value without an offset is taken as UTC. Empty means no end time."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"The end time {text!r} is not an ISO 8601 time; use a form such as 2025-03-01T18:00:00Z.",
            {"ends_at": "invalid"},
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def start(actor, message="", ends_at=None, ip_address=""):
    """Turn maintenance mode on (or change its message and end time) and record it; the caller commits."""
    from app.admin.service import record

    message = (message or "").strip() or DEFAULT_MESSAGE
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ValidationError(
            f"Use at most {MAX_MESSAGE_LENGTH} characters for the maintenance message.", {"message": "too long"}
        )
    now = utcnow()
    if ends_at is not None and ends_at <= now:
        raise ValidationError(
            "The end time has already passed; give a time in the future, or none.", {"ends_at": "in the past"}
        )
    state = MaintenanceState(message=message, started_at=now, ends_at=ends_at, started_by=actor.email)
    payload = {"message": message, "started_at": now.isoformat(), "started_by": actor.email}
    payload["ends_at"] = ends_at.isoformat() if ends_at else None
    get_queues().connection.set(KEY, json.dumps(payload))
    record(
        "maintenance.started",
        actor=actor,
        target_type="site",
        details={"message": message, "ends_at": isoformat(ends_at)},
        ip_address=ip_address,
    )
    logger.info("maintenance mode on user_id=%s ends_at=%s", actor.id, isoformat(ends_at))
    return state


def stop(actor, ip_address=""):
    """Turn maintenance mode off and record it; return False when it was already off."""
    from app.admin.service import record

    removed = get_queues().connection.delete(KEY)
    if not removed:
        return False
    record("maintenance.ended", actor=actor, target_type="site", ip_address=ip_address)
    logger.info("maintenance mode off user_id=%s", actor.id)
    return True


def init_app(app):
    """Read the switch before every request and reject writes while it is on; expose it to templates."""

    @app.before_request
    def reject_writes_during_maintenance():
        if request.endpoint == "static":
            return None
        g.maintenance = state = get_state()
        if state is None or request.method not in WRITE_METHODS:
            return None
        if request.path.startswith(EXEMPT_PREFIXES) or _is_site_admin():
            return None
        from app import error_response

        return error_response(
            503,
            "maintenance",
            f"{state.message} Try again later.",
            details={"ends_at": isoformat(state.ends_at)},
            headers={"Retry-After": str(state.retry_after())},
        )

    @app.context_processor
    def maintenance_context():
        return {"maintenance": g.get("maintenance")}


def _is_site_admin():
    """Tell whether the request comes from a site admin, by API key or by session.

    Only called for writes while maintenance is on, so the database lookup costs nothing otherwise.
    """
    from app.api.auth import _bearer_key
    from app.auth.service import authenticate_api_key

    raw_key = _bearer_key()
    if raw_key is not None:
        api_key = authenticate_api_key(raw_key)
        return api_key is not None and api_key.user.is_admin
    return current_user.is_authenticated and current_user.is_admin


def _log_redis_error(error):
    global _last_error_logged
    now = time.monotonic()
    if now - _last_error_logged >= _ERROR_LOG_INTERVAL_SECONDS:
        _last_error_logged = now
        logger.warning("maintenance state unreadable, treating it as off: %s", error)
