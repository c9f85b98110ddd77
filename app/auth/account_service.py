"""The account lifecycle: email verification, password reset and change, email change, deletion.

Links sent by email carry a random token. The `account_tokens` table stores only its SHA-256 hash,
with the purpose, the address the link was sent to, an expiry and the time it was used. Nothing here
commits: the caller commits, then sends the email, so a link never points at an unsaved token.
"""

import logging
import re
import secrets

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from app.admin import service as audit
from app.auth.models import AccountToken, User, UserSession
from app.auth.service import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, find_user_by_email, hash_token, normalize_email
from app.errors import Conflict, ServiceError, ValidationError
from app.extensions import db
from app.mail import send_mail
from app.orgs.models import Organization
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
CHANGE_EMAIL = "change_email"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidLink(ServiceError):
    """An emailed link whose token is unknown, already used or expired."""

    status = 400
    code = "invalid_link"


# Tokens


def issue_token(user, purpose, email, lifetime):
    """Store a new token for `user` and return its raw value; earlier unused tokens of the purpose stop working."""
    db.session.execute(
        sa.delete(AccountToken).where(
            AccountToken.user_id == user.id, AccountToken.purpose == purpose, AccountToken.used_at.is_(None)
        )
    )
    raw = secrets.token_urlsafe(32)
    db.session.add(
        AccountToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=hash_token(raw),
            email=email,
            expires_at=utcnow() + lifetime,
        )
    )
    db.session.flush()
    return raw


def find_token(raw, purpose):
    """Return the live token with this raw value and purpose; raise InvalidLink when it cannot be used."""
    token = None
    if raw and len(raw) <= 100:
        token = db.session.scalar(
            db.select(AccountToken).where(AccountToken.token_hash == hash_token(raw), AccountToken.purpose == purpose)
        )
    if token is None:
        raise InvalidLink("This link is invalid. Copy the whole link from the email, or ask for a new one.")
    if token.used_at is not None:
        raise InvalidLink("This link was already used. Ask for a new one if you still need it.")
    if token.expires_at <= utcnow():
        raise InvalidLink("This link has expired. Ask for a new one.")
    return token


def _use_token(raw, purpose):
    token = find_token(raw, purpose)
    token.used_at = utcnow()
    return token


# Passwords


def validate_password(password, field="password"):
    password = password or ""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"Use at least {MIN_PASSWORD_LENGTH} characters for the password.", {field: "too short"})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError(f"Use at most {MAX_PASSWORD_LENGTH} characters for the password.", {field: "too long"})


def check_current_password(user, password):
    if not check_password_hash(user.password_hash, password or ""):
        raise ValidationError("The current password is wrong.", {"current_password": "wrong"})


def revoke_all_sessions(user):
    """Revoke every session of `user`, which also ends every remember-me cookie (it carries a session key)."""
    result = db.session.execute(
        sa.update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount


def change_password(user, current_password, new_password, ip_address=""):
    """Set a new password after checking the current one, and revoke every session of the user.

    The caller starts a new session for the browser that made the change.
    """
    check_current_password(user, current_password)
    validate_password(new_password)
    user.password_hash = generate_password_hash(new_password)
    revoked = revoke_all_sessions(user)
    audit.record("auth.password_changed", actor=user, target_type="user", target_id=user.id, ip_address=ip_address)
    logger.info("password changed user_id=%s sessions_revoked=%s", user.id, revoked)
    return revoked


def request_password_reset(email, lifetime, ip_address=""):
    """Return (user, raw token) for an account with this email, or (None, None) when there is none."""
    user = find_user_by_email(email)
    if user is None or not user.active:
        return None, None
    raw = issue_token(user, RESET_PASSWORD, user.email, lifetime)
    audit.record(
        "auth.password_reset_requested", actor=user, target_type="user", target_id=user.id, ip_address=ip_address
    )
    logger.info("password reset requested user_id=%s", user.id)
    return user, raw


def reset_password(raw, new_password, ip_address=""):
    """Set the password of the token's user, use up the token and revoke every session; return the user."""
    token = find_token(raw, RESET_PASSWORD)
    validate_password(new_password)
    token.used_at = utcnow()
    user = token.user
    user.password_hash = generate_password_hash(new_password)
    revoked = revoke_all_sessions(user)
    audit.record("auth.password_reset", actor=user, target_type="user", target_id=user.id, ip_address=ip_address)
    logger.info("password reset user_id=%s sessions_revoked=%s", user.id, revoked)
    return user


# Email verification and change


def start_email_verification(user, lifetime):
    """Return a raw token that verifies the user's current email."""
    return issue_token(user, VERIFY_EMAIL, user.email, lifetime)


def verify_email(raw, ip_address=""):
    """Mark the token's address verified when it is still the user's email; return the user."""
    token = _use_token(raw, VERIFY_EMAIL)
    user = token.user
    if token.email != user.email:
        raise InvalidLink("This link was sent to an address that is no longer the email of the account.")
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        audit.record(
            "auth.email_verified",
            actor=user,
            target_type="user",
            target_id=user.id,
            details={"email": user.email},
            ip_address=ip_address,
        )
        logger.info("email verified user_id=%s", user.id)
    return user


def _check_new_email(user, new_email):
    if not _EMAIL.match(new_email) or len(new_email) > 254:
        raise ValidationError("Enter a valid email address, such as ada@example.com.", {"email": "invalid"})
    if new_email == user.email:
        raise ValidationError("This is already the email of your account.", {"email": "unchanged"})
    existing_user_id = db.session.scalar(db.select(User.id).where(User.email == new_email, User.id != user.id))
    if existing_user_id is not None:
        raise Conflict("Another account uses this email. Choose another address.", {"email": "already registered"})


def request_email_change(user, current_password, new_email, lifetime, ip_address=""):
    """Return a raw token that moves the account to `new_email` once its link is opened."""
    check_current_password(user, current_password)
    new_email = normalize_email(new_email)
    _check_new_email(user, new_email)
    raw = issue_token(user, CHANGE_EMAIL, new_email, lifetime)
    audit.record(
        "auth.email_change_requested",
        actor=user,
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "new_email": new_email},
        ip_address=ip_address,
    )
    logger.info("email change requested user_id=%s", user.id)
    return raw, new_email


def confirm_email_change(raw, ip_address=""):
    """Move the account to the token's address, which opening the link verified; return (user, old email)."""
    token = _use_token(raw, CHANGE_EMAIL)
    user = token.user
    old_email = user.email
    _check_new_email(user, token.email)
    user.email = token.email
    user.email_verified_at = utcnow()
    audit.record(
        "auth.email_changed",
        actor=user,
        target_type="user",
        target_id=user.id,
        details={"old_email": old_email, "email": user.email},
        ip_address=ip_address,
    )
    logger.info("email changed user_id=%s", user.id)
    return user, old_email


# Deleting the account


def organizations_blocking_deletion(user):
    """Return the non-personal organizations the user alone owns that still have other members."""
    return [
        org
        for org in audit.deletion_plan(user)["organizations_deleted"]
        if org["members"] > 1 and not db.session.get(Organization, org["id"]).personal
    ]


def delete_account(user, confirm_email, current_password, ip_address=""):
    """Delete the user, their personal organization and every organization they alone belong to.

    Organizations with another owner keep their data; only the membership goes. Stored file bytes
    (local disk or S3) of deleted organizations are removed by the files service after the commit.
    """
    if normalize_email(confirm_email) != user.email:
        raise ValidationError(
            f"Type your email, {user.email}, to confirm the deletion.", {"confirm_email": "does not match"}
        )
    check_current_password(user, current_password)
    blocking = organizations_blocking_deletion(user)
    if blocking:
        names = ", ".join(org["name"] for org in blocking)
        raise Conflict(
            f"You are the only owner of {names}, which has other members. Make another member an owner "
            "or delete the organization first.",
            {"organizations": [org["id"] for org in blocking]},
        )

    from app.billing.service import has_paid_subscription

    plan = audit.deletion_plan(user)
    paying = [org["name"] for org in plan["organizations_deleted"] if has_paid_subscription(org["id"])]
    if paying:
        raise Conflict(
            f"{', '.join(paying)} still has a paid subscription. Cancel it in Billing before deleting your "
            "account, so that it is not charged again.",
            {"organizations": paying},
        )
    org_ids = [org["id"] for org in plan["organizations_deleted"]]
    audit.record(
        "auth.account_deleted",
        actor=user,
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "organizations_deleted": org_ids},
        ip_address=ip_address,
    )
    user_id = user.id
    audit.delete_user_rows(user, org_ids)
    logger.info("account deleted user_id=%s organizations_deleted=%s", user_id, org_ids)
    return plan


# Email messages


def send_verification_email(email, link, hours):
    send_mail(
        email,
        "Verify your email for Floyo",
        f"Open this link to verify your email address for Floyo:\n\n{link}\n\n"
        f"The link works once and expires in {hours} hours. If you did not create a Floyo account, "
        "ignore this email.",
    )


def send_password_reset_email(email, link, minutes):
    send_mail(
        email,
        "Reset your Floyo password",
        f"Open this link to choose a new Floyo password:\n\n{link}\n\n"
        f"The link works once and expires in {minutes} minutes. Setting a new password signs out every "
        "browser. If you did not ask for this, ignore this email: your password stays the same.",
    )


def send_email_change_emails(old_email, new_email, link, hours):
    send_mail(
        new_email,
        "Confirm your new email for Floyo",
        f"Open this link to make {new_email} the email of your Floyo account:\n\n{link}\n\n"
        f"The link works once and expires in {hours} hours. Until then the account keeps its current email.",
    )
    send_mail(
        old_email,
        "Your Floyo email is about to change",
        f"Someone signed in to your Floyo account asked to change its email to {new_email}. The change "
        "applies when the link sent to the new address is opened. If this was not you, change your "
        "password now.",
    )


def send_email_changed_notice(old_email, new_email):
    send_mail(
        old_email,
        "Your Floyo email was changed",
        f"The email of your Floyo account is now {new_email}. If you did not make this change, contact "
        "the administrator of this Floyo installation.",
    )


# Sessions


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Android", "Android"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_user_agent(user_agent):
    """Name the browser and operating system of a User-Agent header, such as "Firefox on Linux".

    Checks are ordered because browsers name each other: Edge and Opera also send "Chrome/", and
    Chrome also sends "Safari/"; Android also sends "Linux".
    """
    user_agent = user_agent or ""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), None)
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or system
    return user_agent[:60] or "Unknown device"
