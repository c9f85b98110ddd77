"""RQ jobs of analytics: rebuilding rollups, and exports that end up in the file manager."""

import logging
import tempfile

from app.queue import job

logger = logging.getLogger(__name__)

# An export is written to memory up to this size, then to an anonymous temporary file.
SPOOL_MAX_BYTES = 8 * 1024 * 1024


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
