"""RQ jobs of the events domain."""

import logging

from app.errors import ServiceError
from app.events import gitimport
from app.events.models import GitImport
from app.extensions import db
from app.queue import job

logger = logging.getLogger(__name__)

UNEXPECTED_ERROR = "The import failed because of an error on our side. The error was logged; upload the log again."


@job
def run_git_import_job(import_id):
    """Import an uploaded git log into its organization, recording progress and the outcome on the row."""
    git_import = db.session.get(GitImport, import_id)
    if git_import is None:
        logger.warning("git import job skipped, row not found import_id=%s", import_id)
        return
    org_id = git_import.org_id
    if not gitimport.start_import(import_id):
        logger.warning(
            "git import job skipped, import is %s not queued import_id=%s org_id=%s",
            git_import.status,
            import_id,
            org_id,
        )
        return
    db.session.commit()

    try:
        text = gitimport.decode_log(git_import.content or b"")
        result = gitimport.run_import(import_id, text)
    except gitimport.ImportAbandoned:
        db.session.rollback()
        logger.warning("git import stopped, row no longer running import_id=%s org_id=%s", import_id, org_id)
        return
    except ServiceError as error:
        db.session.rollback()
        logger.warning("git import rejected import_id=%s org_id=%s error=%s", import_id, org_id, error.message)
        gitimport.finish_import(import_id, error=error.message)
        db.session.commit()
        return
    except Exception:
        db.session.rollback()
        logger.exception("git import failed import_id=%s org_id=%s", import_id, org_id)
        gitimport.finish_import(import_id, error=UNEXPECTED_ERROR)
        db.session.commit()
        # Raised again so that RQ records the job as failed, with its traceback, in its failed registry.
        raise

    gitimport.finish_import(import_id)
    db.session.commit()
    logger.info(
        "git import succeeded import_id=%s org_id=%s commits=%s events=%s duplicates=%s",
        import_id,
        org_id,
        result.commits,
        result.events_stored,
        result.duplicates,
    )
