"""What an analytics page or API call asks for: a date range in a time zone, and filters."""

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app
from sqlalchemy import select

from app.errors import ValidationError
from app.events.models import EVENT_TYPES
from app.extensions import db
from app.orgs.models import Membership
from app.timeutil import utcnow

RANGE_PRESETS = ("7", "30", "90")
DEFAULT_RANGE = "30"
GRANULARITIES = ("day", "week")


@dataclasses.dataclass(frozen=True)
class AnalyticsQuery:
    """A range of whole days, both ends included, in `tz`; and the filters. Empty filters are None."""

    start: date
    end: date
    tz: ZoneInfo
    range: str = DEFAULT_RANGE
    granularity: str = "day"
    tool: str | None = None
    type: str | None = None
    path_prefix: str | None = None
    member_id: int | None = None

    @property
    def start_utc(self):
        return datetime.combine(self.start, time.min, self.tz).astimezone(UTC)

    @property
    def end_utc(self):
        """The first instant after the range: midnight after `end`, in `tz`."""
        return datetime.combine(self.end + timedelta(days=1), time.min, self.tz).astimezone(UTC)

    @property
    def days(self):
        return (self.end - self.start).days + 1

    @property
    def has_event_filters(self):
        return any((self.tool, self.type, self.path_prefix, self.member_id))

    def previous(self):
        """The period of the same length that ends the day before this one starts."""
        return dataclasses.replace(
            self, start=self.start - timedelta(days=self.days), end=self.start - timedelta(days=1)
        )

    def params(self, **overrides):
        """The query string that asks for this query again (for links and the URL bar)."""
        values = {
            "range": self.range,
            "from": self.start.isoformat() if self.range == "custom" else None,
            "to": self.end.isoformat() if self.range == "custom" else None,
            "tz": self.tz.key if self.tz.key != "UTC" else None,
            "granularity": self.granularity if self.granularity != "day" else None,
            "tool": self.tool,
            "type": self.type,
            "path": self.path_prefix,
            "member": self.member_id,
        }
        values.update(overrides)
        return {name: value for name, value in values.items() if value not in (None, "")}

    def describe(self):
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "tz": self.tz.key,
            "range": self.range,
            "granularity": self.granularity,
            "filters": {"tool": self.tool, "type": self.type, "path": self.path_prefix, "member": self.member_id},
        }


def _text(args, name, max_length):
    value = (args.get(name) or "").strip()
    if len(value) > max_length:
        raise ValidationError(f"{name} is longer than {max_length} characters; shorten it.", {name: "too long"})
    return value or None


def _date(args, name):
    raw = (args.get(name) or "").strip()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"{name} must be a date as YYYY-MM-DD, got {raw!r}.", {name: "expected a date as YYYY-MM-DD"}
        ) from None


def parse_tz(raw):
    raw = (raw or "").strip() or "UTC"
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"tz must be an IANA time zone name such as Europe/Berlin, got {raw!r}.", {"tz": "unknown time zone"}
        ) from None


def parse_query(args, org_id, now=None):
    """Build an AnalyticsQuery from request arguments, or raise ValidationError naming the bad one.

    `range` is 7, 30 or 90 (the last days up to today in `tz`) or "custom" with `from` and `to`;
    `from` and `to` alone also mean a custom range.
    """
    tz = parse_tz(args.get("tz"))
    today = (now or utcnow()).astimezone(tz).date()
    range_name = (args.get("range") or "").strip()
    if not range_name:
        range_name = "custom" if args.get("from") or args.get("to") else DEFAULT_RANGE
    if range_name in RANGE_PRESETS:
        start, end = today - timedelta(days=int(range_name) - 1), today
    elif range_name == "custom":
        start, end = _date(args, "from"), _date(args, "to")
    else:
        raise ValidationError(
            f"range must be one of 7, 30, 90 or custom, got {range_name!r}.", {"range": "unknown range"}
        )
    if end < start:
        raise ValidationError(f"to ({end}) is before from ({start}); swap them.", {"to": "must be on or after from"})
    max_days = current_app.config["ANALYTICS_MAX_RANGE_DAYS"]
    if (end - start).days + 1 > max_days:
        raise ValidationError(
            f"The range from {start} to {end} is longer than {max_days} days; choose a shorter one.",
            {"from": f"at most {max_days} days before to"},
        )

    granularity = (args.get("granularity") or "day").strip()
    if granularity not in GRANULARITIES:
        raise ValidationError(
            f"granularity must be day or week, got {granularity!r}.", {"granularity": "expected day or week"}
        )
    event_type = _text(args, "type", 32)
    if event_type is not None and event_type not in EVENT_TYPES:
        raise ValidationError(
            f"type must be one of {', '.join(EVENT_TYPES)}, got {event_type!r}.", {"type": "unknown event type"}
        )
    return AnalyticsQuery(
        start=start,
        end=end,
        tz=tz,
        range=range_name,
        granularity=granularity,
        tool=_text(args, "tool", 100),
        type=event_type,
        path_prefix=_text(args, "path", 1024),
        member_id=_member(args, org_id),
    )


def _member(args, org_id):
    raw = (args.get("member") or "").strip()
    if not raw:
        return None
    member_id = int(raw) if raw.isdigit() else None
    found = member_id is not None and db.session.scalar(
        select(Membership.id).where(Membership.org_id == org_id, Membership.user_id == member_id)
    )
    if not found:
        raise ValidationError(
            f"member {raw!r} is not a member of this organization; use a user id from the member list.",
            {"member": "not a member of this organization"},
        )
    return member_id
