"""`flask floyo maintenance`: turn maintenance mode on or off from a shell, for scripted deploys."""

import click

from app.admin import maintenance
from app.auth import service as auth_service
from app.cli import floyo
from app.errors import ServiceError
from app.extensions import db


@floyo.command("maintenance")
@click.argument("state", type=click.Choice(["on", "off", "status"]))
@click.option("--email", help="The site admin recorded as acting; required for on and off.")
@click.option("--message", default="", help="Shown on every page; a default text when empty.")
@click.option("--ends-at", default="", help="The announced end, ISO 8601 (UTC without an offset).")
def maintenance_command(state, email, message, ends_at):
    """Turn maintenance mode on or off, or print whether it is on."""
    if state == "status":
        current = maintenance.get_state()
        click.echo("Maintenance mode is off." if current is None else f"Maintenance mode is on: {current.message}")
        return
    user = auth_service.find_user_by_email(email or "")
    if user is None or not user.is_admin:
        raise click.ClickException("Give --email of a site admin; the audit log records who changed maintenance mode.")
    try:
        if state == "on":
            maintenance.start(user, message, maintenance.parse_end_time(ends_at))
        else:
            maintenance.stop(user)
        db.session.commit()
    except ServiceError as error:
        db.session.rollback()
        raise click.ClickException(error.message) from error
    click.echo(f"Maintenance mode is {state}.")
