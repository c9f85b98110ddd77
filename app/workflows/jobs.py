"""RQ jobs of workflows: executing a run, and matching new events to event-match workflows."""

import logging

from app.queue import job

logger = logging.getLogger(__name__)


@job
def execute_run_job(run_id):
    """Execute (or resume) a run; does nothing when the run is no longer queued."""
    from app.workflows.runner import execute_run

    return execute_run(run_id)


@job
def match_events_job(org_id, event_ids):
    """Start the organization's event-match workflows for the events that match them, once per event."""
    from app.workflows.triggers import start_matching_runs

    return start_matching_runs(org_id, event_ids)
