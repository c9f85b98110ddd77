"""`flask floyo scheduler`, `prune-runs`, `rotate-secrets` and `generate-secret-key`."""

import click
from cryptography.fernet import Fernet
from flask import current_app

from app.cli import floyo
from app.extensions import db


@floyo.command("scheduler")
@click.option("--once", is_flag=True, help="Do one round (schedules, wake-ups, recovery) and exit.")
def scheduler_command(once):
    """Run the workflow scheduler: fire schedules, wake delayed runs, recover runs of stopped workers."""
    from app.workflows.scheduler import Scheduler

    scheduler = Scheduler(current_app._get_current_object())
    if once:
        result = scheduler.tick()
        click.echo(f"Scheduler round: {result}.")
        return
    try:
        scheduler.run_forever()
    except KeyboardInterrupt:
        scheduler.stop()


@floyo.command("prune-runs")
def prune_runs_command():
    """Delete workflow runs older than WORKFLOW_RUN_RETENTION_DAYS."""
    from app.workflows.scheduler import prune_old_runs

    count = prune_old_runs()
    click.echo(f"Deleted {count} runs older than {current_app.config['WORKFLOW_RUN_RETENTION_DAYS']} days.")


@floyo.command("rotate-secrets")
def rotate_secrets_command():
    """Re-encrypt every integration secret with the first key of SECRET_ENCRYPTION_KEYS."""
    from app.auth.two_factor_service import rotate_secrets as rotate_two_factor_secrets
    from app.integrations.crypto import SecretsUnreadable
    from app.integrations.service import rotate_all_secrets

    try:
        count = rotate_all_secrets()
        two_factor_count = rotate_two_factor_secrets()
        db.session.commit()
    except SecretsUnreadable as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    click.echo(
        f"Re-encrypted the secrets of {count} integrations and the two-factor secrets of {two_factor_count} users. "
        "Old keys can now be removed."
    )


@floyo.command("generate-secret-key")
def generate_secret_key_command():
    """Print a new key for SECRET_ENCRYPTION_KEYS."""
    click.echo(Fernet.generate_key().decode())
