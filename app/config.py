"""Settings, read from the environment once when the app is built.

Every setting here is listed with its default in `.env.example`.
"""

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _int(name, default):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise RuntimeError(f"Setting {name} must be a whole number, got {raw!r}") from error


def _float(name, default):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise RuntimeError(f"Setting {name} must be a number, got {raw!r}") from error


def _bool(name, default):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _database_url(instance_path):
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        return f"sqlite:///{instance_path / 'floyo.db'}"
    # Heroku-style URLs name the scheme "postgres"; SQLAlchemy wants the driver spelled out.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://") :]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _secret_key(instance_path):
    """Return SECRET_KEY, or a random key kept in the instance folder for the embedded mode."""
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    key_file = instance_path / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def load_config(instance_path):
    """Build the settings mapping from the environment."""
    instance_path = Path(instance_path)
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": _database_url(instance_path),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        # Empty means the embedded mode: an in-process queue on a worker thread.
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO").upper(),
        # "text" (key=value lines) or "json" (one JSON object a line).
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text").lower(),
        # Requests larger than this get 413 before any view reads them.
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 16 * 1024 * 1024),
        "EVENTS_BATCH_MAX_EVENTS": _int("EVENTS_BATCH_MAX_EVENTS", 1000),
        "EVENTS_BATCH_MAX_BYTES": _int("EVENTS_BATCH_MAX_BYTES", 1024 * 1024),
        "EVENT_METADATA_MAX_BYTES": _int("EVENT_METADATA_MAX_BYTES", 4096),
        "EVENT_METADATA_MAX_DEPTH": _int("EVENT_METADATA_MAX_DEPTH", 4),
        "GIT_IMPORT_MAX_BYTES": _int("GIT_IMPORT_MAX_BYTES", 16 * 1024 * 1024),
        "SIGNIN_RATE_LIMIT": _int("SIGNIN_RATE_LIMIT", 10),
        "SIGNIN_RATE_WINDOW_SECONDS": _int("SIGNIN_RATE_WINDOW_SECONDS", 300),
        # Accounts created per client address in each window.
        "SIGNUP_RATE_LIMIT": _int("SIGNUP_RATE_LIMIT", 5),
        "SIGNUP_RATE_WINDOW_SECONDS": _int("SIGNUP_RATE_WINDOW_SECONDS", 3600),
        # Hours a verification link or an email-change confirmation link stays valid.
        "EMAIL_VERIFICATION_TTL_HOURS": _int("EMAIL_VERIFICATION_TTL_HOURS", 48),
        # Verification emails a signed-in user may have resent in each window.
        "VERIFICATION_RESEND_RATE_LIMIT": _int("VERIFICATION_RESEND_RATE_LIMIT", 3),
        "VERIFICATION_RESEND_RATE_WINDOW_SECONDS": _int("VERIFICATION_RESEND_RATE_WINDOW_SECONDS", 3600),
        # Minutes a password reset link stays valid.
        "PASSWORD_RESET_TTL_MINUTES": _int("PASSWORD_RESET_TTL_MINUTES", 60),
        # Reset requests allowed per email, and per client address, in each window.
        "PASSWORD_RESET_RATE_LIMIT": _int("PASSWORD_RESET_RATE_LIMIT", 3),
        "PASSWORD_RESET_ADDRESS_RATE_LIMIT": _int("PASSWORD_RESET_ADDRESS_RATE_LIMIT", 20),
        "PASSWORD_RESET_RATE_WINDOW_SECONDS": _int("PASSWORD_RESET_RATE_WINDOW_SECONDS", 3600),
        # API requests allowed per key (or per client address without one) in each window.
        "API_RATE_LIMIT": _int("API_RATE_LIMIT", 600),
        "API_RATE_WINDOW_SECONDS": _int("API_RATE_WINDOW_SECONDS", 60),
        # Reverse proxies in front of the app that set X-Forwarded-For, -Proto and -Host; 0 ignores
        # those headers, so a client cannot choose its own address.
        "TRUSTED_PROXY_COUNT": _int("TRUSTED_PROXY_COUNT", 0),
        # Two-factor code attempts allowed per user in each window (five times as many per address).
        "TWO_FACTOR_RATE_LIMIT": _int("TWO_FACTOR_RATE_LIMIT", 5),
        "TWO_FACTOR_RATE_WINDOW_SECONDS": _int("TWO_FACTOR_RATE_WINDOW_SECONDS", 300),
        # Days an emailed invitation link to an organization stays valid.
        "INVITATION_EXPIRY_DAYS": _int("INVITATION_EXPIRY_DAYS", 7),
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", False),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        # CSRF tokens last as long as the session: a form left open for hours still submits.
        "WTF_CSRF_TIME_LIMIT": None,
        "WTF_CSRF_HEADERS": ["X-CSRFToken"],
        # The analysis. Sessions without a `session` value split where events are further apart.
        "ANALYSIS_SESSION_GAP_MINUTES": _int("ANALYSIS_SESSION_GAP_MINUTES", 30),
        # Change-coupling thresholds, with code-maat's defaults.
        "COUPLING_MAX_SESSION_FILES": _int("COUPLING_MAX_SESSION_FILES", 30),
        "COUPLING_MIN_REVS": _int("COUPLING_MIN_REVS", 5),
        "COUPLING_MIN_SHARED": _int("COUPLING_MIN_SHARED", 5),
        "COUPLING_MIN_DEGREE": _float("COUPLING_MIN_DEGREE", 30.0),
        "SEQUENCE_MAX_GAP_MINUTES": _int("SEQUENCE_MAX_GAP_MINUTES", 10),
        "SEQUENCE_MIN_SUPPORT": _int("SEQUENCE_MIN_SUPPORT", 3),
        "SEQUENCE_MAX_LENGTH": _int("SEQUENCE_MAX_LENGTH", 4),
        "RECURRENCE_MIN_WEEKS": _int("RECURRENCE_MIN_WEEKS", 3),
        "PRODUCED_MIN_SESSIONS": _int("PRODUCED_MIN_SESSIONS", 3),
        "FREQUENT_TOP_N": _int("FREQUENT_TOP_N", 50),
        # Co-used pairs, sequences, recurrences and produced files kept per kind, strongest first.
        "ANALYSIS_MAX_PATTERNS_PER_KIND": _int("ANALYSIS_MAX_PATTERNS_PER_KIND", 200),
        # Analytics: the longest date range one request may ask for, and the length of top lists.
        "ANALYTICS_MAX_RANGE_DAYS": _int("ANALYTICS_MAX_RANGE_DAYS", 366),
        "ANALYTICS_TOP_N": _int("ANALYTICS_TOP_N", 10),
        # How many recently viewed time zones, besides UTC, the rollup job caches the 7, 30 and
        # 90 day pages in after an ingest (three pages each); 0 caches UTC only.
        "ANALYTICS_WARM_ZONES": _int("ANALYTICS_WARM_ZONES", 2),
        # Files: "local" keeps them under FILE_STORAGE_PATH (default INSTANCE_PATH/files), "s3" in
        # the S3_BUCKET of an S3-compatible service.
        "FILE_STORAGE": os.environ.get("FILE_STORAGE", "local").lower(),
        "FILE_STORAGE_PATH": os.environ.get("FILE_STORAGE_PATH") or str(instance_path / "files"),
        # One upload request (one file from the page's uploader) may be at most this large.
        "FILE_MAX_UPLOAD_BYTES": _int("FILE_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
        "S3_BUCKET": os.environ.get("S3_BUCKET", ""),
        "S3_ENDPOINT_URL": os.environ.get("S3_ENDPOINT_URL", ""),
        "S3_REGION": os.environ.get("S3_REGION", "us-east-1"),
        "S3_ACCESS_KEY_ID": os.environ.get("S3_ACCESS_KEY_ID", ""),
        "S3_SECRET_ACCESS_KEY": os.environ.get("S3_SECRET_ACCESS_KEY", ""),
        "S3_PREFIX": os.environ.get("S3_PREFIX", ""),
        # Workflows: runs older than this many days are deleted by the scheduler.
        "WORKFLOW_RUN_RETENTION_DAYS": _int("WORKFLOW_RUN_RETENTION_DAYS", 30),
        # Seconds between scheduler rounds (schedules, delayed runs, recovery); also the wake-up precision.
        "SCHEDULER_INTERVAL_SECONDS": _float("SCHEDULER_INTERVAL_SECONDS", 2.0),
        # Seconds past a step's timeout after which a run whose worker stopped is resumed or failed.
        "RUN_RECOVERY_SECONDS": _int("RUN_RECOVERY_SECONDS", 60),
        # PostgreSQL: commit runs of only transform and condition steps without waiting for the
        # WAL flush. A database crash can lose the most recent of those commits, and those runs
        # are then run again.
        "WORKFLOW_ASYNC_COMMIT": _bool("WORKFLOW_ASYNC_COMMIT", True),
        # Host names, addresses or networks (comma-separated) that http_request, webhook and
        # integration calls may reach even though they are loopback or private.
        "OUTBOUND_ALLOW_HOSTS": os.environ.get("OUTBOUND_ALLOW_HOSTS", ""),
        "OUTBOUND_MAX_RESPONSE_BYTES": _int("OUTBOUND_MAX_RESPONSE_BYTES", 1024 * 1024),
        # Comma-separated keys for integration secrets: the first encrypts, all decrypt (rotation).
        # Empty derives one from SECRET_KEY. Make one with `flask floyo generate-secret-key`.
        "SECRET_ENCRYPTION_KEYS": os.environ.get("SECRET_ENCRYPTION_KEYS", ""),
        # Email of notify steps without an SMTP integration: "console" writes it to the step log.
        "MAIL_BACKEND": os.environ.get("MAIL_BACKEND", "console").lower(),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "floyo@localhost"),
        "SMTP_HOST": os.environ.get("SMTP_HOST", "localhost"),
        "SMTP_PORT": _int("SMTP_PORT", 587),
        "SMTP_USERNAME": os.environ.get("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": os.environ.get("SMTP_PASSWORD", ""),
        "SMTP_USE_TLS": _bool("SMTP_USE_TLS", True),
        # Billing through Stripe. Without STRIPE_SECRET_KEY the billing pages say that billing is off.
        "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY", ""),
        # The signing secret (whsec_...) of the endpoint /api/v1/webhooks/stripe.
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
        # Empty uses https://api.stripe.com; tests point it at a fake Stripe server on 127.0.0.1.
        "STRIPE_API_BASE": os.environ.get("STRIPE_API_BASE", ""),
        "BILLING_PLANS": _billing_plans(),
        # Incoming webhooks of other providers, as JSON: {"name": {"secret": "...", "scheme": "github"
        # or "hmac", "org_id": 1 (optional: the organization whose workflows a delivery starts)}}.
        "WEBHOOK_PROVIDERS": _json_setting("WEBHOOK_PROVIDERS", {}),
        # Signed timestamps of "hmac" providers older than this many seconds are rejected (replays).
        "WEBHOOK_TOLERANCE_SECONDS": _int("WEBHOOK_TOLERANCE_SECONDS", 300),
        # Outgoing webhooks: attempts per delivery (retried after 1, 2, 4, ... minutes, so the default
        # spans about two hours), and deliveries in a row that used up their attempts before the
        # endpoint is disabled.
        "OUTGOING_WEBHOOK_MAX_ATTEMPTS": _int("OUTGOING_WEBHOOK_MAX_ATTEMPTS", 8),
        "OUTGOING_WEBHOOK_DISABLE_AFTER": _int("OUTGOING_WEBHOOK_DISABLE_AFTER", 5),
        # /metrics answers a bearer METRICS_TOKEN, or requests from METRICS_ALLOWED_ADDRESSES
        # (comma-separated addresses or networks, such as 10.0.0.0/8). Empty token: addresses only.
        "METRICS_TOKEN": os.environ.get("METRICS_TOKEN", ""),
        "METRICS_ALLOWED_ADDRESSES": os.environ.get("METRICS_ALLOWED_ADDRESSES", "127.0.0.1,::1"),
        # Errors are reported to Sentry when set (needs the sentry-sdk package).
        "SENTRY_DSN": os.environ.get("SENTRY_DSN", ""),
    }


def _json_setting(name, default):
    import json

    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except ValueError as error:
        raise RuntimeError(f"Setting {name} must be JSON, got {raw[:80]!r}: {error}") from error


# Plan limits; None means unlimited. Storage is in bytes, the others are counts (per calendar
# month in UTC where the name says "per_month").
PLAN_LIMITS = {
    "free": {
        "events_per_month": 10_000,
        "workflows": 3,
        "runs_per_month": 100,
        "members": 1,
        "storage_bytes": 100 * 1024 * 1024,
        "api_calls_per_month": 10_000,
    },
    "pro": {
        "events_per_month": 1_000_000,
        "workflows": 50,
        "runs_per_month": 10_000,
        "members": 5,
        "storage_bytes": 10 * 1024**3,
        "api_calls_per_month": 1_000_000,
    },
    "team": {
        "events_per_month": 10_000_000,
        "workflows": 500,
        "runs_per_month": 100_000,
        "members": 50,
        "storage_bytes": 100 * 1024**3,
        "api_calls_per_month": 10_000_000,
    },
}


def _billing_plans():
    """Free, Pro and Team with their Stripe price ids (STRIPE_PRICE_<PLAN>_<INTERVAL>) and limits."""
    plans = {}
    for key, name in (("free", "Free"), ("pro", "Pro"), ("team", "Team")):
        prices = {}
        if key != "free":
            for interval in ("monthly", "yearly"):
                prices[interval] = os.environ.get(f"STRIPE_PRICE_{key.upper()}_{interval.upper()}", "")
        plans[key] = {"name": name, "prices": prices, "limits": dict(PLAN_LIMITS[key])}
    return plans
