"""The RQ queues seen from the console: counts, workers, and failed jobs to requeue or delete.

Failed jobs are read a page at a time with the registry's `get_job_ids(start, end)`, a ZRANGE on
the registry's sorted set. ZRANGE is O(log N + M), so a page costs about the same with ten failed
jobs or a million.
"""

import logging

from rq import Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.results import Result
from rq.results import get_key as results_key

from app.errors import NotFound, ValidationError
from app.queue import QUEUE_NAMES, get_queues
from app.timeutil import isoformat

logger = logging.getLogger(__name__)

FAILED_PAGE_SIZE = 50
# "All" actions work through the registry in slices of this many ids, so memory stays flat.
BULK_CHUNK = 500
# The last lines of a traceback are what the page and the API show; the full text stays in Redis.
ERROR_TAIL_LINES = 3


def _queue(name):
    if name not in QUEUE_NAMES:
        raise NotFound(f"No queue named {name!r}; the queues are {', '.join(QUEUE_NAMES)}.")
    return get_queues().queues[name]


def summary():
    """Return per queue the number of jobs queued, started, failed, scheduled, deferred and finished."""
    rows = []
    for name in QUEUE_NAMES:
        queue = get_queues().queues[name]
        rows.append(
            {
                "name": name,
                "queued": queue.count,
                "started": queue.started_job_registry.count,
                "failed": queue.failed_job_registry.count,
                "scheduled": queue.scheduled_job_registry.count,
                "deferred": queue.deferred_job_registry.count,
                "finished": queue.finished_job_registry.count,
            }
        )
    return rows


def workers():
    """Return the live workers with their state, queues, and the job each is running."""
    connection = get_queues().connection
    rows = []
    for worker in Worker.all(connection=connection):
        job_id = worker.get_current_job_id()
        job = Job.fetch(job_id, connection=connection) if job_id else None
        rows.append(
            {
                "name": worker.name,
                "state": worker.get_state(),
                "queues": worker.queue_names(),
                "current_job_id": job_id,
                "current_job": job.func_name if job else None,
                "current_job_started_at": isoformat(job.started_at) if job and job.started_at else None,
                "last_heartbeat": isoformat(worker.last_heartbeat) if worker.last_heartbeat else None,
                "successful_jobs": worker.successful_job_count,
                "failed_jobs": worker.failed_job_count,
            }
        )
    return rows


def failed_jobs(queue_name, offset=0, per_page=FAILED_PAGE_SIZE):
    """Return (jobs, total): `per_page` failed jobs of a queue from `offset`, most recent failure first."""
    if offset < 0:
        raise ValidationError(f"offset must be 0 or more, got {offset}.", {"offset": "invalid"})
    registry = _queue(queue_name).failed_job_registry
    total = registry.count
    start = offset
    job_ids = registry.get_job_ids(start, start + per_page - 1, desc=True, cleanup=False)
    connection = get_queues().connection
    jobs = []
    for job_id, job in zip(job_ids, Job.fetch_many(job_ids, connection=connection), strict=True):
        jobs.append(_failed_job_json(job_id, job))
    return jobs, total


def _failed_job_json(job_id, job):
    if job is None:
        # The job's hash expired before its registry entry; it can only be deleted.
        return {"id": job_id, "function": None, "args": None, "error": "The job's data has expired.", "ended_at": None}
    result = job.latest_result()
    error = result.exc_string if result is not None and result.type == Result.Type.FAILED else ""
    return {
        "id": job_id,
        "function": job.func_name,
        "args": repr(job.args)[:200],
        "error": "\n".join(error.strip().splitlines()[-ERROR_TAIL_LINES:]),
        "ended_at": isoformat(job.ended_at) if job.ended_at else None,
    }


def requeue(queue_name, job_id):
    """Put a failed job back on its queue."""
    registry = _queue(queue_name).failed_job_registry
    try:
        registry.requeue(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        raise NotFound(
            f"No failed job {job_id!r} in queue {queue_name!r}; it may have been requeued or deleted."
        ) from None
    _wake_embedded_worker()
    logger.info("failed job requeued job=%s queue=%s", job_id, queue_name)


def delete(queue_name, job_id):
    """Delete a failed job and its data."""
    registry = _queue(queue_name).failed_job_registry
    if registry.connection.zscore(registry.key, job_id) is None:
        raise NotFound(f"No failed job {job_id!r} in queue {queue_name!r}; it may have been requeued or deleted.")
    registry.remove(job_id, delete_job=True)
    logger.info("failed job deleted job=%s queue=%s", job_id, queue_name)


def requeue_all(queue_name):
    """Requeue the jobs that are failed now, a slice at a time; return how many were requeued.

    Workers may run a requeued job and fail it again while this loops. Such a job goes back at the
    end of the registry, because its new expiry is later, so stopping after the starting count
    requeues each job once.
    """
    registry = _queue(queue_name).failed_job_registry
    remaining = registry.count
    count = 0
    while remaining > 0:
        job_ids = registry.get_job_ids(0, min(BULK_CHUNK, remaining) - 1, cleanup=False)
        if not job_ids:
            break
        remaining -= len(job_ids)
        for job_id in job_ids:
            try:
                registry.requeue(job_id)
            except (NoSuchJobError, InvalidJobOperation):
                # The job's data expired: drop the dangling entry.
                registry.remove(job_id)
                continue
            count += 1
    _wake_embedded_worker()
    logger.info("failed jobs requeued queue=%s count=%s", queue_name, count)
    return count


def delete_all(queue_name):
    """Delete the jobs that are failed now, with their data, a slice at a time; return how many were deleted.

    Stopping after the starting count keeps a stream of new failures from holding the loop.
    """
    registry = _queue(queue_name).failed_job_registry
    connection = registry.connection
    remaining = registry.count
    count = 0
    while remaining > 0:
        job_ids = registry.get_job_ids(0, min(BULK_CHUNK, remaining) - 1, cleanup=False)
        if not job_ids:
            break
        remaining -= len(job_ids)
        with connection.pipeline() as pipeline:
            for job_id in job_ids:
                job_key = Job.key_for(job_id)
                # The keys Job.delete removes, without fetching each job first.
                pipeline.delete(job_key, Job.dependents_key_for(job_id), f"{job_key}:dependencies")
                pipeline.delete(results_key(job_id), f"rq:executions:{job_id}")
            pipeline.zrem(registry.key, *job_ids)
            pipeline.execute()
        count += len(job_ids)
    logger.info("failed jobs deleted queue=%s count=%s", queue_name, count)
    return count


def _wake_embedded_worker():
    """Start the embedded worker thread, which otherwise starts only when the app enqueues a job."""
    queues = get_queues()
    if queues.embedded:
        queues.start_embedded_worker()
