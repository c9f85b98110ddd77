"""Patterns and suggestions: running the analysis and reading its results."""

import logging

from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.insights.models import AnalysisState
from app.queue import enqueue_after_commit
from app.timeutil import utcnow

logger = logging.getLogger(__name__)


def request_analysis(org_id):
    """Ask for an analysis of the organization's events, coalescing with one already queued.

    Call it inside the transaction that stored new events; the job is enqueued after that commit,
    and only when no job is queued yet, so a stream of batches starts one job, not one per batch.
    """
    now = utcnow()
    claimed = db.session.execute(
        db.update(AnalysisState)
        .where(AnalysisState.org_id == org_id, AnalysisState.queued.is_(False))
        .values(queued=True, requested_at=now)
    ).rowcount
    if claimed == 0:
        exists = db.session.scalar(db.select(AnalysisState.org_id).where(AnalysisState.org_id == org_id))
        if exists is not None:
            return False
        try:
            with db.session.begin_nested():
                db.session.add(AnalysisState(org_id=org_id, queued=True, requested_at=now))
        except IntegrityError:
            # Another request created the row first, and with it the job.
            return False
    from app.insights.jobs import run_analysis_job

    enqueue_after_commit(run_analysis_job, org_id, queue="analysis")
    return True
