"""Sign-up, sign-in, sign-out and the settings page (sessions and API keys).

The account lifecycle pages (verification, password reset and change, email change, deletion)
are in `app.auth.account`, imported at the end of this module to register them on `bp`.
"""

import logging
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.admin.service import record
from app.auth import service
from app.auth.forms import ApiKeyForm, EmptyForm, SignInForm, SignUpForm
from app.errors import ServiceError
from app.extensions import db, login_manager
from app.htmx import hx_redirect, is_htmx
from app.orgs.access import current_membership, role_allows, role_required
from app.orgs.service import current_org
from app.ratelimit import enforce
from app.timeutil import utcnow

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(session_key):
    user = service.load_session_user(session_key)
    if user is not None:
        g.log_user_id = user.id
    return user


@login_manager.unauthorized_handler
def unauthorized():
    from app import error_response

    if request.path.startswith("/api/"):
        return error_response(401, "unauthorized", "Sign in or send an API key as 'Authorization: Bearer KEY'.")
    target = url_for("auth.signin", next=request.full_path.rstrip("?"))
    if is_htmx():
        # An HTMX request swaps its answer into a fragment; the sign-in page must replace the page.
        target = url_for("auth.signin", next=_htmx_page_path())
    return hx_redirect(target)


def _htmx_page_path():
    """The page the HTMX request came from, if it is on this site, to come back to after sign-in."""
    current_url = request.headers.get("HX-Current-URL", "")
    parts = urlsplit(current_url)
    if parts.netloc and parts.netloc != request.host:
        return "/"
    path = parts.path or "/"
    return path + (f"?{parts.query}" if parts.query else "")


def safe_next(target):
    """Return `target` if it is a path on this site, else None.

    Browsers treat `//host` and `/\\host` as links to another host, so only a single leading slash
    followed by something other than a slash or backslash is accepted.
    """
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ord(character) < 32 for character in target) or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def _client_address():
    return request.remote_addr or ""


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    """Create an account with its personal organization, sign in, and go on to `next` when it is a path here."""
    next_path = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(next_path or url_for("insights.dashboard"))
    form = SignUpForm()
    if form.validate_on_submit():
        enforce(
            f"signup:ip:{_client_address()}",
            current_app.config["SIGNUP_RATE_LIMIT"],
            current_app.config["SIGNUP_RATE_WINDOW_SECONDS"],
            "Too many sign-ups from this address.",
        )
        try:
            user = service.create_user(form.email.data, form.password.data, name=form.name.data or "")
            service.start_session(user, request.user_agent.string, _client_address())
            db.session.commit()
        except ServiceError as error:
            db.session.rollback()
            for field, message in (error.details or {}).items():
                if field in form:
                    form[field].errors.append(message)
            flash(error.message, "error")
        else:
            login_user(user)
            flash("Welcome to Floyo. Import a git history or start the agent to see your patterns.", "success")
            if not account.send_verification(user):
                flash("The verification email could not be sent. Use the resend button to try again.", "error")
            return redirect(next_path or url_for("insights.dashboard"))
    return render_template("auth/signup.html", form=form, next=next_path), 200 if request.method == "GET" else 422


@bp.route("/signin", methods=["GET", "POST"])
def signin():
    """Sign in with email and password; go on to `next` when it is a path on this site."""
    next_path = safe_next(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(next_path or url_for("insights.dashboard"))
    form = SignInForm()
    if form.validate_on_submit():
        limit = current_app.config["SIGNIN_RATE_LIMIT"]
        window = current_app.config["SIGNIN_RATE_WINDOW_SECONDS"]
        message = "Too many sign-in attempts."
        enforce(f"signin:ip:{_client_address()}", limit * 5, window, message)
        enforce(f"signin:email:{service.normalize_email(form.email.data)}", limit, window, message)

        user = service.authenticate(form.email.data, form.password.data)
        if user is None or not user.active:
            reason = "wrong email or password" if user is None else "account disabled"
            # The email as typed, cut to the column's length; the password is never recorded.
            typed_email = service.normalize_email(form.email.data)[:254]
            record(
                "auth.sign_in_failed", details={"email": typed_email, "reason": reason}, ip_address=_client_address()
            )
            db.session.commit()
            logger.info("sign-in failed address=%s reason=%s", _client_address(), reason)
            if user is None:
                flash("The email or password is wrong.", "error")
            else:
                flash("This account is disabled. Contact the administrator of this Floyo installation.", "error")
        else:
            key = service.start_session(user, request.user_agent.string, _client_address())
            if user.two_factor_enabled:
                return two_factor.begin_code_step(user, key, form.remember.data, next_path)
            record("auth.signed_in", actor=user, target_type="user", target_id=user.id, ip_address=_client_address())
            db.session.commit()
            login_user(user, remember=form.remember.data)
            logger.info("signed in user_id=%s", user.id)
            return redirect(next_path or url_for("insights.dashboard"))
    status = 200 if request.method == "GET" else 401
    return render_template("auth/signin.html", form=form, next=next_path), status


@bp.post("/signout")
@login_required
def signout():
    """End the session on the server too, so a copied cookie stops working."""
    if current_user.user_session is not None:
        current_user.user_session.revoked_at = utcnow()
        db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "success")
    return hx_redirect(url_for("auth.signin"))


@bp.get("/settings")
@login_required
@role_required("viewer")
def settings():
    """Sessions and API keys of the signed-in user; admins also see every key of the organization."""
    org = current_org()
    role = current_membership().role
    manages_keys = role_allows(role, "admin")
    form = ApiKeyForm()
    form.limit_scopes_to(role)
    return render_template(
        "auth/settings.html",
        sessions=service.list_sessions(current_user),
        api_keys=service.list_api_keys(current_user, org.id, all_users=manages_keys),
        manages_keys=manages_keys,
        key_form=form,
        button_form=EmptyForm(),
        new_key=session.pop("new_api_key", None),
        org=org,
    )


@bp.post("/settings/api-keys")
@login_required
@role_required("viewer")
def create_api_key():
    """Create an API key; its value is shown once on the next page and never again."""
    # Every scope is a valid choice here, so the service rejects one above the role with a message
    # that names the role.
    form = ApiKeyForm()
    if not form.validate_on_submit():
        flash(form.first_error(), "error")
        return redirect(url_for("auth.settings"))

    try:
        raw, api_key = service.create_api_key(
            current_user,
            current_org().id,
            form.name.data,
            scopes=form.chosen_scopes(request.form, current_membership().role),
            expires_in_days=form.expires_in_days_value(),
            ip_address=_client_address(),
        )
    except ServiceError as error:
        db.session.rollback()
        flash(error.message, "error")
        return redirect(url_for("auth.settings"))
    db.session.commit()

    # Kept in the signed session cookie for one redirect only; the server stores just its hash.
    session["new_api_key"] = {"name": api_key.name, "key": raw}
    flash("API key created. Copy it now: it will not be shown again.", "success")
    return redirect(url_for("auth.settings"))


@bp.post("/settings/api-keys/<int:key_id>/revoke")
@login_required
@role_required("viewer")
def revoke_api_key(key_id):
    """Revoke one of the user's API keys at once; admins may revoke any key of the organization."""
    any_user = role_allows(current_membership().role, "admin")
    service.revoke_api_key(current_user, current_org().id, key_id, any_user=any_user, ip_address=_client_address())
    db.session.commit()
    flash("API key revoked.", "success")
    return hx_redirect(url_for("auth.settings"))


@bp.post("/settings/sessions/<int:session_id>/revoke")
@login_required
def revoke_session(session_id):
    """Sign out one browser session of the user."""
    service.revoke_session(current_user, session_id)
    record(
        "auth.session_revoked",
        actor=current_user,
        target_type="user_session",
        target_id=session_id,
        ip_address=_client_address(),
    )
    db.session.commit()
    flash("Session signed out.", "success")
    return hx_redirect(url_for("auth.settings"))


@bp.post("/settings/sessions/revoke-others")
@login_required
def revoke_other_sessions():
    """Sign out every other browser session of the user."""
    count = service.revoke_other_sessions(current_user, current_user.user_session.id)
    record(
        "auth.session_revoked",
        actor=current_user,
        target_type="user",
        target_id=current_user.id,
        details={"other_sessions": count},
        ip_address=_client_address(),
    )
    db.session.commit()
    flash(f"Signed out {count} other session{'s' if count != 1 else ''}.", "success")
    return hx_redirect(url_for("auth.settings"))


# Imported last: these modules register their routes on `bp`, defined above.
from app.auth import account, two_factor  # noqa: E402
