"""Invitations to an organization: a single-use emailed link that expires.

The link carries a random token and the table keeps only its SHA-256 hash, so a copy of the
database cannot be used to join. Functions here leave the commit to the caller.
"""

import logging
import re
import secrets
from datetime import timedelta

from flask import current_app

from app.admin.service import record
from app.auth.models import User
from app.auth.service import hash_token, normalize_email
from app.billing.limits import check_member_count
from app.errors import Conflict, Forbidden, NotFound, ServiceError, ValidationError
from app.extensions import db
from app.mail import MailError, send_mail
from app.orgs.models import Invitation, Membership
from app.orgs.service import validate_role
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvitationUnavailable(ServiceError):
    """A link to an invitation that was accepted, revoked or has expired."""

    status = 410
    code = "invitation_unavailable"


class MailFailed(ServiceError):
    status = 502
    code = "mail_failed"


def validate_email(email):
    email = normalize_email(email)
    if not _EMAIL.match(email) or len(email) > 254:
        raise ValidationError(
            f"{email!r} is not a valid email address; use one such as ada@example.com.", {"email": "invalid"}
        )
    return email


def _pending(query, now):
    return query.where(Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None), Invitation.expires_at > now)


def list_pending(org_id):
    now = utcnow()
    return db.session.scalars(
        _pending(db.select(Invitation).where(Invitation.org_id == org_id), now).order_by(Invitation.id)
    ).all()


def get_invitation(org_id, invitation_id):
    invitation = db.session.scalar(
        db.select(Invitation).where(Invitation.org_id == org_id, Invitation.id == invitation_id)
    )
    if invitation is None:
        raise NotFound(f"No invitation with id {invitation_id} in this organization.")
    return invitation


def create_invitation(actor, actor_role, org, email, role, ip_address=""):
    """Store an invitation for `email` with `role`; return (invitation, raw token).

    Only owners invite owners. Pending invitations count toward the plan's member limit, so the
    members they would add cannot go over it.
    """
    if org.personal:
        raise Conflict(
            "A personal organization cannot be shared. Create an organization and invite people to that one."
        )
    email = validate_email(email)
    validate_role(role)
    if role == "owner" and actor_role != "owner":
        raise Forbidden("Only an owner can invite someone as an owner.")
    member = db.session.scalar(
        db.select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id, User.email == email)
    )
    if member is not None:
        raise Conflict(f"{email} is already a member of {org.name}.", {"email": "already a member"})
    now = utcnow()
    pending = db.session.scalars(_pending(db.select(Invitation).where(Invitation.org_id == org.id), now)).all()
    if any(invitation.email == email for invitation in pending):
        raise Conflict(
            f"{email} already has a pending invitation. Revoke it to send a new one.", {"email": "already invited"}
        )
    check_member_count(org.id, adding=len(pending) + 1)

    raw = secrets.token_urlsafe(32)
    invitation = Invitation(
        org_id=org.id,
        email=email,
        role=role,
        token_hash=hash_token(raw),
        invited_by_id=actor.id,
        created_at=now,
        expires_at=now + timedelta(days=current_app.config["INVITATION_EXPIRY_DAYS"]),
    )
    db.session.add(invitation)
    db.session.flush()
    record(
        "member.invited",
        actor=actor,
        target_type="invitation",
        target_id=invitation.id,
        org_id=org.id,
        details={"email": email, "role": role},
        ip_address=ip_address,
    )
    return invitation, raw


def send_invitation(invitation, accept_url):
    """Email the link; raise MailFailed (the caller rolls back) when the mail server fails."""
    org = invitation.organization
    inviter = invitation.invited_by
    inviter_name = (inviter.name or inviter.email) if inviter is not None else "Someone"
    body = (
        f"{inviter_name} invited you to join {org.name} on Floyo as {invitation.role}.\n\n"
        f"Accept the invitation here:\n{accept_url}\n\n"
        f"The link works once and expires at {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
        "If you did not expect it, ignore this email."
    )
    try:
        send_mail(invitation.email, f"Join {org.name} on Floyo", body)
    except MailError as error:
        raise MailFailed(f"The invitation email could not be sent, so no invitation was stored. {error}") from error


def revoke_invitation(actor, org, invitation_id, ip_address=""):
    invitation = get_invitation(org.id, invitation_id)
    status = invitation.status(utcnow())
    if status != "pending":
        raise Conflict(f"This invitation is {status}, so it cannot be revoked.")
    invitation.revoked_at = utcnow()
    record(
        "invitation.revoked",
        actor=actor,
        target_type="invitation",
        target_id=invitation.id,
        org_id=org.id,
        details={"email": invitation.email, "role": invitation.role},
        ip_address=ip_address,
    )
    return invitation


def find_invitation(raw_token):
    """Return the invitation of a link's token, whatever its status; NotFound for an unknown token."""
    invitation = None
    if raw_token:
        invitation = db.session.scalar(db.select(Invitation).where(Invitation.token_hash == hash_token(raw_token)))
    if invitation is None:
        raise NotFound("This invitation link is invalid. Check that you copied the whole link from the email.")
    return invitation


def check_usable(invitation):
    status = invitation.status(utcnow())
    messages = {
        "accepted": "This invitation was already used. Ask an admin of the organization for a new one.",
        "revoked": "This invitation was revoked. Ask an admin of the organization for a new one.",
        "expired": "This invitation has expired. Ask an admin of the organization for a new one.",
    }
    if status != "pending":
        raise InvitationUnavailable(messages[status], {"status": status})


def accept_invitation(user, raw_token, ip_address=""):
    """Make `user` a member with the invited role, once; return the new Membership."""
    invitation = find_invitation(raw_token)
    # Locks the row on PostgreSQL, so two accepts of one link cannot both pass the check below.
    db.session.refresh(invitation, with_for_update=True)
    check_usable(invitation)
    if normalize_email(user.email) != invitation.email:
        raise Forbidden(
            f"This invitation was sent to {invitation.email}, but you are signed in as {user.email}. "
            "Sign out and sign in with the invited address."
        )
    org = invitation.organization
    existing = db.session.scalar(
        db.select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
    )
    if existing is not None:
        raise Conflict(f"You are already a member of {org.name}.")
    check_member_count(org.id)

    membership = Membership(org_id=org.id, user_id=user.id, role=invitation.role)
    db.session.add(membership)
    invitation.accepted_at = utcnow()
    invitation.accepted_by_id = user.id
    record(
        "member.joined",
        actor=user,
        target_type="user",
        target_id=user.id,
        org_id=org.id,
        details={"invitation_id": invitation.id, "role": invitation.role},
        ip_address=ip_address,
    )
    db.session.flush()
    logger.info("invitation accepted invitation_id=%s org_id=%s user_id=%s", invitation.id, org.id, user.id)
    return membership
