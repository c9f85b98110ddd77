"""Which organization a request acts for."""

from flask import g, session
from flask_login import current_user

from app.extensions import db
from app.orgs.models import Membership, Organization


def memberships_of(user):
    return db.session.scalars(db.select(Membership).where(Membership.user_id == user.id).order_by(Membership.id)).all()


def current_org():
    """Return the organization the signed-in user is working in (their personal one by default).

    The choice is kept in the session; a choice the user is no longer a member of falls back to
    the personal organization.
    """
    if "org" in g:
        return g.org
    memberships = memberships_of(current_user)
    chosen = session.get("org_id")
    membership = next((m for m in memberships if m.org_id == chosen), None)
    if membership is None:
        membership = next((m for m in memberships if m.organization.personal), memberships[0] if memberships else None)
    g.org = membership.organization if membership else None
    g.membership = membership
    g.log_org_id = g.org.id if g.org else None
    return g.org


def personal_org(user):
    return db.session.scalar(
        db.select(Organization)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user.id, Organization.personal.is_(True))
    )
