"""Accounts, server-side sessions and API keys."""

import hashlib
import hmac
import logging
import re
import secrets
from datetime import timedelta

from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth.models import ApiKey, User, UserSession
from app.auth.scopes import DEFAULT_SCOPES, MAX_EXPIRY_DAYS, check_scopes_for_role, parse_scopes
from app.errors import Conflict, NotFound, ValidationError
from app.extensions import db
from app.orgs.models import Membership, Organization
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200
API_KEY_PREFIX = "floyo_"
# Timestamps of use are written at most this often, so busy keys and sessions don't write per request.
TOUCH_INTERVAL = timedelta(seconds=60)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Checked against when the email is unknown, so a sign-in takes as long whether or not it exists.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def hash_token(raw):
    return hashlib.sha256(raw.encode()).hexdigest()


def normalize_email(email):
    return (email or "").strip().lower()


def validate_credentials(email, password):
    errors = {}
    if not _EMAIL.match(email) or len(email) > 254:
        errors["email"] = "Enter a valid email address, such as ada@example.com."
    if len(password) < MIN_PASSWORD_LENGTH:
        errors["password"] = f"Use at least {MIN_PASSWORD_LENGTH} characters for the password."
    elif len(password) > MAX_PASSWORD_LENGTH:
        errors["password"] = f"Use at most {MAX_PASSWORD_LENGTH} characters for the password."
    if errors:
        raise ValidationError("The account details are invalid.", errors)


def create_user(email, password, name="", is_admin=False):
    """Create a user with a personal organization that they own. The caller commits."""
    email = normalize_email(email)
    validate_credentials(email, password)
    if db.session.scalar(db.select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this email already exists. Sign in instead.", {"email": "already registered"})

    user = User(email=email, password_hash=generate_password_hash(password), name=name.strip(), is_admin=is_admin)
    organization = Organization(name=f"{name.strip() or email.split('@')[0]}'s workspace", personal=True)
    db.session.add_all([user, organization])
    db.session.add(Membership(user=user, organization=organization, role="owner"))
    db.session.flush()
    logger.info("user created user_id=%s org_id=%s", user.id, organization.id)
    return user


def authenticate(email, password):
    """Return the user whose email and password match, or None."""
    user = db.session.scalar(db.select(User).where(User.email == normalize_email(email)))
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    return user


def start_session(user, user_agent="", ip_address=""):
    """Open a server-side session for `user` and return the key the cookie will carry."""
    key = secrets.token_urlsafe(32)
    user_session = UserSession(
        user_id=user.id,
        key_hash=hash_token(key),
        user_agent=(user_agent or "")[:300],
        ip_address=(ip_address or "")[:64],
    )
    db.session.add(user_session)
    db.session.flush()
    user.session_key = key
    user.user_session = user_session
    return key


def load_session_user(key):
    """Return the active user of the session with this key, or None if it is revoked or unknown.

    A session still waiting for its two-factor code returns None too, so it signs nothing in.
    """
    if not key:
        return None
    user_session = db.session.scalar(
        db.select(UserSession)
        .options(joinedload(UserSession.user))
        .where(
            UserSession.key_hash == hash_token(key),
            UserSession.revoked_at.is_(None),
            UserSession.two_factor_pending.is_(False),
        )
    )
    if user_session is None or not user_session.user.active:
        return None
    now = utcnow()
    if now - user_session.last_seen_at > TOUCH_INTERVAL:
        user_session.last_seen_at = now
        db.session.commit()
    user = user_session.user
    user.session_key = key
    user.user_session = user_session
    return user


def list_sessions(user):
    return db.session.scalars(
        db.select(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    ).all()


def revoke_session(user, session_id):
    user_session = db.session.scalar(
        db.select(UserSession).where(UserSession.id == session_id, UserSession.user_id == user.id)
    )
    if user_session is None:
        raise NotFound("That session was not found.")
    if user_session.revoked_at is None:
        user_session.revoked_at = utcnow()
    logger.info("session revoked user_id=%s session_id=%s", user.id, session_id)
    return user_session


def revoke_other_sessions(user, keep_session_id):
    now = utcnow()
    revoked = 0
    for user_session in list_sessions(user):
        if user_session.id != keep_session_id:
            user_session.revoked_at = now
            revoked += 1
    logger.info("other sessions revoked user_id=%s count=%s", user.id, revoked)
    return revoked


def create_api_key(user, org_id, name, scopes=DEFAULT_SCOPES, expires_in_days=None, ip_address=""):
    """Create a key and return (raw key, ApiKey). The raw key is never stored.

    `scopes` must be allowed to the user's current role in the organization (see
    `app.auth.scopes.ROLE_SCOPES`); `expires_in_days` is None for a key that never expires.
    Adds an `api_key.created` audit entry; the caller commits.
    """
    from app.admin.service import record

    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the key a name, such as 'laptop agent'.", {"name": "missing"})
    if len(name) > 100:
        raise ValidationError("Use at most 100 characters for the key name.", {"name": "too long"})
    scopes = parse_scopes(scopes)
    check_scopes_for_role(scopes, role_in(user, org_id))
    expires_at = None
    if expires_in_days is not None:
        if isinstance(expires_in_days, bool) or not isinstance(expires_in_days, int):
            raise ValidationError("Give the expiry as a whole number of days.", {"expires_in_days": "not an integer"})
        if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise ValidationError(
                f"Give an expiry between 1 and {MAX_EXPIRY_DAYS} days, or none for a key that never expires.",
                {"expires_in_days": "out of range"},
            )
        expires_at = utcnow() + timedelta(days=expires_in_days)

    prefix = API_KEY_PREFIX + secrets.token_hex(4)
    raw = f"{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey(
        org_id=org_id,
        user_id=user.id,
        name=name,
        prefix=prefix,
        key_hash=hash_token(raw),
        scopes=",".join(scopes),
        expires_at=expires_at,
    )
    db.session.add(api_key)
    db.session.flush()
    record(
        "api_key.created",
        actor=user,
        target_type="api_key",
        target_id=api_key.id,
        org_id=org_id,
        details={"name": name, "prefix": prefix, "scopes": scopes, "expires_at": _iso(expires_at)},
        ip_address=ip_address,
    )
    logger.info(
        "api key created user_id=%s org_id=%s key_id=%s prefix=%s scopes=%s",
        user.id,
        org_id,
        api_key.id,
        prefix,
        api_key.scopes,
    )
    return raw, api_key


def _iso(moment):
    return moment.isoformat() if moment is not None else None


def role_in(user, org_id):
    """Return the user's role in the organization, or None if they are not a member."""
    return db.session.scalar(
        db.select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user.id)
    )


def list_api_keys(user, org_id, all_users=False):
    """Return the user's keys in the organization, newest first; every user's with `all_users`.

    The caller checks that the user may see every key (the admin role).
    """
    select = db.select(ApiKey).where(ApiKey.org_id == org_id)
    if not all_users:
        select = select.where(ApiKey.user_id == user.id)
    return db.session.scalars(select.order_by(ApiKey.id.desc())).all()


def revoke_api_key(user, org_id, key_id, any_user=False, ip_address=""):
    """Revoke a key of the user in the organization, or of anyone in it with `any_user`.

    The caller checks that the user may revoke other users' keys (the admin role). Another
    organization's key, or another user's without `any_user`, raises NotFound. Adds an
    `api_key.revoked` audit entry when the key was live; the caller commits.
    """
    from app.admin.service import record

    select = db.select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id)
    if not any_user:
        select = select.where(ApiKey.user_id == user.id)
    api_key = db.session.scalar(select)
    if api_key is None:
        raise NotFound("That API key was not found.")
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        record(
            "api_key.revoked",
            actor=user,
            target_type="api_key",
            target_id=api_key.id,
            org_id=org_id,
            details={"name": api_key.name, "prefix": api_key.prefix, "owner_user_id": api_key.user_id},
            ip_address=ip_address,
        )
    logger.info("api key revoked user_id=%s org_id=%s key_id=%s", user.id, org_id, key_id)
    return api_key


def check_api_key(raw):
    """Return (ApiKey, None) for a live key, or (None, reason) with reason "invalid" or "expired".

    A key is invalid when unknown, revoked, of a deactivated user or of a user who has left its
    organization. A live key's `last_used_at` is updated at most once per TOUCH_INTERVAL.
    """
    if not raw.startswith(API_KEY_PREFIX) or len(raw) > 200:
        return None, "invalid"
    digest = hash_token(raw)
    api_key = db.session.scalar(db.select(ApiKey).where(ApiKey.key_hash == digest))
    if api_key is None or not hmac.compare_digest(api_key.key_hash, digest):
        return None, "invalid"
    if api_key.revoked_at is not None or not api_key.user.active:
        return None, "invalid"
    if role_in(api_key.user, api_key.org_id) is None:
        return None, "invalid"
    now = utcnow()
    if api_key.is_expired(now):
        return None, "expired"
    if api_key.last_used_at is None or now - api_key.last_used_at > TOUCH_INTERVAL:
        api_key.last_used_at = now
        db.session.commit()
    return api_key, None


def authenticate_api_key(raw):
    """Return the live ApiKey for a raw key, or None (unknown, revoked, expired or orphaned)."""
    api_key, _ = check_api_key(raw)
    return api_key


def find_user_by_email(email):
    return db.session.scalar(db.select(User).where(User.email == normalize_email(email)))
