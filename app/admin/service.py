"""Site administration: the audit log, and finding, editing, deactivating and deleting users and organizations.

Every function here is for site admins; the views and API routes check that before calling.
Nothing is committed here: the caller commits, so an action and its audit entry are stored together.
"""

import logging
import re
from datetime import timedelta

import sqlalchemy as sa

from app.admin.models import AuditEntry
from app.auth.models import ApiKey, User, UserSession
from app.auth.service import normalize_email
from app.errors import Conflict, NotFound, ValidationError
from app.events.models import Event
from app.extensions import db
from app.files.models import File
from app.files.service import delete_file
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow
from app.workflows.models import Workflow, WorkflowRun

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
USER_STATUSES = ("active", "disabled", "admin")
USER_SORTS = {
    "newest": (User.created_at.desc(), User.id.desc()),
    "oldest": (User.created_at.asc(), User.id.asc()),
    "email": (User.email.asc(), User.id.asc()),
    "name": (User.name.asc(), User.id.asc()),
}
ORG_SORTS = {
    "newest": (Organization.created_at.desc(), Organization.id.desc()),
    "oldest": (Organization.created_at.asc(), Organization.id.asc()),
    "name": (Organization.name.asc(), Organization.id.asc()),
}
# The plans of the billing settings; an organization without a billing account is on "free".
PLANS = ("free", "pro", "team")
# Read as a plain table: the billing models belong to the billing package and may be absent.
_BILLING = sa.table("billing_accounts", sa.column("org_id", sa.Integer), sa.column("plan", sa.String))
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# The audit log


def record(action, *, actor=None, target_type="", target_id="", org_id=None, details=None, ip_address=""):
    """Add an audit entry for `action` (a dotted name such as "user.deactivated"); the caller commits.

    `actor` is the User who acted, or None for the system. `details` is a small JSON object: name
    what changed, never a secret.
    """
    entry = AuditEntry(
        action=action,
        actor_id=actor.id if actor is not None else None,
        actor_email=actor.email if actor is not None else "",
        target_type=target_type,
        target_id="" if target_id is None else str(target_id),
        org_id=org_id,
        details=details or {},
        ip_address=(ip_address or "")[:64],
    )
    db.session.add(entry)
    logger.info(
        "audit action=%s actor_id=%s target=%s:%s org_id=%s", action, entry.actor_id, target_type, target_id, org_id
    )
    return entry


def list_audit_entries(action="", actor_id=None, target_type="", target_id="", before_id=None, limit=PAGE_SIZE):
    """Return up to `limit` entries, newest first, older than `before_id` when given, and whether more exist."""
    query = db.select(AuditEntry)
    if action:
        # A prefix such as "user." lists every action on users.
        query = query.where(AuditEntry.action.startswith(action, autoescape=True))
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if target_type:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id:
        query = query.where(AuditEntry.target_id == str(target_id))
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    entries = db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
    return entries[:limit], len(entries) > limit


def audit_entries_about_user(user_id, limit=20):
    """Return the newest entries the user made or that concern them."""
    query = (
        db.select(AuditEntry)
        .where(
            sa.or_(
                AuditEntry.actor_id == user_id,
                sa.and_(AuditEntry.target_type == "user", AuditEntry.target_id == str(user_id)),
            )
        )
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return db.session.scalars(query).all()


# Users


def plans_of(org_ids):
    """Return {org_id: plan} for these organizations; those without a billing account are on "free"."""
    plans = dict.fromkeys(org_ids, "free")
    if not org_ids or not _has_table("billing_accounts"):
        return plans
    rows = db.session.execute(sa.select(_BILLING.c.org_id, _BILLING.c.plan).where(_BILLING.c.org_id.in_(org_ids)))
    plans.update({org_id: plan for org_id, plan in rows})
    return plans


def _plan_filter(org_id_column, plan):
    """Return a WHERE clause that keeps organizations on `plan`."""
    if plan not in PLANS:
        raise ValidationError(f"Unknown plan {plan!r}; use one of {', '.join(PLANS)}.", {"plan": "unknown"})
    if not _has_table("billing_accounts"):
        return sa.true() if plan == "free" else sa.false()
    if plan == "free":
        return org_id_column.not_in(sa.select(_BILLING.c.org_id).where(_BILLING.c.plan != "free"))
    return org_id_column.in_(sa.select(_BILLING.c.org_id).where(_BILLING.c.plan == plan))


def search_users(query="", status="", plan="", sort="newest", offset=0, limit=PAGE_SIZE):
    """Return (users, total): `limit` users from `offset` of those matching the search text, status and plan."""
    if sort not in USER_SORTS:
        raise ValidationError(f"Unknown sort {sort!r}; use one of {', '.join(USER_SORTS)}.", {"sort": "unknown"})
    if status and status not in USER_STATUSES:
        raise ValidationError(
            f"Unknown status {status!r}; use one of {', '.join(USER_STATUSES)}.", {"status": "unknown"}
        )
    offset = max(offset, 0)

    select = db.select(User)
    text = (query or "").strip()
    if text:
        pattern = f"%{_escape_like(text.lower())}%"
        select = select.where(
            sa.or_(
                sa.func.lower(User.email).like(pattern, escape="\\"),
                sa.func.lower(User.name).like(pattern, escape="\\"),
            )
        )
    if status == "active":
        select = select.where(User.active.is_(True))
    elif status == "disabled":
        select = select.where(User.active.is_(False))
    elif status == "admin":
        select = select.where(User.is_admin.is_(True))
    if plan:
        # A user is on a plan when they own an organization on it.
        owner_ids = db.select(Membership.user_id).where(
            Membership.role == "owner", _plan_filter(Membership.org_id, plan)
        )
        select = select.where(User.id.in_(owner_ids))

    total = db.session.scalar(db.select(sa.func.count()).select_from(select.subquery()))
    users = db.session.scalars(select.order_by(*USER_SORTS[sort]).offset(offset).limit(limit)).all()
    return users, total


def get_user(user_id):
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return user


def user_overview(user):
    """Collect what the user page shows: organizations with roles, sessions, keys, usage and audit entries."""
    memberships = db.session.scalars(
        db.select(Membership).where(Membership.user_id == user.id).order_by(Membership.org_id)
    ).all()
    plans = plans_of([membership.org_id for membership in memberships])
    organizations = [
        {
            "id": membership.org_id,
            "name": membership.organization.name,
            "personal": membership.organization.personal,
            "role": membership.role,
            "plan": plans[membership.org_id],
            "members": _member_count(membership.org_id),
        }
        for membership in memberships
    ]
    sessions = db.session.scalars(
        db.select(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .order_by(UserSession.last_seen_at.desc())
    ).all()
    keys = db.session.scalars(db.select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id.desc())).all()
    since = utcnow() - timedelta(days=30)
    usage = {
        "events_total": db.session.scalar(db.select(sa.func.count()).where(Event.user_id == user.id)),
        "events_30_days": db.session.scalar(
            db.select(sa.func.count()).where(Event.user_id == user.id, Event.received_at >= since)
        ),
        "workflows_created": db.session.scalar(db.select(sa.func.count()).where(Workflow.created_by_id == user.id)),
        "runs_started": db.session.scalar(db.select(sa.func.count()).where(WorkflowRun.created_by_id == user.id)),
    }
    return {
        "user": user,
        "organizations": organizations,
        "sessions": sessions,
        "keys": keys,
        "usage": usage,
        "audit": audit_entries_about_user(user.id),
    }


def update_user(actor, user, name=None, email=None, is_admin=None, ip_address=""):
    """Change the user's name, email or admin flag; fields left as None stay. Records what changed."""
    errors = {}
    changes = {}
    if name is not None:
        name = name.strip()
        if len(name) > 120:
            errors["name"] = "Use at most 120 characters for the name."
        elif name != user.name:
            changes["name"] = name
    if email is not None:
        email = normalize_email(email)
        if not _EMAIL.match(email) or len(email) > 254:
            errors["email"] = "Enter a valid email address, such as ada@example.com."
        elif email != user.email:
            taken = db.session.scalar(db.select(User.id).where(User.email == email, User.id != user.id))
            if taken is not None:
                raise Conflict(f"Another account already uses {email}. Choose a different email.", {"email": "taken"})
            changes["email"] = email
    if is_admin is not None and bool(is_admin) != user.is_admin:
        if user.id == actor.id and not is_admin:
            errors["is_admin"] = "You cannot remove your own admin flag; ask another admin to do it."
        else:
            changes["is_admin"] = bool(is_admin)
    if errors:
        raise ValidationError("The user details are invalid.", errors)
    if not changes:
        return {}

    before = {field: getattr(user, field) for field in changes}
    for field, value in changes.items():
        setattr(user, field, value)
    record(
        "user.updated",
        actor=actor,
        target_type="user",
        target_id=user.id,
        details={"before": before, "after": changes},
        ip_address=ip_address,
    )
    return changes


def set_user_active(actor, user, active, ip_address=""):
    """Deactivate or reactivate a user; a deactivated user's sessions and API keys fail from their next request."""
    if user.id == actor.id and not active:
        raise ValidationError("You cannot deactivate your own account.", {"active": "self"})
    if user.active == active:
        return False
    user.active = active
    record(
        "user.reactivated" if active else "user.deactivated",
        actor=actor,
        target_type="user",
        target_id=user.id,
        details={"email": user.email},
        ip_address=ip_address,
    )
    return True


def deletion_plan(user):
    """Describe what deleting `user` removes and keeps.

    An organization the user owns together with another owner is kept (only the membership goes).
    Every other organization the user owns is deleted with all its data, even if it has
    members who are not owners. Organizations where the user is not an owner are kept.
    """
    deleted, kept = [], []
    memberships = db.session.scalars(
        db.select(Membership).where(Membership.user_id == user.id).order_by(Membership.org_id)
    ).all()
    for membership in memberships:
        org = membership.organization
        other_owners = db.session.scalar(
            db.select(sa.func.count()).where(
                Membership.org_id == org.id, Membership.role == "owner", Membership.user_id != user.id
            )
        )
        summary = {"id": org.id, "name": org.name, "role": membership.role, "members": _member_count(org.id)}
        if membership.role == "owner" and other_owners == 0:
            summary.update(org_usage(org.id))
            deleted.append(summary)
        else:
            kept.append(summary)
    keys = db.session.scalar(db.select(sa.func.count()).where(ApiKey.user_id == user.id))
    sessions = db.session.scalar(db.select(sa.func.count()).where(UserSession.user_id == user.id))
    return {"organizations_deleted": deleted, "organizations_kept": kept, "api_keys": keys, "sessions": sessions}


def delete_user(actor, user, confirm_email, ip_address=""):
    """Delete the user and the organizations only they own, once `confirm_email` repeats their email.

    Rows in other tables go by their foreign keys: organization data cascades, and rows that only
    name the user (events they sent to a kept organization, workflows they created) keep a NULL user.
    """
    if user.id == actor.id:
        raise ValidationError("You cannot delete your own account from the admin console.", {"user": "self"})
    if normalize_email(confirm_email) != user.email:
        raise ValidationError(
            f"Type the user's email, {user.email}, to confirm the deletion.", {"confirm_email": "does not match"}
        )
    plan = deletion_plan(user)
    org_ids = [org["id"] for org in plan["organizations_deleted"]]
    record(
        "user.deleted",
        actor=actor,
        target_type="user",
        target_id=user.id,
        details={
            "email": user.email,
            "organizations_deleted": [{"id": org["id"], "name": org["name"]} for org in plan["organizations_deleted"]],
            "organizations_kept": [org["id"] for org in plan["organizations_kept"]],
        },
        ip_address=ip_address,
    )
    user_id = user.id
    delete_user_rows(user, org_ids)
    logger.info("user deleted user_id=%s organizations_deleted=%s", user_id, org_ids)
    return plan


def delete_user_rows(user, org_ids):
    """Delete the user and the organizations `org_ids` with their files; the caller commits.

    The files' bytes (local disk or S3) go after the commit, as when a user deletes a file. The
    rows go by bulk deletes and the database's ON DELETE rules. The flush first writes pending
    rows (such as the audit entry, which names the user), and expunging the user keeps the ORM
    from writing it back.
    """
    for stored in db.session.scalars(db.select(File).where(File.org_id.in_(org_ids))).all():
        delete_file(stored.org_id, stored)
    user_id = user.id
    db.session.flush()
    db.session.expunge(user)
    if org_ids:
        db.session.execute(sa.delete(Organization).where(Organization.id.in_(org_ids)))
    db.session.execute(sa.delete(User).where(User.id == user_id))


# Organizations


def search_orgs(query="", plan="", sort="newest", offset=0, limit=PAGE_SIZE):
    """Return (organizations, total): `limit` organizations from `offset` of those matching the name and plan."""
    if sort not in ORG_SORTS:
        raise ValidationError(f"Unknown sort {sort!r}; use one of {', '.join(ORG_SORTS)}.", {"sort": "unknown"})
    offset = max(offset, 0)
    select = db.select(Organization)
    text = (query or "").strip()
    if text:
        pattern = f"%{_escape_like(text.lower())}%"
        select = select.where(sa.func.lower(Organization.name).like(pattern, escape="\\"))
    if plan:
        select = select.where(_plan_filter(Organization.id, plan))
    total = db.session.scalar(db.select(sa.func.count()).select_from(select.subquery()))
    orgs = db.session.scalars(select.order_by(*ORG_SORTS[sort]).offset(offset).limit(limit)).all()
    return orgs, total


def get_org(org_id):
    org = db.session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"No organization with id {org_id}.")
    return org


def org_usage(org_id):
    """Count an organization's events, workflows, runs and stored bytes."""
    since = utcnow() - timedelta(days=30)
    return {
        "events_total": db.session.scalar(db.select(sa.func.count()).where(Event.org_id == org_id)),
        "events_30_days": db.session.scalar(
            db.select(sa.func.count()).where(Event.org_id == org_id, Event.received_at >= since)
        ),
        "workflows": db.session.scalar(db.select(sa.func.count()).where(Workflow.org_id == org_id)),
        "runs_total": db.session.scalar(db.select(sa.func.count()).where(WorkflowRun.org_id == org_id)),
        "storage_bytes": db.session.scalar(
            db.select(sa.func.coalesce(sa.func.sum(File.size), 0)).where(
                File.org_id == org_id, File.deleted_at.is_(None)
            )
        ),
    }


def org_overview(org):
    members = db.session.execute(
        db.select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id)
        .order_by(Membership.id)
    ).all()
    return {
        "org": org,
        "plan": plans_of([org.id])[org.id],
        "members": [
            {"user": user, "role": membership.role, "since": membership.created_at} for membership, user in members
        ],
        "usage": org_usage(org.id),
        "audit": list_audit_entries(target_type="organization", target_id=org.id, limit=20)[0],
    }


# Helpers


def _member_count(org_id):
    return db.session.scalar(db.select(sa.func.count()).where(Membership.org_id == org_id))


def _escape_like(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_table(name):
    return sa.inspect(db.engine).has_table(name)
