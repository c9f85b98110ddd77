"""The analytics figures, read from the rollups: the same numbers for pages, API and export."""

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from importlib import import_module

from flask import current_app
from sqlalchemy import and_, extract, func, inspect, or_, select, tuple_, union_all

from app.analytics.cache import EMPTY_VERSION, cached, format_version, recent_zones, remember_zone, rollup_version
from app.analytics.charts import build_event_figures, build_live_figures
from app.analytics.models import (
    ActivitySession,
    AnalyticsState,
    DailyCount,
    HourlyCount,
    PathDailyCount,
    PathHourlyCount,
    TypeHourlyCount,
)
from app.analytics.query import RANGE_PRESETS, parse_query
from app.auth.models import User
from app.errors import ValidationError
from app.events.models import EVENT_TYPES
from app.extensions import db
from app.insights.models import Suggestion
from app.orgs.models import Membership

logger = logging.getLogger(__name__)

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WORKFLOW_SUCCESS = "succeeded"
WORKFLOW_FINISHED = ("succeeded", "failed", "cancelled")


def _like_prefix(prefix):
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _filtered(statement, source, org_id, query, spans):
    """Add the organization, the time spans and the query's filters to a statement on one rollup.

    `spans` are (start, end) pairs on the rollup's time column, each start included and end not.
    """
    bucket = source.day_start if hasattr(source, "day_start") else source.hour_start
    statement = statement.where(
        source.org_id == org_id, or_(*(and_(bucket >= start, bucket < end) for start, end in spans))
    )
    if query.tool:
        statement = statement.where(source.tool == query.tool)
    if query.type:
        statement = statement.where(source.type == query.type)
    if query.member_id:
        statement = statement.where(source.user_id == query.member_id)
    if query.path_prefix:
        statement = statement.where(source.path.like(_like_prefix(query.path_prefix), escape="\\"))
    return statement


def _split_days(query):
    """Split the range into its whole UTC days and the hours before and after them.

    Returns (days, hours): `days` is one (first midnight, last midnight) span or None, `hours` the
    spans left for an hourly rollup. A range in a zone with an offset has up to 23 hours at each end.
    """
    start, end = query.start_utc, query.end_utc
    first_midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_midnight < start:
        first_midnight += timedelta(days=1)
    last_midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_midnight >= last_midnight:
        return None, [(start, end)]
    hours = [(low, high) for low, high in ((start, first_midnight), (last_midnight, end)) if low < high]
    return (first_midnight, last_midnight), hours


def _range_counts(org_id, query, columns, daily, hourly):
    """Return a subquery of `columns` and `count` rows over the range, for the caller to group.

    Whole UTC days come from the `daily` rollup and the hours at either end from `hourly`, so a
    30-day range reads 30 daily buckets instead of 720 hourly ones. The sum is the same.
    """
    days, hours = _split_days(query)
    if daily is None or days is None:
        days, hours = None, [(query.start_utc, query.end_utc)]
    parts = []
    for source, spans in ((daily, [days] if days else []), (hourly, hours)):
        if spans:
            selected = select(*(getattr(source, name).label(name) for name in columns), source.count.label("count"))
            parts.append(_filtered(selected, source, org_id, query, spans))
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    return statement.subquery()


def _breakdown_sources(query):
    """The daily and hourly rollups that hold user, type, tool and extension for the query's filters."""
    if query.path_prefix:
        return None, PathHourlyCount
    return DailyCount, HourlyCount


def _hourly_by_type(org_id, query):
    # NOTE: buckets are UTC hours, so in a zone with a half-hour offset (Asia/Kolkata) each range end
    # is off by those 30 minutes: a bucket counts on the local day its start falls on.
    if query.path_prefix:
        source = PathHourlyCount
    elif query.tool or query.member_id:
        source = HourlyCount
    else:
        source = TypeHourlyCount
    statement = _filtered(
        select(source.hour_start, source.type, func.sum(source.count)),
        source,
        org_id,
        query,
        [(query.start_utc, query.end_utc)],
    ).group_by(source.hour_start, source.type)
    return [
        (hour_start.astimezone(query.tz), event_type, int(count))
        for hour_start, event_type, count in db.session.execute(statement)
    ]


def _breakdown(org_id, query):
    """Return (user_id, type, tool, ext, count) rows of the range: one read for totals and top lists."""
    columns = ("user_id", "type", "tool", "ext")
    counts = _range_counts(org_id, query, columns, *_breakdown_sources(query))
    grouped = [counts.c[name] for name in columns]
    statement = select(*grouped, func.sum(counts.c.count)).group_by(*grouped)
    return [
        (user_id, event_type, tool, ext, int(count))
        for user_id, event_type, tool, ext, count in db.session.execute(statement)
    ]


def _top(breakdown, position, limit):
    """The `limit` largest totals of one breakdown column, ties by name."""
    totals = Counter()
    for row in breakdown:
        totals[row[position]] += row[-1]
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"name": name, "count": count} for name, count in ranked]


def _top_files(org_id, query, limit):
    """Return the `limit` files with the most events, ties by path.

    Without filters the whole days come from the daily path rollup; a filter on user, type or tool
    needs the hourly one, which has those columns.
    """
    daily = None if query.has_event_filters else PathDailyCount
    counts = _range_counts(org_id, query, ("path_key", "path"), daily, PathHourlyCount)
    total = func.sum(counts.c.count)
    statement = (
        select(counts.c.path, total)
        .group_by(counts.c.path_key, counts.c.path)
        .order_by(total.desc(), counts.c.path)
        .limit(limit)
    )
    return [{"path": path, "count": int(count)} for path, count in db.session.execute(statement)]


def _with_emails(top_members):
    """Return the top members with their emails (a deleted user shows as "(deleted user)")."""
    user_ids = [row["name"] for row in top_members]
    emails = dict(db.session.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all())
    return [
        {"user_id": row["name"] or None, "email": emails.get(row["name"], "(deleted user)"), "count": row["count"]}
        for row in top_members
    ]


def _periods(query):
    """The day or week labels of the range, in order."""
    days = [query.start + timedelta(days=offset) for offset in range(query.days)]
    if query.granularity == "day":
        return days
    return sorted({day - timedelta(days=day.weekday()) for day in days})


def _period_of(day, query):
    return day if query.granularity == "day" else day - timedelta(days=day.weekday())


def _activity(hourly, query):
    periods = _periods(query)
    index = {period: position for position, period in enumerate(periods)}
    series = {}
    for local_hour, event_type, count in hourly:
        position = index.get(_period_of(local_hour.date(), query))
        if position is None:
            continue
        series.setdefault(event_type, [0] * len(periods))[position] += count
    ordered = [name for name in EVENT_TYPES if name in series] + sorted(set(series) - set(EVENT_TYPES))
    return {
        "granularity": query.granularity,
        "periods": [period.isoformat() for period in periods],
        "series": [{"type": name, "counts": series[name]} for name in ordered],
    }


def _heatmap(hourly):
    counts = [[0] * 24 for _ in WEEKDAYS]
    for local_hour, _, count in hourly:
        counts[local_hour.weekday()][local_hour.hour] += count
    return {"weekdays": list(WEEKDAYS), "hours": list(range(24)), "counts": counts}


def _whole_hour_offsets(query):
    """Return whether the zone's offset is a whole number of hours at both ends of the range."""
    offsets = (instant.astimezone(query.tz).utcoffset() for instant in (query.start_utc, query.end_utc))
    return all(offset % timedelta(hours=1) == timedelta(0) for offset in offsets)


def _session_buckets(org_id, query):
    """Return (UTC start, sessions, seconds) rows: one per UTC hour the range's sessions start in.

    The database groups the sessions by hour, which in a zone with whole-hour offsets keeps each on
    its local day. In other zones each session is its own row.
    """
    started_at, ended_at = ActivitySession.started_at, ActivitySession.ended_at
    dialect = db.session.get_bind().dialect.name
    if not _whole_hour_offsets(query):
        bucket = seconds = None
        columns = (started_at, ended_at)
    elif dialect == "postgresql":
        bucket = func.date_trunc("hour", func.timezone("UTC", started_at))
        seconds = extract("epoch", ended_at - started_at)
        columns = (bucket, func.count(), func.sum(seconds))
    else:
        # SQLite stores these timestamps as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
        bucket = func.substr(started_at, 1, 13)
        seconds = func.round((func.julianday(ended_at) - func.julianday(started_at)) * 86_400_000) / 1000.0
        columns = (bucket, func.count(), func.sum(seconds))
    statement = select(*columns).where(
        ActivitySession.org_id == org_id,
        started_at >= query.start_utc,
        started_at < query.end_utc,
    )
    if query.member_id:
        statement = statement.where(ActivitySession.user_id == query.member_id)
    if bucket is None:
        return [(start, 1, (end - start).total_seconds()) for start, end in db.session.execute(statement)]

    rows = db.session.execute(statement.group_by(bucket)).all()
    buckets = []
    for hour, sessions, total_seconds in rows:
        if isinstance(hour, str):
            hour = datetime.strptime(hour, "%Y-%m-%d %H")
        buckets.append((hour.replace(tzinfo=UTC), sessions, float(total_seconds)))
    return buckets


def _sessions(org_id, query):
    periods = _periods(query)
    index = {period: position for position, period in enumerate(periods)}
    counts = [0] * len(periods)
    seconds = [0.0] * len(periods)
    for started_at, sessions, total_seconds in _session_buckets(org_id, query):
        position = index.get(_period_of(started_at.astimezone(query.tz).date(), query))
        if position is None:
            continue
        counts[position] += sessions
        seconds[position] += total_seconds
    total = sum(counts)
    return {
        "periods": [period.isoformat() for period in periods],
        "counts": counts,
        "average_minutes": [round(seconds[i] / 60 / counts[i], 1) if counts[i] else 0 for i in range(len(periods))],
        "total": total,
        "average_minutes_overall": round(sum(seconds) / 60 / total, 1) if total else 0,
    }


def workflow_run_model():
    """Return the WorkflowRun model when workflows are installed and migrated, else None."""
    try:
        model = import_module("app.workflows.models").WorkflowRun
    except (ImportError, AttributeError):
        return None
    cache = current_app.extensions.setdefault("floyo_analytics", {})
    if "workflow_runs_table" not in cache:
        cache["workflow_runs_table"] = inspect(db.engine).has_table(model.__tablename__)
    return model if cache["workflow_runs_table"] else None


def _workflow_runs(org_id, queries):
    """Return the workflow runs figures of each query, read in one statement over all their days."""
    model = workflow_run_model()
    if model is None:
        unavailable = {"available": False, "periods": [], "succeeded": [], "failed": [], "total": 0}
        return [{**unavailable, "success_rate": None} for _ in queries]
    statement = select(model.created_at, model.status).where(
        model.org_id == org_id,
        model.created_at >= min(query.start_utc for query in queries),
        model.created_at < max(query.end_utc for query in queries),
    )
    # NOTE: runs are read row by row; fine for thousands of runs a period, a rollup past that.
    runs = db.session.execute(statement).all()
    return [_runs_per_period(runs, query) for query in queries]


def _runs_per_period(runs, query):
    periods = _periods(query)
    index = {period: position for position, period in enumerate(periods)}
    succeeded = [0] * len(periods)
    other = [0] * len(periods)
    finished = 0
    total = 0
    for created_at, status in runs:
        if not query.start_utc <= created_at < query.end_utc:
            continue
        position = index.get(_period_of(created_at.astimezone(query.tz).date(), query))
        if position is None:
            continue
        total += 1
        if status in WORKFLOW_FINISHED:
            finished += 1
        if status == WORKFLOW_SUCCESS:
            succeeded[position] += 1
        else:
            other[position] += 1
    success_rate = round(sum(succeeded) * 100 / finished, 1) if finished else None
    return {
        "available": True,
        "periods": [period.isoformat() for period in periods],
        "succeeded": succeeded,
        "other": other,
        "total": total,
        "success_rate": success_rate,
    }


def _version_and_suggestions(org_id, queries):
    """Return the rollup version and each query's suggestion figures, read in one statement.

    A cached view spends most of its time on round trips to the database, so the figures that are
    read on every request share one. The suggestions accepted and dismissed count in each range,
    the open ones as they are now.
    """
    events_recorded = select(AnalyticsState.events_recorded).where(AnalyticsState.org_id == org_id)
    rebuilt_at = select(AnalyticsState.rebuilt_at).where(AnalyticsState.org_id == org_id)
    columns = [
        events_recorded.scalar_subquery(),
        rebuilt_at.scalar_subquery(),
        func.count().filter(Suggestion.status == "open"),
    ]
    for query in queries:
        in_range = and_(Suggestion.decided_at >= query.start_utc, Suggestion.decided_at < query.end_utc)
        columns.append(func.count().filter(Suggestion.status == "accepted", in_range))
        columns.append(func.count().filter(Suggestion.status == "dismissed", in_range))
    row = db.session.execute(select(*columns).where(Suggestion.org_id == org_id)).one()

    version = format_version(row[0], row[1])
    open_now = row[2]
    figures = []
    for position in range(len(queries)):
        accepted, dismissed = row[3 + 2 * position], row[4 + 2 * position]
        decided = accepted + dismissed
        figures.append(
            {
                "accepted": accepted,
                "dismissed": dismissed,
                "open": open_now,
                "acceptance_rate": round(accepted * 100 / decided, 1) if decided else None,
            }
        )
    return version, figures


def _event_totals(org_id, query):
    counts = _range_counts(org_id, query, ("user_id",), *_breakdown_sources(query))
    statement = select(func.coalesce(func.sum(counts.c.count), 0), func.count(func.distinct(counts.c.user_id)))
    events, members = db.session.execute(statement).one()
    return int(events), int(members)


def _cache_parameters(query, **extra):
    """Return what the cached figures of a query depend on: its days, not the name of its preset."""
    return {
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "tz": query.tz.key,
        "tool": query.tool,
        "type": query.type,
        "path": query.path_prefix,
        "member": query.member_id,
        **extra,
    }


def _compute_event_summary(org_id, query):
    events, members = _event_totals(org_id, query)
    sessions = _sessions(org_id, query)
    return {
        "events": events,
        "active_members": members,
        "sessions": sessions["total"],
        "average_session_minutes": sessions["average_minutes_overall"],
    }


def _event_summary(org_id, query, version):
    """Return the headline figures that come from the rollups, cached until the next ingest."""
    return cached(org_id, version, "summary", _cache_parameters(query), lambda: _compute_event_summary(org_id, query))


def _summary(event_summary, runs, suggestions):
    return {
        **event_summary,
        "workflow_runs": runs["total"] if runs["available"] else None,
        "workflow_success_rate": runs["success_rate"],
        "suggestions_accepted": suggestions["accepted"],
        "suggestion_acceptance_rate": suggestions["acceptance_rate"],
    }


def build_summary(org_id, query):
    """Return the headline figures of a range, each a number or None where it cannot be computed."""
    version, [suggestions] = _version_and_suggestions(org_id, [query])
    [runs] = _workflow_runs(org_id, [query])
    return _summary(_event_summary(org_id, query, version), runs, suggestions)


def compare(current, previous):
    """Each figure of `current` with the previous period's value and the change."""
    figures = []
    for name, value in current.items():
        before = previous.get(name)
        change = None if value is None or before is None else round(value - before, 1)
        percent = round(change * 100 / before, 1) if change is not None and before else None
        figures.append(
            {"name": name, "current": value, "previous": before, "change": change, "change_percent": percent}
        )
    return figures


def _path_prefix_rows(org_id, query, top_n):
    """Return (hourly by type, breakdown, top files) of a path prefix query from one scan, on PostgreSQL.

    The three come from the same filtered rows of the hourly path rollup, so one statement with
    GROUPING SETS reads them once instead of three times. The rows are the same as those of
    `_hourly_by_type`, `_breakdown` and `_top_files`, and the files are ranked in the database so
    ties sort by its collation as there.
    """
    source = PathHourlyCount
    by_hour, by_breakdown, by_path = (
        tuple_(source.hour_start, source.type),
        tuple_(source.user_id, source.type, source.tool, source.ext),
        tuple_(source.path_key, source.path),
    )
    # GROUPING() sets a bit for each listed column that the row's grouping set leaves out.
    grouping = func.grouping(source.hour_start, source.user_id, source.path_key)
    total = func.sum(source.count)
    columns = (source.hour_start, source.type, source.user_id, source.tool, source.ext, source.path, grouping, total)
    statement = (
        _filtered(select(*columns), source, org_id, query, [(query.start_utc, query.end_utc)])
        .group_by(func.grouping_sets(by_hour, by_breakdown, by_path))
        .order_by(grouping, total.desc(), source.path)
    )
    hourly, breakdown, top_files = [], [], []
    for hour_start, event_type, user_id, tool, ext, path, grouping_bits, count in db.session.execute(statement):
        if grouping_bits == 0b011:
            hourly.append((hour_start.astimezone(query.tz), event_type, int(count)))
        elif grouping_bits == 0b101:
            breakdown.append((user_id, event_type, tool, ext, int(count)))
        elif len(top_files) < top_n:
            top_files.append({"path": path, "count": int(count)})
    return hourly, breakdown, top_files


def _compute_event_figures(org_id, query, top_n):
    if query.path_prefix and db.session.get_bind().dialect.name == "postgresql":
        hourly, breakdown, top_files = _path_prefix_rows(org_id, query, top_n)
    else:
        hourly = _hourly_by_type(org_id, query)
        breakdown = _breakdown(org_id, query)
        top_files = _top_files(org_id, query, top_n)
    sessions = _sessions(org_id, query)
    by_type = _top(breakdown, 1, len(EVENT_TYPES) + len(breakdown))
    return {
        "summary": {
            "events": sum(row[-1] for row in breakdown),
            "active_members": len({row[0] for row in breakdown}),
            "sessions": sessions["total"],
            "average_session_minutes": sessions["average_minutes_overall"],
        },
        "activity": _activity(hourly, query),
        "heatmap": _heatmap(hourly),
        "types": by_type,
        "top_files": top_files,
        "top_file_types": _top(breakdown, 3, top_n),
        "top_tools": _top(breakdown, 2, top_n),
        "top_members": _with_emails(_top(breakdown, 0, top_n)),
        "sessions": sessions,
    }


def _event_figures(org_id, query, version):
    """Return every figure of the dashboard that comes from the rollups, cached until the next ingest.

    Workflow runs and suggestions change without an ingest, so they are read on every request.
    """
    top_n = current_app.config["ANALYTICS_TOP_N"]
    return cached(
        org_id,
        version,
        "dashboard",
        _cache_parameters(query, granularity=query.granularity, top_n=top_n),
        lambda: _compute_event_figures(org_id, query, top_n),
    )


def _page_figures(org_id, query, version, record_zone=True):
    """Return what the page shows from the rollups, cached as one value until the next ingest.

    The value contains the dashboard's event figures, the previous period's event summary and the
    plotly JSON of the charts drawn from them, so a cache hit is one Redis read and no rendering
    of figures. With `record_zone`, a miss also records the query's time zone for `warm_presets`.
    """
    top_n = current_app.config["ANALYTICS_TOP_N"]

    def compute():
        if record_zone:
            remember_zone(org_id, query.tz.key)
        figures = _compute_event_figures(org_id, query, top_n)
        return {
            "figures": figures,
            "previous": _compute_event_summary(org_id, query.previous()),
            "charts": {name: json.dumps(figure) for name, figure in build_event_figures(figures).items()},
        }

    parameters = _cache_parameters(query, granularity=query.granularity, top_n=top_n)
    return cached(org_id, version, "page", parameters, compute)


def _dashboard(query, figures, runs, suggestions):
    return {
        "query": query.describe(),
        "summary": _summary(figures["summary"], runs, suggestions),
        "activity": figures["activity"],
        "heatmap": figures["heatmap"],
        "types": figures["types"],
        "top_files": figures["top_files"],
        "top_file_types": figures["top_file_types"],
        "top_tools": figures["top_tools"],
        "top_members": figures["top_members"],
        "sessions": figures["sessions"],
        "workflow_runs": runs,
        "suggestions": suggestions,
    }


def build_dashboard(org_id, query):
    """Return every figure of the analytics page for the query."""
    version, [suggestions] = _version_and_suggestions(org_id, [query])
    [runs] = _workflow_runs(org_id, [query])
    return _dashboard(query, _event_figures(org_id, query, version), runs, suggestions)


def build_page(org_id, query):
    """Return the page's dashboard, the previous period's summary, the chart JSON and whether there are events.

    `charts` maps each chart's name to its plotly figure as JSON. On a cache hit this reads the
    database twice (the rollup version with the suggestion counts, and the workflow runs) and
    the cache once.
    """
    previous = query.previous()
    version, (suggestions, previous_suggestions) = _version_and_suggestions(org_id, [query, previous])
    runs, previous_runs = _workflow_runs(org_id, [query, previous])
    page = _page_figures(org_id, query, version)
    live_charts = {name: json.dumps(figure) for name, figure in build_live_figures(runs, suggestions).items()}
    return {
        "dashboard": _dashboard(query, page["figures"], runs, suggestions),
        "previous": _summary(page["previous"], previous_runs, previous_suggestions),
        "charts": {**page["charts"], **live_charts},
        "has_events": version != EMPTY_VERSION,
    }


def warm_presets(org_id):
    """Compute and cache the page of each preset range, without filters, under the current rollup version.

    The rollup job calls this after adding events, so the first view after an ingest reads the
    cache. It covers UTC and the ANALYTICS_WARM_ZONES zones the organization's pages were last
    computed in. The version is read before the figures, so figures stored under a version
    always include at least the events that version counts. Returns the number of pages computed.
    """
    version = rollup_version(org_id)
    if version == EMPTY_VERSION:
        return 0
    zones = ["UTC"]
    for zone in recent_zones(org_id, current_app.config["ANALYTICS_WARM_ZONES"] + 1):
        if zone not in zones:
            zones.append(zone)
    zones = zones[: current_app.config["ANALYTICS_WARM_ZONES"] + 1]
    computed = 0
    for zone in zones:
        for preset in RANGE_PRESETS:
            try:
                query = parse_query({"range": preset, "tz": zone}, org_id)
            except ValidationError:
                # A zone name from Redis that this server's tz database does not know.
                logger.warning("analytics warm-up skipped zone org_id=%s zone=%r", org_id, zone)
                break
            _page_figures(org_id, query, version, record_zone=False)
            computed += 1
    return computed


def build_trends(org_id, query):
    """Return the headline figures of the range against the previous period of the same length."""
    previous = query.previous()
    version, (suggestions, previous_suggestions) = _version_and_suggestions(org_id, [query, previous])
    runs, previous_runs = _workflow_runs(org_id, [query, previous])
    current = _summary(_event_summary(org_id, query, version), runs, suggestions)
    before = _summary(_event_summary(org_id, previous, version), previous_runs, previous_suggestions)
    return {
        "query": query.describe(),
        "previous": {"from": previous.start.isoformat(), "to": previous.end.isoformat()},
        "figures": compare(current, before),
    }


def members(org_id):
    """The organization's members as (user id, email), for the member filter."""
    return db.session.execute(
        select(User.id, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id)
        .order_by(User.email)
    ).all()
