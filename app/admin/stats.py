"""Site statistics for the console: totals, and series per UTC day for the charts."""

from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from app.analytics.models import NO_USER, HourlyCount
from app.auth.models import User
from app.billing.models import Invoice, Subscription
from app.errors import ValidationError
from app.extensions import db
from app.orgs.models import Organization
from app.timeutil import utcnow
from app.workflows.models import WorkflowRun

DEFAULT_DAYS = 30
MAX_DAYS = 366
_WEBHOOKS = sa.table("webhook_deliveries", sa.column("received_at"), sa.column("status"))


def parse_days(raw):
    """Read the number of days a statistics request covers, 1 to MAX_DAYS."""
    if raw in (None, ""):
        return DEFAULT_DAYS
    try:
        days = int(raw)
    except (TypeError, ValueError):
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise ValidationError(f"days must be a whole number from 1 to {MAX_DAYS}, got {raw!r}.", {"days": "invalid"})
    return days


def site_stats(days=DEFAULT_DAYS):
    """Return totals and per-day series (oldest day first) for the last `days` UTC days, today included."""
    today = utcnow().date()
    first_day = today - timedelta(days=days - 1)
    since = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    day_list = [first_day + timedelta(days=offset) for offset in range(days)]

    signups = _per_day(db.select(_day(User.created_at), sa.func.count()).where(User.created_at >= since))
    events = _per_day(
        db.select(_day(HourlyCount.hour_start), sa.func.sum(HourlyCount.count)).where(HourlyCount.hour_start >= since)
    )
    # Active users: users with at least one event that day, counted from the hourly rollups.
    active_rows = (
        db.select(_day(HourlyCount.hour_start).label("day"), HourlyCount.user_id)
        .where(HourlyCount.hour_start >= since, HourlyCount.user_id != NO_USER)
        .distinct()
        .subquery()
    )
    active = _per_day(db.select(active_rows.c.day, sa.func.count()))
    runs = _per_day(db.select(_day(WorkflowRun.created_at), sa.func.count()).where(WorkflowRun.created_at >= since))
    failed_runs = _per_day(
        db.select(_day(WorkflowRun.created_at), sa.func.count()).where(
            WorkflowRun.created_at >= since, WorkflowRun.status == "failed"
        )
    )
    webhooks = None
    if sa.inspect(db.engine).has_table("webhook_deliveries"):
        webhooks = _per_day(
            db.select(_day(_WEBHOOKS.c.received_at), sa.func.count()).where(_WEBHOOKS.c.received_at >= since)
        )

    series = []
    for day in day_list:
        key = day.isoformat()
        run_count = runs.get(key, 0)
        failed = failed_runs.get(key, 0)
        series.append(
            {
                "day": key,
                "signups": signups.get(key, 0),
                "active_users": active.get(key, 0),
                "events": events.get(key, 0),
                "runs": run_count,
                "failed_runs": failed,
                "run_failure_rate": round(failed / run_count, 4) if run_count else None,
                "webhooks": webhooks.get(key, 0) if webhooks is not None else None,
            }
        )
    totals = {
        "users": db.session.scalar(db.select(sa.func.count()).select_from(User)),
        "active_users": db.session.scalar(db.select(sa.func.count()).where(User.active.is_(True))),
        "admins": db.session.scalar(db.select(sa.func.count()).where(User.is_admin.is_(True))),
        "organizations": db.session.scalar(db.select(sa.func.count()).select_from(Organization)),
    }
    return {
        "days": days,
        "from": first_day.isoformat(),
        "to": today.isoformat(),
        "totals": totals,
        "series": series,
        "revenue_by_plan": revenue_by_plan(since),
    }


def revenue_by_plan(since):
    """Sum the invoices paid since `since` by the plan of their subscription and by currency.

    Amounts are in the currency's minor unit (cents), as Stripe sends them. An invoice whose
    subscription is not known here is counted under the plan "unknown".
    """
    plan = sa.func.coalesce(Subscription.plan, "unknown")
    rows = db.session.execute(
        db.select(plan, Invoice.currency, sa.func.sum(Invoice.amount_paid), sa.func.count())
        .select_from(Invoice)
        .outerjoin(Subscription, Subscription.id == Invoice.subscription_id)
        .where(Invoice.paid_at >= since)
        .group_by(plan, Invoice.currency)
        .order_by(plan, Invoice.currency)
    ).all()
    return [
        {"plan": name, "currency": currency, "amount_paid": int(amount or 0), "invoices": count}
        for name, currency, amount, count in rows
    ]


def _day(column):
    """Return a SQL expression of the UTC date of a timestamp column, as text YYYY-MM-DD."""
    if db.engine.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLite stores UTCDateTime as naive UTC text.
    return sa.func.date(column)


def _per_day(select):
    """Run a (day, count) query grouped by its day and return {"YYYY-MM-DD": count}."""
    rows = db.session.execute(select.group_by(select.selected_columns[0])).all()
    return {_day_key(day): int(count or 0) for day, count in rows}


def _day_key(value):
    return value.isoformat() if isinstance(value, date) else str(value)
