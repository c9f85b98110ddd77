"""Plan limits: usage counted per organization and calendar month (UTC), checked where the work happens.

Limits are enforced only where billing is set up (STRIPE_SECRET_KEY): a self-hosted server
without Stripe offers no way to upgrade, so it counts usage but enforces no limit.
Monthly metrics (events, workflow runs) are counters in `usage_counters`, raised in the same
transaction as the work, so a rolled-back request counts nothing and the check costs one upsert
instead of a COUNT(*) per batch. API calls are counted in Redis, which every API request touches
anyway, so reads stay free of database writes. Workflows, members and storage are counted from
their own tables when one is added.
"""

import logging

import redis
from flask import current_app, has_request_context, url_for
from sqlalchemy.dialects import postgresql, sqlite

from app.billing import plans
from app.billing.models import UsageCounter
from app.errors import ServiceError
from app.extensions import db
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

WARNING_RATIO = 0.8


class LimitExceeded(ServiceError):
    """Work that would go over the plan's limit: HTTP 402 with a link to upgrade."""

    status = 402
    code = "plan_limit_reached"


def enforcing():
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def current_period(now=None):
    return (now or utcnow()).strftime("%Y-%m")


def upgrade_url():
    return url_for("billing.index") if has_request_context() else "/billing"


def _raise(org_id, plan_key, metric, limit, used, adding):
    plan_name = plans.get_plan(plan_key)["name"]
    label = plans.LIMIT_LABELS[metric]
    shown_limit = format_amount(metric, limit)
    url = upgrade_url()
    logger.info("plan limit reached org=%s plan=%s metric=%s limit=%s used=%s", org_id, plan_key, metric, limit, used)
    raise LimitExceeded(
        f"The {plan_name} plan allows {shown_limit} {label}, and this would make it "
        f"{format_amount(metric, used + adding)}. Nothing was stored. Upgrade the plan at {url} to raise the limit.",
        {"limit": metric, "allowed": limit, "used": used, "requested": adding, "plan": plan_key, "upgrade_url": url},
    )


def format_amount(metric, value):
    if metric == "storage_bytes":
        if value >= 1024**3:
            return f"{value / 1024**3:.1f} GB"
        return f"{value / 1024**2:.1f} MB"
    return f"{value:,}"


def record_usage(org_id, metric, amount, enforce=True):
    """Add `amount` to this month's counter; raise LimitExceeded (the caller rolls back) if it goes over.

    The upsert locks the counter row until commit, so two concurrent batches cannot both pass
    the last free units.
    """
    if amount <= 0:
        return None
    table = UsageCounter.__table__
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(org_id=org_id, metric=metric, period=current_period(), count=amount)
    statement = statement.on_conflict_do_update(
        index_elements=["org_id", "metric", "period"], set_={"count": table.c.count + statement.excluded.count}
    ).returning(table.c.count)
    total = db.session.execute(statement).scalar_one()
    if not enforce or not enforcing():
        return total
    plan_key = _plan(org_id)
    limit = plans.limits_of(plan_key).get(metric)
    if limit is not None and total > limit:
        _raise(org_id, plan_key, metric, limit, total - amount, amount)
    return total


def _plan(org_id):
    from app.billing.service import current_plan

    return current_plan(org_id)


def check_count(org_id, metric, current, adding=1):
    """Raise LimitExceeded when `current` + `adding` goes over a count limit (workflows, members, storage)."""
    if not enforcing():
        return
    plan_key = _plan(org_id)
    limit = plans.limits_of(plan_key).get(metric)
    if limit is not None and current + adding > limit:
        _raise(org_id, plan_key, metric, limit, current, adding)


def check_workflow_count(org_id):
    if not enforcing():
        return
    from app.workflows.models import Workflow

    count = db.session.scalar(db.select(db.func.count(Workflow.id)).where(Workflow.org_id == org_id))
    check_count(org_id, "workflows", count)


def check_member_count(org_id, adding=1):
    """For the accounts pages: call before adding members to an organization."""
    if not enforcing():
        return
    from app.orgs.models import Membership

    count = db.session.scalar(db.select(db.func.count(Membership.id)).where(Membership.org_id == org_id))
    check_count(org_id, "members", count, adding)


def check_storage(org_id, adding_bytes):
    """For the file manager: call before storing `adding_bytes` more for the organization."""
    if not enforcing():
        return
    from app.files.service import storage_usage

    check_count(org_id, "storage_bytes", storage_usage(org_id), adding_bytes)


def count_run(org_id, trigger_type):
    """Count a workflow run against the plan's monthly runs; return None, or why the run is skipped.

    A manual run past the limit raises LimitExceeded, because a person is there to read the error.
    A scheduled, event-match or webhook run past it is not counted, and the caller records it as
    skipped, with the returned reason, instead of executing it.
    """
    if trigger_type == "manual":
        record_usage(org_id, "runs_per_month", 1)
        return None
    total = record_usage(org_id, "runs_per_month", 1, enforce=False)
    if not enforcing():
        return None
    plan_key = _plan(org_id)
    limit = plans.limits_of(plan_key).get("runs_per_month")
    if limit is None or total <= limit:
        return None
    # The upsert above holds the counter row's lock until commit, so taking the run back is safe.
    table = UsageCounter.__table__
    db.session.execute(
        db.update(table)
        .where(table.c.org_id == org_id, table.c.metric == "runs_per_month", table.c.period == current_period())
        .values(count=table.c.count - 1)
    )
    logger.info("run skipped at plan limit org=%s plan=%s trigger=%s limit=%s", org_id, plan_key, trigger_type, limit)
    plan_name = plans.get_plan(plan_key)["name"]
    shown_limit = format_amount("runs_per_month", limit)
    return f"Monthly run limit of {shown_limit} on the {plan_name} plan reached; upgrade in Billing."


def _api_key(org_id, period):
    return f"floyo:usage:api:{org_id}:{period}"


def count_api_call(org_id):
    """Count one API call in Redis and raise LimitExceeded past the plan's monthly limit."""
    from app.queue import get_queues

    key = _api_key(org_id, current_period())
    try:
        connection = get_queues().connection
        pipeline = connection.pipeline()
        pipeline.incr(key)
        pipeline.expire(key, 40 * 24 * 3600)
        total, _ = pipeline.execute()
    except redis.RedisError:
        # Failing open keeps the API up while Redis is down; the outage is logged.
        logger.exception("api call count failed org=%s", org_id)
        return None
    if not enforcing():
        return total
    plan_key = _plan(org_id)
    limit = plans.limits_of(plan_key).get("api_calls_per_month")
    if limit is not None and total > limit:
        _raise(org_id, plan_key, "api_calls_per_month", limit, total - 1, 1)
    return total


def usage_of(org_id):
    """This month's usage against the limits: a list of dicts for the billing page's bars."""
    from app.files.service import storage_usage
    from app.orgs.models import Membership
    from app.queue import get_queues
    from app.workflows.models import Workflow

    period = current_period()
    counters = dict(
        db.session.execute(
            db.select(UsageCounter.metric, UsageCounter.count).where(
                UsageCounter.org_id == org_id, UsageCounter.period == period
            )
        ).all()
    )
    try:
        api_calls = int(get_queues().connection.get(_api_key(org_id, period)) or 0)
    except redis.RedisError:
        api_calls = 0
    used = {
        "events_per_month": counters.get("events_per_month", 0),
        "workflows": db.session.scalar(db.select(db.func.count(Workflow.id)).where(Workflow.org_id == org_id)),
        "runs_per_month": counters.get("runs_per_month", 0),
        "members": db.session.scalar(db.select(db.func.count(Membership.id)).where(Membership.org_id == org_id)),
        "storage_bytes": storage_usage(org_id),
        "api_calls_per_month": api_calls,
    }
    limits = plans.limits_of(_plan(org_id))
    rows = []
    for metric, label in plans.LIMIT_LABELS.items():
        limit = limits.get(metric)
        ratio = (used[metric] / limit) if limit else 0.0
        rows.append(
            {
                "metric": metric,
                "label": label,
                "used": used[metric],
                "limit": limit,
                "used_text": format_amount(metric, used[metric]),
                "limit_text": "unlimited" if limit is None else format_amount(metric, limit),
                "percent": min(round(ratio * 100), 100),
                "warning": ratio >= WARNING_RATIO,
            }
        )
    return rows
