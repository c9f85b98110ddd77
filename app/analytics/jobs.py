"""RQ jobs of analytics: rebuilding rollups, and exports that end up in the file manager."""

import logging
import tempfile
import uuid

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy.exc import SQLAlchemyError

from app.errors import NotFound
from app.queue import get_queues, job

logger = logging.getLogger(__name__)

# An export is written to memory up to this size, then to an anonymous temporary file.
SPOOL_MAX_BYTES = 8 * 1024 * 1024
# How long the status page of a finished export can still show its outcome; failed jobs stay
# for RQ's failure_ttl (a year by default).
EXPORT_STATUS_SECONDS = 7 * 24 * 3600
EXPORT_JOB_PREFIX = "analytics-export"


@job
def apply_pending_rollups_job(org_id):
    """Add the organization's newly stored events to its rollups."""
    from app.analytics.rollups import QUEUED_KEY, apply_pending
    from app.analytics.service import warm_presets
    from app.extensions import db

    added = apply_pending(org_id)
    logger.info("analytics rollups updated org_id=%s events=%s", org_id, added)
    if not added:
        return
    # A batch stored since apply_pending started has queued the next job, which will change the
    # rollup version again and warm the pages then.
    try:
        next_job_queued = get_queues().connection.exists(QUEUED_KEY.format(org_id=org_id))
    except RedisError as error:
        logger.warning("analytics rollup job flag read failed org_id=%s error=%s", org_id, error)
        next_job_queued = False
    if next_job_queued:
        logger.info("analytics warm-up left to the next rollup job org_id=%s", org_id)
        return
    # The rollups are committed, so a failed warm-up only means the next view computes its figures.
    try:
        pages = warm_presets(org_id)
    except SQLAlchemyError:
        db.session.rollback()
        logger.exception("analytics warm-up failed org_id=%s", org_id)
        return
    logger.info("analytics preset pages cached org_id=%s pages=%s", org_id, pages)


@job
def rebuild_rollups_job(org_id):
    """Recompute the organization's rollups and sessions from its raw events."""
    from app.analytics.rollups import rebuild_rollups
    from app.extensions import db

    try:
        rebuild_rollups(org_id)
        db.session.commit()
    except Exception:
        logger.exception("analytics rollup rebuild failed org_id=%s", org_id)
        raise


@job
def export_to_files_job(org_id, user_id, args, export_format):
    """Write an export of the events that `args` select into the organization's Exports folder."""
    from app.analytics import export
    from app.analytics.query import parse_query
    from app.extensions import db
    from app.files import service as files

    query = parse_query(args, org_id)
    try:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES) as spool:
            for chunk in export.stream(export.iter_records(org_id, query), export_format):
                spool.write(chunk.encode("utf-8"))
            spool.seek(0)
            folder = files.exports_folder(org_id)
            stored = files.store_file(
                org_id, user_id, export.filename(query, export_format), spool, folder_id=folder.id, source="export"
            )
        db.session.commit()
    except Exception:
        db.session.rollback()
        logger.exception("analytics export failed org_id=%s user_id=%s format=%s", org_id, user_id, export_format)
        raise
    logger.info("analytics export stored org_id=%s user_id=%s file_id=%s", org_id, user_id, stored.id)
    return stored.id


def export_job_id(org_id):
    """Return a new id for an export job; it names the organization, whose pages alone show it."""
    return f"{EXPORT_JOB_PREFIX}-{org_id}-{uuid.uuid4().hex}"


def export_job_status(org_id, job_id):
    """Return the state of the organization's export job as a dict; raise NotFound for any other job.

    The state is one of queued, started, finished (with the stored file's id) and failed (with
    the error's last line).
    """
    if not job_id.startswith(f"{EXPORT_JOB_PREFIX}-{org_id}-"):
        raise NotFound(f"Export {job_id} was not found.")
    try:
        export_job = Job.fetch(job_id, connection=get_queues().connection)
    except NoSuchJobError:
        raise NotFound(f"Export {job_id} was not found; its status is kept for 7 days.") from None
    state = export_job.get_status()
    status = {"id": job_id, "state": "queued", "file_id": None, "error": None, "format": export_job.args[3]}
    if state == JobStatus.STARTED:
        status["state"] = "started"
    elif state == JobStatus.FINISHED:
        status.update(state="finished", file_id=export_job.return_value())
    elif state in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        lines = (export_job.exc_info or "").strip().splitlines()
        status.update(state="failed", error=lines[-1] if lines else f"The job was {state}.")
    return status
