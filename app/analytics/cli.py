"""`flask floyo rebuild-rollups`."""

import logging
import time

import click
from sqlalchemy import select

from app.analytics.rollups import rebuild_rollups
from app.cli import floyo
from app.extensions import db
from app.orgs.models import Organization

logger = logging.getLogger(__name__)


@floyo.command("rebuild-rollups")
@click.option("--org-id", type=click.IntRange(min=1), help="The organization whose rollups to rebuild.")
@click.option("--all", "all_orgs", is_flag=True, help="Rebuild the rollups of every organization.")
def rebuild_rollups_command(org_id, all_orgs):
    """Recompute the analytics rollups and sessions from the raw events.

    For events stored before the rollups existed, or deleted by hand. Each organization is rebuilt
    and committed on its own; its ingest waits for the rebuild to commit.
    """
    if bool(org_id) == all_orgs:
        raise click.UsageError("Give either --org-id N or --all.")
    if org_id:
        if db.session.get(Organization, org_id) is None:
            raise click.ClickException(f"No organization with id {org_id}.")
        org_ids = [org_id]
    else:
        org_ids = db.session.scalars(select(Organization.id).order_by(Organization.id)).all()

    for current in org_ids:
        started = time.monotonic()
        try:
            events = rebuild_rollups(current)
            db.session.commit()
        except Exception as error:
            db.session.rollback()
            logger.exception("rollup rebuild failed org_id=%s", current)
            raise click.ClickException(f"Rebuilding the rollups of organization {current} failed: {error}") from error
        click.echo(f"Organization {current}: {events} events in {time.monotonic() - started:.1f} s.")
    click.echo(f"Rebuilt the rollups of {len(org_ids)} organization{'s' if len(org_ids) != 1 else ''}.")
