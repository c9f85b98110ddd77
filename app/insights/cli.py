"""`flask floyo analyze`."""

import click

from app.auth import service as auth_service
from app.cli import floyo
from app.extensions import db
from app.insights import service
from app.orgs.models import Organization
from app.orgs.service import personal_org


@floyo.command("analyze")
@click.option("--email", help="Analyse the personal organization of the user with this email.")
@click.option("--org-id", type=int, help="Analyse the organization with this id.")
@click.option("--all", "all_orgs", is_flag=True, help="Analyse every organization, one after another.")
def analyze(email, org_id, all_orgs):
    """Run the full analysis now, in this process, and print what it found."""
    if sum((email is not None, org_id is not None, all_orgs)) != 1:
        raise click.UsageError("Give exactly one of --email, --org-id or --all.")
    if email is not None:
        user = auth_service.find_user_by_email(email)
        if user is None:
            raise click.ClickException(f"No user with email {email!r}. Create one with 'flask floyo create-user'.")
        org_ids = [personal_org(user).id]
    elif org_id is not None:
        if db.session.get(Organization, org_id) is None:
            raise click.ClickException(f"No organization with id {org_id}.")
        org_ids = [org_id]
    else:
        org_ids = db.session.scalars(db.select(Organization.id).order_by(Organization.id)).all()

    failed = []
    for current_id in org_ids:
        try:
            summary = service.run_analysis(current_id)
        except Exception as error:  # run_analysis recorded and logged it; go on with the next organization.
            click.echo(f"Organization {current_id}: the analysis failed: {type(error).__name__}: {error}", err=True)
            failed.append(current_id)
            continue
        if summary is None:
            click.echo(f"Organization {current_id}: an analysis is already running; it runs again when it finishes.")
            continue
        _echo_summary(summary)
    if failed:
        raise click.ClickException(f"The analysis failed for organization(s) {', '.join(map(str, failed))}.")


def _echo_summary(summary):
    click.echo(
        f"Organization {summary.org_id}: {summary.events:,} events in {summary.sessions:,} sessions, "
        f"analysed in {summary.seconds:.1f} s."
    )
    found = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.patterns_by_kind.items())) or "none"
    click.echo(f"  patterns: {found}")
    counts = service.suggestion_counts(summary.org_id)
    click.echo(
        f"  suggestions: {summary.suggestions} made or updated; "
        f"open {counts['open']}, accepted {counts['accepted']}, dismissed {counts['dismissed']}"
    )
    click.echo(f"  patterns no longer found: {summary.no_longer_found}")
