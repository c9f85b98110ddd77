"""Time helpers: UTC inside, ISO 8601 with an offset outside."""

from datetime import UTC, datetime


def utcnow():
    return datetime.now(UTC)


def isoformat(value):
    """Format an aware datetime as ISO 8601 in UTC with a `Z`, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
