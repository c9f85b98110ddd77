"""`flask floyo ...` commands for scripting and operations."""

import click
from flask.cli import AppGroup

from app.auth import service as auth_service
from app.errors import ServiceError
from app.extensions import db
from app.orgs.service import personal_org
from app.queue import get_queues
from app.timeutil import utcnow

EMBEDDED_JOBS_TIMEOUT_SECONDS = 1800

floyo = AppGroup("floyo", help="Floyo administration commands.")


@floyo.result_callback()
def finish_embedded_jobs(*_args, **_kwargs):
    """Run the jobs a command enqueued before its process exits, in the embedded mode.

    Without REDIS_URL the queue lives inside this process: an import's analysis job would be lost
    when the command returns, so the command waits for it here.
    """
    from flask import current_app

    queues = get_queues(current_app)
    if not queues.embedded or not queues.worker_started:
        return
    click.echo("Waiting for background jobs (such as the analysis) to finish...")
    if not queues.wait_until_idle(timeout=EMBEDDED_JOBS_TIMEOUT_SECONDS):
        raise click.ClickException(
            f"Background jobs did not finish within {EMBEDDED_JOBS_TIMEOUT_SECONDS} seconds; "
            "run 'flask floyo analyze' to analyse the events."
        )


def _user_or_exit(email):
    user = auth_service.find_user_by_email(email)
    if user is None:
        raise click.ClickException(f"No user with email {email!r}. Create one with 'flask floyo create-user'.")
    return user


@floyo.command("create-user")
@click.option("--email", required=True, help="Email address to sign in with.")
@click.option("--password", required=True, help="Password, at least 10 characters.")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Make the user a site admin.")
def create_user(email, password, name, admin):
    """Create a user and their personal organization."""
    try:
        user = auth_service.create_user(email, password, name=name, is_admin=admin)
        # The operator vouches for the address, so no verification link is sent.
        user.email_verified_at = utcnow()
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        details = "; ".join(f"{field}: {message}" for field, message in (error.details or {}).items())
        raise click.ClickException(f"{error.message} {details}".strip()) from error
    click.echo(f"Created user {user.email} (id {user.id}){' as admin' if admin else ''}.")


@floyo.command("create-api-key")
@click.option("--email", required=True, help="The user the key acts for.")
@click.option("--name", default="cli", show_default=True, help="A name to recognise the key by.")
@click.option(
    "--scopes",
    default="read,write",
    show_default=True,
    help="Comma-separated scopes of the key: a subset of read, write and admin.",
)
def create_api_key(email, name, scopes):
    """Create an API key for the user's personal organization; the key is the last line printed."""
    user = _user_or_exit(email)
    org = personal_org(user)
    try:
        raw, api_key = auth_service.create_api_key(user, org.id, name, scopes=scopes)
    except ServiceError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from error
    db.session.commit()
    click.echo(
        f"Created API key {api_key.prefix} with scopes {api_key.scopes} for {user.email} "
        f"in organization {org.id}. It is shown only once:"
    )
    click.echo(raw)


@floyo.command("replay-webhooks")
@click.option("--provider", default=None, help="Only deliveries of this provider (stripe, github, ...).")
@click.option("--status", default="failed", show_default=True, help="Deliveries in this status.")
def replay_webhooks(provider, status):
    """Process stored incoming webhook deliveries again, such as every failed Stripe delivery."""
    from app.webhooks.service import replay_matching

    count = replay_matching(provider, status)
    db.session.commit()
    click.echo(f"Queued {count} deliveries to be processed again.")


def init_app(app):
    app.cli.add_command(floyo)
    # Commands of the domain packages register themselves on the same group.
    from app.admin import cli as admin_cli  # noqa: F401
    from app.analytics import cli as analytics_cli  # noqa: F401
    from app.events import cli as events_cli  # noqa: F401
    from app.insights import cli as insights_cli  # noqa: F401
    from app.workflows import cli as workflows_cli  # noqa: F401
