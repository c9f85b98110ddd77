"""RQ jobs of the analysis."""

import logging

from app.queue import job

logger = logging.getLogger(__name__)


@job
def run_analysis_job(org_id):
    """Analyse the organization's events; clears the queued flag first so new events queue another run."""
    from app.insights import service

    service.run_analysis(org_id)
