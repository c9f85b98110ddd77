"""The dashboard's activity summary."""

from datetime import timedelta

from app.events.models import Event
from app.extensions import db
from app.insights.models import Pattern
from app.insights.service import analysis_state
from app.timeutil import utcnow

# Pattern kinds in the order the dashboard lists them, with the heading each gets.
KIND_TITLES = {
    "co_used": "Files used together",
    "sequence": "Steps in order",
    "recurrence": "Recurring habits",
    "produced": "Files your runs produce",
    "frequent_file": "Most used files",
    "frequent_type": "File types",
    "frequent_tool": "Tools",
}


def activity_summary(org_id):
    """Count the organization's events over the last 7 and 30 days and in all, and describe the analysis."""
    now = utcnow()
    counts = db.session.execute(
        db.select(
            db.func.count(Event.id),
            db.func.count(Event.id).filter(Event.occurred_at >= now - timedelta(days=7)),
            db.func.count(Event.id).filter(Event.occurred_at >= now - timedelta(days=30)),
            db.func.max(Event.occurred_at),
        ).where(Event.org_id == org_id)
    ).one()
    state = analysis_state(org_id)
    pattern_count = db.session.scalar(
        db.select(db.func.count(Pattern.id)).where(Pattern.org_id == org_id, Pattern.current.is_(True))
    )
    return {
        "events_total": counts[0],
        "events_7_days": counts[1],
        "events_30_days": counts[2],
        "last_event_at": counts[3],
        "patterns": pattern_count,
        "analysis": state,
        # The page keeps polling while an analysis is waiting or running.
        "analysis_pending": bool(state.queued or state.status == "running"),
    }
