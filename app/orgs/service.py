"""Which organization a request acts for, and the organizations' lifecycle and members.

Functions that change data take the acting User, add an audit entry and leave the commit to the
caller, so the change and its audit entry are stored together.
"""

import logging

import sqlalchemy as sa
from flask import g, session
from flask_login import current_user
from sqlalchemy.orm import joinedload

from app.admin.service import record
from app.auth.models import User
from app.errors import Conflict, Forbidden, NotFound, ValidationError
from app.extensions import db
from app.orgs.models import ROLES, Membership, Organization

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 120


def memberships_of(user):
    """Return the user's memberships, oldest first, with their organizations loaded in the same query."""
    return db.session.scalars(
        db.select(Membership)
        .options(joinedload(Membership.organization).joinedload(Organization.billing_account))
        .where(Membership.user_id == user.id)
        .order_by(Membership.id)
    ).all()


def choose_org(user, org_id):
    """Make `org_id` the organization the user works in, in this session and at the next sign-in."""
    session["org_id"] = org_id
    user.last_org_id = org_id


def current_org():
    """Return the organization the signed-in user is working in (their personal one by default).

    The choice is kept in the session; a choice the user is no longer a member of falls back to
    the personal organization.
    """
    if "org" in g:
        return g.org
    memberships = memberships_of(current_user)
    chosen = session.get("org_id") or current_user.last_org_id
    membership = next((m for m in memberships if m.org_id == chosen), None)
    if membership is None:
        membership = next((m for m in memberships if m.organization.personal), memberships[0] if memberships else None)
    g.org = membership.organization if membership else None
    g.membership = membership
    # The top bar's organization switcher lists them again on the same page.
    g.memberships = memberships
    g.log_org_id = g.org.id if g.org else None
    return g.org


def personal_org(user):
    return db.session.scalar(
        db.select(Organization)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user.id, Organization.personal.is_(True))
    )


def membership_in(user, org_id):
    """Return the user's Membership in the organization; NotFound when they are not a member."""
    membership = db.session.scalar(
        db.select(Membership).where(Membership.org_id == org_id, Membership.user_id == user.id)
    )
    if membership is None:
        raise NotFound(f"You are not a member of an organization with id {org_id}.")
    return membership


def validate_role(role):
    if role not in ROLES:
        raise ValidationError(
            f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", {"role": f"must be one of {', '.join(ROLES)}"}
        )
    return role


def validate_name(name):
    name = (name or "").strip()
    if not name:
        raise ValidationError("Enter a name for the organization.", {"name": "missing"})
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"The name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.", {"name": "too long"}
        )
    return name


# The organization


def create_org(user, name, ip_address=""):
    """Create a shared organization with `user` as its owner."""
    org = Organization(name=validate_name(name), personal=False)
    db.session.add(org)
    db.session.add(Membership(organization=org, user_id=user.id, role="owner"))
    db.session.flush()
    record(
        "org.created",
        actor=user,
        target_type="organization",
        target_id=org.id,
        org_id=org.id,
        details={"name": org.name},
        ip_address=ip_address,
    )
    return org


def rename_org(actor, org, name, ip_address=""):
    name = validate_name(name)
    if name == org.name:
        return org
    old_name, org.name = org.name, name
    record(
        "org.renamed",
        actor=actor,
        target_type="organization",
        target_id=org.id,
        org_id=org.id,
        details={"from": old_name, "to": name},
        ip_address=ip_address,
    )
    return org


def delete_org(actor, org, confirm_name, ip_address=""):
    """Delete a shared organization and everything it owns, once `confirm_name` repeats its name.

    Rows of other tables go by their foreign keys (ON DELETE CASCADE), except audit entries and
    webhook deliveries, which keep a NULL organization. Returns the storage keys of its files, for
    the caller to delete after the commit.
    """
    from app.billing.service import has_paid_subscription
    from app.files.models import File

    if org.personal:
        raise Conflict("Your personal organization cannot be deleted; it is deleted with your account.")
    if (confirm_name or "").strip() != org.name:
        raise ValidationError(
            f"Type the organization's name, {org.name}, to confirm the deletion.", {"confirm_name": "does not match"}
        )
    if has_paid_subscription(org.id):
        raise Conflict("This organization has a paid subscription. Cancel it in Billing before deleting.")

    storage_keys = db.session.scalars(db.select(File.storage_key).where(File.org_id == org.id)).all()
    # The audit entry's org_id becomes NULL with the deletion; target_id keeps the id.
    record(
        "org.deleted",
        actor=actor,
        target_type="organization",
        target_id=org.id,
        org_id=org.id,
        details={"name": org.name},
        ip_address=ip_address,
    )
    org_id = org.id
    db.session.flush()
    # A bulk delete leaves the dependent rows to the database's ON DELETE rules; the ORM object is
    # expunged first so the session does not write it back.
    db.session.expunge(org)
    db.session.execute(sa.delete(Organization).where(Organization.id == org_id))
    logger.info("organization deleted org_id=%s user_id=%s files=%s", org_id, actor.id, len(storage_keys))
    return storage_keys


def delete_stored_files(org_id, storage_keys):
    """Delete the bytes of a deleted organization's files; a failure is logged, not raised."""
    from app.files.storage import get_storage

    storage = get_storage()
    for key in storage_keys:
        try:
            storage.delete(org_id, key)
        except Exception:
            logger.exception("deleting stored file failed org_id=%s key=%s", org_id, key)


# Members


def list_members(org_id):
    """Return (Membership, User) pairs of the organization, owners first, then by email."""
    order = sa.case({role: rank for rank, role in enumerate(ROLES)}, value=Membership.role)
    return db.session.execute(
        db.select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org_id)
        .order_by(order, User.email, Membership.id)
    ).all()


def get_member(org_id, user_id):
    membership = db.session.scalar(
        db.select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    if membership is None:
        raise NotFound(f"No member with user id {user_id} in this organization.")
    return membership


def _lock_owners(org_id):
    """Return the owners' memberships, locked until commit on PostgreSQL.

    The lock makes two concurrent demotions wait for each other, so they cannot both pass the
    last-owner check. SQLite ignores FOR UPDATE but runs one writer at a time.
    """
    return db.session.scalars(
        db.select(Membership).where(Membership.org_id == org_id, Membership.role == "owner").with_for_update()
    ).all()


def _keep_an_owner(org, membership, action):
    """Raise Conflict if `membership` is the organization's last owner; `action` completes "they cannot ..."."""
    if membership.role != "owner":
        return
    owners = _lock_owners(org.id)
    if len([owner for owner in owners if owner.id != membership.id]) == 0:
        raise Conflict(
            f"{membership.user.email} is the last owner of {org.name}, so they cannot {action}. "
            "Make another member an owner first."
        )


def change_role(actor, actor_role, org, user_id, role, ip_address=""):
    """Give a member another role. Only owners grant or take away the owner role."""
    validate_role(role)
    membership = get_member(org.id, user_id)
    if role == membership.role:
        return membership
    if "owner" in (role, membership.role) and actor_role != "owner":
        raise Forbidden("Only an owner can grant or remove the owner role.")
    _keep_an_owner(org, membership, "be demoted")

    old_role, membership.role = membership.role, role
    record(
        "member.role_changed",
        actor=actor,
        target_type="user",
        target_id=user_id,
        org_id=org.id,
        details={"from": old_role, "to": role},
        ip_address=ip_address,
    )
    return membership


def remove_member(actor, actor_role, org, user_id, ip_address=""):
    """Remove a member. Only owners remove owners; the last owner stays."""
    membership = get_member(org.id, user_id)
    if membership.role == "owner" and actor_role != "owner":
        raise Forbidden("Only an owner can remove an owner.")
    _keep_an_owner(org, membership, "be removed")

    email = membership.user.email
    db.session.delete(membership)
    record(
        "member.removed",
        actor=actor,
        target_type="user",
        target_id=user_id,
        org_id=org.id,
        details={"email": email},
        ip_address=ip_address,
    )


def leave_org(user, org, ip_address=""):
    """Remove the user's own membership; the personal organization and the last owner stay."""
    if org.personal:
        raise Conflict("You cannot leave your personal organization.")
    membership = membership_in(user, org.id)
    _keep_an_owner(org, membership, "leave")

    db.session.delete(membership)
    record("member.left", actor=user, target_type="user", target_id=user.id, org_id=org.id, ip_address=ip_address)


def transfer_ownership(actor, org, user_id, ip_address=""):
    """Make another member the owner; the acting owner becomes an admin."""
    if org.personal:
        raise Conflict("A personal organization cannot be given to someone else.")
    actor_membership = membership_in(actor, org.id)
    if actor_membership.role != "owner":
        raise Forbidden("Only an owner can transfer ownership.")
    target = get_member(org.id, user_id)
    if target.id == actor_membership.id:
        raise ValidationError("You already own this organization; choose another member.", {"user_id": "yourself"})

    old_role = target.role
    target.role = "owner"
    actor_membership.role = "admin"
    record(
        "org.ownership_transferred",
        actor=actor,
        target_type="user",
        target_id=user_id,
        org_id=org.id,
        details={"from_user_id": actor.id, "to_user_id": user_id, "previous_role": old_role},
        ip_address=ip_address,
    )
    return target
