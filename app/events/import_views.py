"""Pages to import a git history and follow its progress."""

import logging

from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired

from app.errors import ServiceError
from app.events import gitimport
from app.events.jobs import run_git_import_job
from app.events.views import bp
from app.extensions import db
from app.htmx import is_htmx
from app.orgs.access import role_required
from app.orgs.service import current_org
from app.queue import enqueue_after_commit

logger = logging.getLogger(__name__)


class GitLogUploadForm(FlaskForm):
    log = FileField("Git log file", validators=[FileRequired("Choose a git log file to upload.")])


@bp.get("/events/import")
@login_required
@role_required("member")
def import_form():
    """Upload form for a git log, with the organization's recent imports."""
    return _render_import_page(GitLogUploadForm())


@bp.post("/events/import")
@login_required
@role_required("member")
def import_upload():
    """Check an uploaded git log, store it and start its import in the background."""
    form = GitLogUploadForm()
    if not form.validate_on_submit():
        return _render_import_page(form), 422

    limit = current_app.config["GIT_IMPORT_MAX_BYTES"]
    upload = form.log.data
    # One byte over the limit is enough to know the file is too large, without reading all of it.
    content = upload.stream.read(limit + 1)
    org_id = current_org().id
    try:
        git_import = gitimport.create_upload_import(org_id, current_user.id, upload.filename, content, limit)
    except ServiceError as error:
        db.session.rollback()
        form.log.errors.append(error.message)
        return _render_import_page(form), error.status

    enqueue_after_commit(run_git_import_job, git_import.id)
    db.session.commit()
    logger.info("git import queued import_id=%s org_id=%s commits=%s", git_import.id, org_id, git_import.total_commits)
    commits = git_import.total_commits
    flash(f"Import of {commits:,} commit{'' if commits == 1 else 's'} from {git_import.filename} started.", "success")
    return redirect(url_for("events.import_status", import_id=git_import.id))


@bp.get("/events/import/<int:import_id>")
@login_required
@role_required("viewer")
def import_status(import_id):
    """Progress of one import: the whole page, or for HTMX polling the progress fragment alone."""
    git_import = gitimport.get_import(current_org().id, import_id)
    # get_import may have marked an import whose worker died as failed.
    db.session.commit()

    if is_htmx():
        return render_template("events/_import_progress.html", git_import=git_import)
    return render_template("events/import.html", git_import=git_import)


def _render_import_page(form):
    imports = gitimport.recent_imports(current_org().id)
    # recent_imports may have marked an import whose worker died as failed.
    db.session.commit()
    return render_template("events/import.html", form=form, imports=imports)
