"""`flask floyo import-git`."""

import logging
from pathlib import Path

import click

from app.auth import service as auth_service
from app.cli import floyo
from app.errors import ServiceError
from app.events import gitimport
from app.extensions import db
from app.orgs.service import personal_org

logger = logging.getLogger(__name__)


@floyo.command("import-git")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--email", required=True, help="The user whose personal organization receives the events.")
@click.option(
    "--timeout",
    default=gitimport.GIT_TIMEOUT_SECONDS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds to wait for `git log` when PATH is a repository.",
)
def import_git(path, email, timeout):
    """Import the history of a local git repository, or a git log file, as events.

    A log file must come from
    git log --numstat --no-renames --date=iso-strict --pretty=format:'--%h--%ad--%aN'.
    Importing the same history again stores nothing new.
    """
    user = auth_service.find_user_by_email(email)
    if user is None:
        raise click.ClickException(f"No user with email {email!r}. Create one with 'flask floyo create-user'.")
    org = personal_org(user)

    try:
        text = gitimport.read_history(path, timeout=timeout)
        total = gitimport.count_commits(text)
    except ServiceError as error:
        raise click.ClickException(error.message) from error
    click.echo(f"Importing {total} commits from {path} into organization {org.id}.")

    git_import = gitimport.create_import(org.id, user.id, path.resolve().name or str(path), status="running")
    db.session.commit()
    import_id = git_import.id

    def report(processed, total, stored):
        click.echo(f"{processed} of {total} commits, {stored} events stored")

    try:
        result = gitimport.run_import(import_id, text, on_progress=report)
    except ServiceError as error:
        db.session.rollback()
        gitimport.finish_import(import_id, error=error.message)
        db.session.commit()
        raise click.ClickException(error.message) from error
    except BaseException as error:
        # Also on Ctrl-C, so that the import is not left running until its heartbeat expires.
        db.session.rollback()
        logger.exception("git import stopped import_id=%s org_id=%s", import_id, org.id)
        gitimport.finish_import(import_id, error=f"The import stopped: {type(error).__name__}.")
        db.session.commit()
        raise

    gitimport.finish_import(import_id)
    db.session.commit()
    click.echo(
        f"Imported {result.commits} commits: {result.events_stored} events stored, "
        f"{result.duplicates} duplicates skipped."
    )
