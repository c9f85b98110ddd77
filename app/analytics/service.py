"""The analytics figures, read from the rollups: the same numbers for pages, API and export."""

import logging
from collections import Counter
from datetime import timedelta
from importlib import import_module

from flask import current_app
from sqlalchemy import and_, func, inspect, select

from app.analytics.cache import cached, rollup_version
from app.analytics.models import ActivitySession, HourlyCount, PathHourlyCount
from app.auth.models import User
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


def _counts_source(query):
    """The rollup to read: the path rollup only when a path prefix filters, because it is larger."""
    return PathHourlyCount if query.path_prefix else HourlyCount


def _filtered(statement, source, org_id, query):
    statement = statement.where(
        source.org_id == org_id, source.hour_start >= query.start_utc, source.hour_start < query.end_utc
    )
    if query.tool:
        statement = statement.where(source.tool == query.tool)
    if query.type:
        statement = statement.where(source.type == query.type)
    if query.member_id:
        statement = statement.where(source.user_id == query.member_id)
    if query.path_prefix:
        statement = statement.where(PathHourlyCount.path.like(_like_prefix(query.path_prefix), escape="\\"))
    return statement


# NOTE: buckets are UTC hours, so in a zone with a half-hour offset (Asia/Kolkata) each range end
# is off by those 30 minutes: a bucket counts on the local day its start falls on.
def _hourly_by_type(org_id, query):
    source = _counts_source(query)
    statement = _filtered(
        select(source.hour_start, source.type, func.sum(source.count)), source, org_id, query
    ).group_by(source.hour_start, source.type)
    return [
        (hour_start.astimezone(query.tz), event_type, int(count))
        for hour_start, event_type, count in db.session.execute(statement)
    ]


def _breakdown(org_id, query):
    """Return (user_id, type, tool, ext, count) rows of the range: one read for totals and top lists."""
    source = _counts_source(query)
    columns = (source.user_id, source.type, source.tool, source.ext)
    statement = _filtered(select(*columns, func.sum(source.count)), source, org_id, query).group_by(*columns)
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
    total = func.sum(PathHourlyCount.count)
    statement = (
        _filtered(select(PathHourlyCount.path, total), PathHourlyCount, org_id, query)
        .group_by(PathHourlyCount.path_key, PathHourlyCount.path)
        .order_by(total.desc(), PathHourlyCount.path)
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


def _sessions(org_id, query):
    statement = select(ActivitySession.started_at, ActivitySession.ended_at).where(
        ActivitySession.org_id == org_id,
        ActivitySession.started_at >= query.start_utc,
        ActivitySession.started_at < query.end_utc,
    )
    if query.member_id:
        statement = statement.where(ActivitySession.user_id == query.member_id)
    periods = _periods(query)
    index = {period: position for position, period in enumerate(periods)}
    counts = [0] * len(periods)
    minutes = [0.0] * len(periods)
    total_minutes = 0.0
    total = 0
    for started_at, ended_at in db.session.execute(statement):
        length = (ended_at - started_at).total_seconds() / 60
        position = index.get(_period_of(started_at.astimezone(query.tz).date(), query))
        if position is None:
            continue
        counts[position] += 1
        minutes[position] += length
        total += 1
        total_minutes += length
    return {
        "periods": [period.isoformat() for period in periods],
        "counts": counts,
        "average_minutes": [round(minutes[i] / counts[i], 1) if counts[i] else 0 for i in range(len(periods))],
        "total": total,
        "average_minutes_overall": round(total_minutes / total, 1) if total else 0,
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


def _workflow_runs(org_id, query):
    model = workflow_run_model()
    if model is None:
        return {"available": False, "periods": [], "succeeded": [], "failed": [], "total": 0, "success_rate": None}
    statement = select(model.created_at, model.status).where(
        model.org_id == org_id, model.created_at >= query.start_utc, model.created_at < query.end_utc
    )
    periods = _periods(query)
    index = {period: position for position, period in enumerate(periods)}
    succeeded = [0] * len(periods)
    other = [0] * len(periods)
    finished = 0
    total = 0
    # NOTE: runs are read row by row; fine for thousands of runs a period, a rollup past that.
    for created_at, status in db.session.execute(statement):
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


def _suggestions(org_id, query):
    """Return the suggestions accepted and dismissed in the range, and those open now, in one query."""
    in_range = and_(Suggestion.decided_at >= query.start_utc, Suggestion.decided_at < query.end_utc)
    accepted, dismissed, open_now = db.session.execute(
        select(
            func.count().filter(Suggestion.status == "accepted", in_range),
            func.count().filter(Suggestion.status == "dismissed", in_range),
            func.count().filter(Suggestion.status == "open"),
        ).where(Suggestion.org_id == org_id)
    ).one()
    return {
        "accepted": accepted,
        "dismissed": dismissed,
        "open": open_now,
        "acceptance_rate": round(accepted * 100 / (accepted + dismissed), 1) if accepted + dismissed else None,
    }


def _event_totals(org_id, query):
    source = _counts_source(query)
    statement = _filtered(
        select(func.coalesce(func.sum(source.count), 0), func.count(func.distinct(source.user_id))),
        source,
        org_id,
        query,
    )
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


def _event_summary(org_id, query, version):
    """Return the headline figures that come from the rollups, cached until the next ingest."""

    def compute():
        events, members = _event_totals(org_id, query)
        sessions = _sessions(org_id, query)
        return {
            "events": events,
            "active_members": members,
            "sessions": sessions["total"],
            "average_session_minutes": sessions["average_minutes_overall"],
        }

    return cached(org_id, version, "summary", _cache_parameters(query), compute)


def _summary(event_summary, runs, suggestions):
    return {
        **event_summary,
        "workflow_runs": runs["total"] if runs["available"] else None,
        "workflow_success_rate": runs["success_rate"],
        "suggestions_accepted": suggestions["accepted"],
        "suggestion_acceptance_rate": suggestions["acceptance_rate"],
    }


def build_summary(org_id, query, version=None):
    """Return the headline figures of a range, each a number or None where it cannot be computed."""
    version = version or rollup_version(org_id)
    return _summary(_event_summary(org_id, query, version), _workflow_runs(org_id, query), _suggestions(org_id, query))


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


def _event_figures(org_id, query, version):
    """Return every figure of the page that comes from the rollups, cached until the next ingest.

    Workflow runs and suggestions change without an ingest, so they are read on every request.
    """
    top_n = current_app.config["ANALYTICS_TOP_N"]

    def compute():
        hourly = _hourly_by_type(org_id, query)
        breakdown = _breakdown(org_id, query)
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
            "top_files": _top_files(org_id, query, top_n),
            "top_file_types": _top(breakdown, 3, top_n),
            "top_tools": _top(breakdown, 2, top_n),
            "top_members": _with_emails(_top(breakdown, 0, top_n)),
            "sessions": sessions,
        }

    return cached(
        org_id, version, "dashboard", _cache_parameters(query, granularity=query.granularity, top_n=top_n), compute
    )


def build_dashboard(org_id, query, version=None):
    """Return every figure of the analytics page for the query."""
    version = version or rollup_version(org_id)
    figures = _event_figures(org_id, query, version)
    runs = _workflow_runs(org_id, query)
    suggestions = _suggestions(org_id, query)
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


def build_trends(org_id, query):
    """Return the headline figures of the range against the previous period of the same length."""
    version = rollup_version(org_id)
    previous = query.previous()
    return {
        "query": query.describe(),
        "previous": {"from": previous.start.isoformat(), "to": previous.end.isoformat()},
        "figures": compare(build_summary(org_id, query, version), build_summary(org_id, previous, version)),
    }


def members(org_id):
    """The organization's members as (user id, email), for the member filter."""
    return db.session.execute(
        select(User.id, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id)
        .order_by(User.email)
    ).all()
