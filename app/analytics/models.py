"""Rollups of usage events: what the analytics pages read instead of the raw events.

Counts are kept per UTC hour, so that a day or a week in any time zone with a whole-hour offset is
a sum of whole buckets. Smaller copies (per UTC day, or per hour without user, tool and path) hold
the same counts in fewer rows: a range reads its whole UTC days from a daily table and the hours
at either end from the hourly one. `insert_events` queues each stored batch (`rollups.queue_batch`), a job adds
it to them soon after (`rollups.apply_pending`), and `rollups.rebuild_rollups`
(`flask floyo rebuild-rollups`) recomputes them from the raw events.
"""

from app.db_types import JSONDocument, UTCDateTime
from app.extensions import db
from app.timeutil import utcnow

# Events without a user (the user was deleted, or a key without one) are counted under user 0.
NO_USER = 0


class HourlyCount(db.Model):
    """Events per UTC hour by user, type, tool and file extension."""

    __tablename__ = "analytics_hourly"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    hour_start = db.Column(UTCDateTime, primary_key=True)
    user_id = db.Column(db.Integer, primary_key=True)
    type = db.Column(db.String(32), primary_key=True)
    tool = db.Column(db.String(100), primary_key=True)
    # Lower-case extension without the dot ("pdf"), or "" for a path without one.
    ext = db.Column(db.String(32), primary_key=True)
    count = db.Column(db.BigInteger, nullable=False, default=0)


class PathHourlyCount(db.Model):
    """Events per UTC hour by path, for top files and the path prefix filter."""

    __tablename__ = "analytics_path_hourly"
    # A path prefix filter reads this index as a range of paths (text_pattern_ops lets PostgreSQL
    # turn `LIKE 'src/%'` into one) instead of scanning every path of the range's hours.
    __table_args__ = (
        db.Index(
            "ix_analytics_path_hourly_org_path_hour",
            "org_id",
            "path",
            "hour_start",
            postgresql_ops={"path": "text_pattern_ops"},
        ),
    )

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    hour_start = db.Column(UTCDateTime, primary_key=True)
    # SHA-256 of the path: paths can be longer than an index entry may be.
    path_key = db.Column(db.String(64), primary_key=True)
    user_id = db.Column(db.Integer, primary_key=True)
    type = db.Column(db.String(32), primary_key=True)
    tool = db.Column(db.String(100), primary_key=True)
    ext = db.Column(db.String(32), nullable=False, default="")
    path = db.Column(db.String(1024), nullable=False)
    count = db.Column(db.BigInteger, nullable=False, default=0)


class DailyCount(db.Model):
    """Events per UTC day by user, type, tool and file extension: `HourlyCount` summed by day."""

    __tablename__ = "analytics_daily"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    # Midnight UTC at the start of the day.
    day_start = db.Column(UTCDateTime, primary_key=True)
    user_id = db.Column(db.Integer, primary_key=True)
    type = db.Column(db.String(32), primary_key=True)
    tool = db.Column(db.String(100), primary_key=True)
    ext = db.Column(db.String(32), primary_key=True)
    count = db.Column(db.BigInteger, nullable=False, default=0)


class TypeHourlyCount(db.Model):
    """Events per UTC hour by type only, for the activity chart and heatmap without other filters."""

    __tablename__ = "analytics_type_hourly"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    hour_start = db.Column(UTCDateTime, primary_key=True)
    type = db.Column(db.String(32), primary_key=True)
    count = db.Column(db.BigInteger, nullable=False, default=0)


class PathDailyCount(db.Model):
    """Events per UTC day by path only, for top files without filters."""

    __tablename__ = "analytics_path_daily"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    day_start = db.Column(UTCDateTime, primary_key=True)
    path_key = db.Column(db.String(64), primary_key=True)
    path = db.Column(db.String(1024), nullable=False)
    count = db.Column(db.BigInteger, nullable=False, default=0)


class ActivitySession(db.Model):
    """A unit of work: the events of one `session` value, or a user's events with no gap over the limit."""

    __tablename__ = "analytics_sessions"
    __table_args__ = (
        db.Index("ix_analytics_sessions_org_started", "org_id", "started_at"),
        db.Index("ix_analytics_sessions_org_user_session", "org_id", "user_id", "session", "started_at"),
    )

    id = db.Column(db.BigInteger().with_variant(db.Integer(), "sqlite"), primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False)
    user_id = db.Column(db.Integer, nullable=False, default=NO_USER)
    # The events' `session` value, or "" for sessions split by the gap between a user's events.
    session = db.Column(db.String(200), nullable=False, default="")
    started_at = db.Column(UTCDateTime, nullable=False)
    ended_at = db.Column(UTCDateTime, nullable=False)
    event_count = db.Column(db.Integer, nullable=False, default=0)


class AnalyticsState(db.Model):
    """Per organization: how many events the rollups hold, and when they were last rebuilt.

    Recording a batch updates this row before it merges sessions. The row lock makes the session
    merges of one organization's batches run one transaction at a time, each after the last has
    committed. The counts are upserts that add atomically and need no lock.
    """

    __tablename__ = "analytics_states"

    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    events_recorded = db.Column(db.BigInteger, nullable=False, default=0)
    rebuilt_at = db.Column(UTCDateTime)


class PendingRollup(db.Model):
    """Ids of one stored batch of events, waiting to be added to the rollups by a job.

    Ingest writes one such row in its own transaction instead of updating the shared rollup rows,
    which would make concurrent batches of one organization wait on each other's row locks. The
    job adds the batch and deletes the row in one transaction, so each batch is counted once.
    """

    __tablename__ = "analytics_pending_rollups"

    id = db.Column(db.BigInteger().with_variant(db.Integer(), "sqlite"), primary_key=True)
    org_id = db.Column(db.Integer, db.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True)
    event_ids = db.Column(JSONDocument, nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
