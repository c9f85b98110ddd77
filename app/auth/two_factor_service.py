"""Two-factor sign-in with time-based one-time passwords (TOTP, RFC 6238) and backup codes.

TOTP secrets are encrypted at rest with the integration-secret keys (`app.integrations.crypto`).
Backup codes are stored as SHA-256 hashes salted with the user id. Nothing here commits: the
caller commits, so a change and its audit entry are stored together.
"""

import hashlib
import hmac
import logging
import re
import secrets
import time
from datetime import timedelta

import pyotp
import qrcode
import qrcode.image.svg
from pyotp.exceptions import OTPVerificationError

from app.auth.models import BackupCode, User, UserSession
from app.errors import Conflict, ValidationError
from app.extensions import db
from app.integrations.crypto import decrypt_secrets, encrypt_secrets
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

ISSUER = "Floyo"
# Codes of the time steps before and after the current one are accepted too, to allow for up to
# 30 seconds of clock drift either way. Codes two steps away are rejected.
VALID_WINDOW = 1
BACKUP_CODE_COUNT = 10
# 12 characters of the base32 alphabet: 60 random bits per code, shown as xxxx-xxxx-xxxx.
BACKUP_CODE_LENGTH = 12
_BACKUP_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# A session waiting for its code is abandoned after this long; the password must be given again.
PENDING_SESSION_LIFETIME = timedelta(minutes=10)
_TOTP_CODE = re.compile(r"^[0-9]{6}$")
_SEPARATORS = re.compile(r"[\s-]")

INVALID_CODE_MESSAGE = (
    "The code is invalid or was already used. Enter the current 6-digit code from the authenticator app, "
    "or an unused backup code."
)


def current_time():
    """Return the Unix time that codes are checked against; tests replace it to freeze the clock."""
    return time.time()


def _totp(secret):
    return pyotp.TOTP(secret)


def _encrypt(secret):
    return encrypt_secrets({"totp_secret": secret})


def _decrypt(token):
    # Raises SecretsUnreadable when no key of SECRET_ENCRYPTION_KEYS decrypts the token.
    return decrypt_secrets(token)["totp_secret"]


def _normalize(code):
    return _SEPARATORS.sub("", (code or "").strip().lower())


# Enrolment


def pending_secret(user):
    """Return the secret being enrolled for `user`, creating one first if there is none."""
    if user.totp_pending_secret_encrypted:
        return _decrypt(user.totp_pending_secret_encrypted)
    secret = pyotp.random_base32()
    user.totp_pending_secret_encrypted = _encrypt(secret)
    logger.info("two-factor enrolment started user_id=%s", user.id)
    return secret


def provisioning_uri(user, secret):
    return _totp(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_code_svg(uri):
    """Render `uri` as an inline SVG QR code (paths only, no script, no XML declaration)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    return image.to_string(encoding="unicode")


def enable(user, code):
    """Turn two-factor on after a correct code from the pending secret; return the new backup codes.

    Raises ValidationError for a wrong code, leaving everything unchanged.
    """
    if user.two_factor_enabled:
        raise Conflict("Two-factor sign-in is already on for this account.")
    if not user.totp_pending_secret_encrypted:
        raise ValidationError("Open the two-factor settings page to get a secret first.", {"code": "no secret"})
    secret = _decrypt(user.totp_pending_secret_encrypted)
    step = _matching_step(secret, code)
    if step is None:
        raise ValidationError(
            "The code is invalid. Enter the 6-digit code the authenticator app shows now.", {"code": "invalid"}
        )

    user.totp_secret_encrypted = user.totp_pending_secret_encrypted
    user.totp_pending_secret_encrypted = None
    user.two_factor_enabled_at = utcnow()
    user.totp_last_used_step = step
    codes = _replace_backup_codes(user)
    logger.info("two-factor enabled user_id=%s", user.id)
    return codes


def disable(user, code):
    """Turn two-factor off after a correct TOTP or backup code.

    Raises Conflict while an organization of the user requires two-factor, and ValidationError for
    a wrong code; both leave everything unchanged.
    """
    _require_enabled(user)
    requiring = organizations_requiring(user)
    if requiring:
        names = ", ".join(org.name for org in requiring)
        raise Conflict(
            f"Two-factor sign-in cannot be turned off: it is required by {names}. "
            "Ask an owner or admin there to lift the requirement, or leave the organization first."
        )
    if verify_second_factor(user, code) is None:
        raise ValidationError(INVALID_CODE_MESSAGE, {"code": "invalid"})

    user.totp_secret_encrypted = None
    user.totp_pending_secret_encrypted = None
    user.two_factor_enabled_at = None
    user.totp_last_used_step = None
    db.session.execute(db.delete(BackupCode).where(BackupCode.user_id == user.id))
    logger.info("two-factor disabled user_id=%s", user.id)


def regenerate_backup_codes(user, code):
    """Replace every backup code after a correct TOTP or backup code; return the new codes."""
    _require_enabled(user)
    if verify_second_factor(user, code) is None:
        raise ValidationError(INVALID_CODE_MESSAGE, {"code": "invalid"})
    codes = _replace_backup_codes(user)
    logger.info("backup codes regenerated user_id=%s", user.id)
    return codes


def unused_backup_code_count(user):
    return db.session.scalar(
        db.select(db.func.count(BackupCode.id)).where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None))
    )


def _require_enabled(user):
    if not user.two_factor_enabled:
        raise Conflict("Two-factor sign-in is off for this account. Turn it on first.")


# Checking codes


def verify_second_factor(user, code):
    """Check a TOTP or backup code and use it up; return "totp", "backup" or None when it is wrong.

    A TOTP code is accepted once: its time step is stored, and codes of that step or earlier ones
    are rejected afterwards. A backup code is marked used.
    """
    if not user.two_factor_enabled:
        return None
    normalized = _normalize(code)
    if _TOTP_CODE.match(normalized):
        return "totp" if _use_totp_code(user, normalized) else None
    if len(normalized) == BACKUP_CODE_LENGTH:
        return "backup" if _use_backup_code(user, normalized) else None
    return None


def _matching_step(secret, code):
    """Return the time step whose code equals `code` within the valid window, or None."""
    normalized = _normalize(code)
    if not _TOTP_CODE.match(normalized):
        return None
    try:
        return _totp(secret).verify_and_get_timecode(normalized, for_time=current_time(), valid_window=VALID_WINDOW)
    except OTPVerificationError:
        return None


def _use_totp_code(user, code):
    step = _matching_step(_decrypt(user.totp_secret_encrypted), code)
    if step is None:
        return False
    # One conditional UPDATE, so two requests racing with the same code cannot both succeed.
    result = db.session.execute(
        db.update(User)
        .where(
            User.id == user.id,
            db.or_(User.totp_last_used_step.is_(None), User.totp_last_used_step < step),
        )
        .values(totp_last_used_step=step)
    )
    if result.rowcount != 1:
        logger.info("two-factor code replayed user_id=%s step=%s", user.id, step)
        return False
    user.totp_last_used_step = step
    return True


def _hash_backup_code(user_id, normalized):
    return hashlib.sha256(f"{user_id}:{normalized}".encode()).hexdigest()


def _use_backup_code(user, normalized):
    digest = _hash_backup_code(user.id, normalized)
    candidates = db.session.scalars(
        db.select(BackupCode).where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None))
    ).all()
    match = next((code for code in candidates if hmac.compare_digest(code.code_hash, digest)), None)
    if match is None:
        return False
    result = db.session.execute(
        db.update(BackupCode)
        .where(BackupCode.id == match.id, BackupCode.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:
        return False
    logger.info("backup code used user_id=%s remaining=%s", user.id, len(candidates) - 1)
    return True


def _replace_backup_codes(user):
    db.session.execute(db.delete(BackupCode).where(BackupCode.user_id == user.id))
    codes = []
    for _ in range(BACKUP_CODE_COUNT):
        raw = "".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(BACKUP_CODE_LENGTH))
        db.session.add(BackupCode(user_id=user.id, code_hash=_hash_backup_code(user.id, raw)))
        codes.append(f"{raw[0:4]}-{raw[4:8]}-{raw[8:12]}")
    return codes


# Sign-in


def find_pending_session(key):
    """Return the live session with this key that still waits for its code, or None."""
    if not key:
        return None
    from app.auth.service import hash_token

    user_session = db.session.scalar(
        db.select(UserSession).where(
            UserSession.key_hash == hash_token(key),
            UserSession.revoked_at.is_(None),
            UserSession.two_factor_pending.is_(True),
        )
    )
    if user_session is None or not user_session.user.active:
        return None
    if utcnow() - user_session.created_at > PENDING_SESSION_LIFETIME:
        return None
    return user_session


def rotate_secrets():
    """Re-encrypt every stored TOTP secret with the first key of SECRET_ENCRYPTION_KEYS; return the count."""
    from app.integrations.crypto import rotate_token

    count = 0
    users = db.session.scalars(
        db.select(User).where(
            db.or_(User.totp_secret_encrypted.is_not(None), User.totp_pending_secret_encrypted.is_not(None))
        )
    )
    for user in users:
        if user.totp_secret_encrypted:
            user.totp_secret_encrypted = rotate_token(user.totp_secret_encrypted)
        if user.totp_pending_secret_encrypted:
            user.totp_pending_secret_encrypted = rotate_token(user.totp_pending_secret_encrypted)
        count += 1
    return count


# Organizations


def organizations_requiring(user):
    return db.session.scalars(
        db.select(Organization)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user.id, Organization.require_two_factor.is_(True))
        .order_by(Organization.id)
    ).all()


def organization_requires(org_id):
    return bool(db.session.scalar(db.select(Organization.require_two_factor).where(Organization.id == org_id)))


def set_organization_requirement(org, required, actor):
    """Require two-factor for every member of `org`, or lift the requirement; return whether it changed.

    Raises Conflict when `actor` has no two-factor yet, so requiring it never sends the owner or
    admin who set it to enrolment.
    """
    if required and not actor.two_factor_enabled:
        raise Conflict("Turn on two-factor sign-in for your own account before requiring it for the organization.")
    changed = org.require_two_factor != required
    org.require_two_factor = required
    logger.info("two-factor requirement set org_id=%s required=%s user_id=%s", org.id, required, actor.id)
    return changed
