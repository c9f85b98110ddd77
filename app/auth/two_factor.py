"""Two-factor sign-in pages: enrolment and backup codes in settings, the code step of sign-in, and
the organization requirement.

The routes live on the `auth` blueprint; `app.auth.views` imports this module to register them.
"""

import logging

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user

from app.admin.service import record
from app.auth import two_factor_service as service
from app.auth.forms import EmptyForm, OrganizationTwoFactorForm, TwoFactorCodeForm
from app.auth.views import bp, safe_next
from app.errors import ServiceError
from app.extensions import db
from app.htmx import hx_redirect
from app.orgs.access import current_membership, role_allows, role_required
from app.orgs.service import current_org
from app.ratelimit import enforce, uncount
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

# Flask session entries kept between the password step and the code step.
PENDING_KEY = "two_factor_session_key"
PENDING_REMEMBER = "two_factor_remember"
PENDING_NEXT = "two_factor_next"
# Endpoints outside the `auth` blueprint that a member of an organization requiring two-factor
# may still open before enrolling.
_ALWAYS_REACHABLE = {"static"}


def _client_address():
    return request.remote_addr or ""


def _enforce_code_rate_limit(user):
    """Count one code attempt of `user` from this address; raises RateLimited (429) past the limit."""
    limit = current_app.config["TWO_FACTOR_RATE_LIMIT"]
    window = current_app.config["TWO_FACTOR_RATE_WINDOW_SECONDS"]
    message = "Too many two-factor code attempts."
    enforce(f"two-factor:ip:{_client_address()}", limit * 5, window, message)
    enforce(f"two-factor:user:{user.id}", limit, window, message)


def _uncount_code_attempt(user):
    """Take back a correct code's attempt, so that only wrong codes use up the limit."""
    window = current_app.config["TWO_FACTOR_RATE_WINDOW_SECONDS"]
    uncount(f"two-factor:ip:{_client_address()}", window)
    uncount(f"two-factor:user:{user.id}", window)


def _record_failure(user, purpose):
    record(
        "auth.two_factor_failed",
        actor=user,
        target_type="user",
        target_id=user.id,
        details={"purpose": purpose},
        ip_address=_client_address(),
    )
    db.session.commit()


# The password step hands over to the code step


def begin_code_step(user, key, remember, next_path):
    """Mark the new session as waiting for its code and send the browser to the code step.

    The session key stays in the signed Flask session until the code is given. Only then does
    Flask-Login's cookie carry it, and the remember-me cookie too if it was chosen.
    """
    user.user_session.two_factor_pending = True
    db.session.commit()
    session[PENDING_KEY] = key
    session[PENDING_REMEMBER] = bool(remember)
    session[PENDING_NEXT] = next_path
    logger.info("password accepted, waiting for two-factor code user_id=%s", user.id)
    return redirect(url_for("auth.signin_two_factor"))


def _clear_pending():
    for name in (PENDING_KEY, PENDING_REMEMBER, PENDING_NEXT):
        session.pop(name, None)


@bp.route("/signin/two-factor", methods=["GET", "POST"])
def signin_two_factor():
    """Second sign-in step: a TOTP or backup code turns the pending session into a signed-in one."""
    if current_user.is_authenticated:
        return redirect(url_for("insights.dashboard"))
    key = session.get(PENDING_KEY)
    user_session = service.find_pending_session(key)
    if user_session is None:
        _clear_pending()
        flash("The sign-in expired or was not started. Sign in with your email and password again.", "error")
        return redirect(url_for("auth.signin"))
    user = user_session.user

    form = TwoFactorCodeForm()
    if form.validate_on_submit():
        _enforce_code_rate_limit(user)
        method = service.verify_second_factor(user, form.code.data)
        if method is None:
            db.session.rollback()
            _record_failure(user, "sign-in")
            form.code.errors.append(service.INVALID_CODE_MESSAGE)
        else:
            _uncount_code_attempt(user)
            user_session.two_factor_pending = False
            record(
                "auth.signed_in",
                actor=user,
                target_type="user",
                target_id=user.id,
                details={"two_factor": method},
                ip_address=_client_address(),
            )
            db.session.commit()
            remember = session.get(PENDING_REMEMBER, False)
            next_path = safe_next(session.get(PENDING_NEXT))
            _clear_pending()
            user.session_key = key
            user.user_session = user_session
            login_user(user, remember=remember)
            if method == "backup":
                flash("Signed in with a backup code. That code no longer works.", "success")
            logger.info("signed in with two-factor user_id=%s method=%s", user.id, method)
            return redirect(next_path or url_for("insights.dashboard"))
    status = 200 if request.method == "GET" else 422
    return render_template("auth/two_factor/signin.html", form=form, cancel_form=EmptyForm()), status


@bp.post("/signin/two-factor/cancel")
def cancel_two_factor_signin():
    """Abandon the pending session, so the password step must be passed again."""
    user_session = service.find_pending_session(session.get(PENDING_KEY))
    if user_session is not None:
        user_session.revoked_at = utcnow()
        db.session.commit()
    _clear_pending()
    return redirect(url_for("auth.signin"))


# Settings


def _render_settings(status=200, code_form=None, errors_for=None):
    """Render the two-factor settings page; `errors_for` names the form that `code_form` belongs to."""
    user = current_user
    org = current_org()
    membership = current_membership()
    secret = None
    qr_svg = None
    if not user.two_factor_enabled:
        secret = service.pending_secret(user)
        db.session.commit()
        qr_svg = service.qr_code_svg(service.provisioning_uri(user, secret))
    forms = {name: TwoFactorCodeForm(formdata=None) for name in ("enable", "regenerate", "disable")}
    if code_form is not None:
        forms[errors_for] = code_form
    return (
        render_template(
            "auth/two_factor/settings.html",
            secret=secret,
            qr_svg=qr_svg,
            forms=forms,
            new_codes=session.pop("new_backup_codes", None),
            unused_codes=service.unused_backup_code_count(user) if user.two_factor_enabled else 0,
            org=org,
            can_manage_org=membership is not None and role_allows(membership.role, "admin"),
            org_form=OrganizationTwoFactorForm(formdata=None, require_two_factor=org.require_two_factor),
            requiring=service.organizations_requiring(user),
        ),
        status,
    )


def _code_action(purpose, action, audit_action, success_message):
    """Run `action(user, code)` for a posted code form; on a wrong code re-render with 4xx."""
    form = TwoFactorCodeForm()
    if not form.validate_on_submit():
        return _render_settings(422, form, purpose)
    _enforce_code_rate_limit(current_user)
    try:
        codes = action(current_user, form.code.data)
    except ServiceError as error:
        db.session.rollback()
        if error.details and error.details.get("code") == "invalid":
            _record_failure(current_user, purpose)
        if error.status == 409:
            # A conflict is about the account's state, not the code, and its form may not be shown.
            flash(error.message, "error")
        else:
            form.code.errors.append(error.message)
        return _render_settings(error.status, form, purpose)

    _uncount_code_attempt(current_user)
    record(
        audit_action, actor=current_user, target_type="user", target_id=current_user.id, ip_address=_client_address()
    )
    db.session.commit()
    if codes:
        # Kept in the signed session cookie for one redirect only; the server stores only hashes.
        session["new_backup_codes"] = codes
    flash(success_message, "success")
    return redirect(url_for("auth.two_factor_settings"))


@bp.get("/settings/two-factor")
@login_required
def two_factor_settings():
    """Enrolment (QR code and secret), backup codes, turning it off, and the organization requirement."""
    return _render_settings()


@bp.post("/settings/two-factor")
@login_required
def enable_two_factor():
    """Turn two-factor on after a correct code from the authenticator app."""
    return _code_action(
        "enable",
        service.enable,
        "auth.two_factor_enabled",
        "Two-factor sign-in is on. Store the backup codes below somewhere safe: they are shown only once.",
    )


@bp.post("/settings/two-factor/backup-codes")
@login_required
def regenerate_backup_codes():
    """Replace all backup codes; the old ones stop working."""
    return _code_action(
        "regenerate",
        service.regenerate_backup_codes,
        "auth.backup_codes_regenerated",
        "New backup codes made; the old ones no longer work. Store these somewhere safe.",
    )


@bp.post("/settings/two-factor/disable")
@login_required
def disable_two_factor():
    """Turn two-factor off after a correct TOTP or backup code."""
    return _code_action(
        "disable",
        service.disable,
        "auth.two_factor_disabled",
        "Two-factor sign-in is off. Signing in now needs only the password.",
    )


@bp.post("/settings/two-factor/organization")
@login_required
@role_required("admin")
def set_organization_two_factor():
    """Require two-factor for every member of the current organization, or lift the requirement."""
    org = current_org()
    form = OrganizationTwoFactorForm()
    if not form.validate_on_submit():
        return _render_settings(400)
    required = bool(form.require_two_factor.data)
    try:
        changed = service.set_organization_requirement(org, required, current_user)
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return _render_settings(error.status)

    if changed:
        record(
            "org.two_factor_required_changed",
            actor=current_user,
            target_type="organization",
            target_id=org.id,
            org_id=org.id,
            details={"require_two_factor": required},
            ip_address=_client_address(),
        )
    db.session.commit()
    state = "now requires" if required else "no longer requires"
    flash(f"{org.name} {state} two-factor sign-in for its members.", "success")
    return redirect(url_for("auth.two_factor_settings"))


# The organization requirement on every other page


@bp.before_app_request
def redirect_members_without_two_factor():
    """Send a member of an organization that requires two-factor to enrolment until they enable it.

    API routes are checked in `api_auth_required`, because only it loads the organization of the key.
    """
    if request.endpoint is None or request.endpoint in _ALWAYS_REACHABLE:
        return None
    if request.blueprint in ("auth", "api"):
        return None
    if not current_user.is_authenticated or current_user.two_factor_enabled:
        return None
    org = current_org()
    if org is None or not org.require_two_factor:
        return None
    flash(f"{org.name} requires two-factor sign-in. Turn it on below to continue.", "error")
    return hx_redirect(url_for("auth.two_factor_settings"))


def api_two_factor_error_message(user, org_id):
    """Return the reason an API call for `org_id` is rejected for lack of two-factor, or None if it may proceed."""
    if user.two_factor_enabled or not service.organization_requires(org_id):
        return None
    return (
        "This organization requires two-factor sign-in. Turn it on at /settings/two-factor, "
        "then send the request again."
    )
